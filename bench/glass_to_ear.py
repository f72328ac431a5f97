"""Glass to ear in a real browser: the users' path, the worker's own endpoint, plain HLS.

Method: a click talker (this script with ``--click-talker``: a real aiortc peer
sending Opus) joins the embedded room server (``mixer-ext room-server``) and sends
silence with a 10 ms, 2 kHz click at irregular intervals (0.8-1.4 s, seeded),
stamping ``time.time()`` when the frame holding it is handed to aiortc's encoder.
Headless Chromium opens a player page, taps the element that plays with Web Audio
and stamps each click onset at its estimated output time
(``AudioContext.getOutputTimestamp``, output latency included); onsets are matched
to clicks by their irregular pattern.  Three paths, one after the other in one run,
each with a fresh worker and talker: (1) the users' path: ``mixer-ext api`` as a
backend uses it through the official ``twilio`` client (PlayerStreamer ->
MediaProcessor -> PlaybackGrant -> an access token with the ``player`` grant), the
API launching the worker, and the listener app ``player_demo/examples/quickstart.html``
(the Live Player SDK-compatible player) playing the grant through the API's origin
(session tokens in every URI, the LL-HLS origin behind the playback gate); (2) the
worker's own endpoint (``mixer-ext run``, its own player page, nothing told it the
stream is LL-HLS: the page learns it from the playlist); (3) plain HLS
(``MIXER_HLS_LOW_LATENCY=false``, 1 s segments, the page's ``?lowLatency=0``).
LL-HLS: the worker's defaults (0.192 s parts, 1.92 s segments).  Stalls: the
playing element's ``waiting`` events after it first played, per minute listened.

What it cannot see: the speaker's capture latency (a microphone hands a 20 ms
frame over at its end: up to 20 ms more), network RTT (all on loopback here),
and the output device's real latency beyond what Chromium reports.  The
mixer's own share (frame arrival -> AAC packet) is bench/latency.py's (a).
Usage: python bench/glass_to_ear.py [--seconds 60] [--paths users,worker,plain]
(G2E_DUMP=DIR keeps the raw clicks and onsets)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import benchlib
import numpy as np
from benchlib import free_port, percentile, stop_process

ROOT = benchlib.ROOT
DRIVER = ROOT / "bench" / "llhls_browser.mjs"
SECRET = "bench-g2e-secret-not-for-production-0123456789"
RATE = 48000
FRAME = 960  # the talker's 20 ms frames


# --- click talker ---------------------------------------------------------------------


async def run_click_talker(url: str, room: str, seed: int) -> None:
    """``--click-talker``: joins ``room``, prints ``CLICK <k> <time.time()>`` per click."""
    from mixer_ext.roomserver.tokens import mint_token
    from mixer_ext.sim.talker import Talker
    from mixer_ext.sim.tracks import PacedAudioTrack

    rng = random.Random(seed)
    click = 16384 * np.sin(2 * np.pi * 2000 * np.arange(480) / RATE)

    class ClickTrack(PacedAudioTrack):
        next_click = 50  # the first after 1 s

        def samples(self, n: int) -> np.ndarray:
            out = np.zeros(FRAME)
            if n == self.next_click:
                out[:480] = click
                print("CLICK", n, repr(time.time()), flush=True)
                self.next_click += round(rng.uniform(0.8, 1.4) * RATE / FRAME)
            return out

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    token = mint_token(SECRET, room, "clicker", 3600)
    talker = Talker(url, room, "clicker", token, ClickTrack())
    task = asyncio.create_task(talker.run(), name="click-talker")
    await stop.wait()
    task.cancel()
    await asyncio.wait({task}, timeout=10)


# --- matching -------------------------------------------------------------------------


def match(sent: list[float], heard_ms: list[float]) -> list[float]:
    """Latencies (s): each onset against the click the irregular pattern says it is.

    The latency is the mode of every (onset - click) difference between 0 and 20 s in
    25 ms bins: the right pairing puts every heard click in one bin, a wrong one
    scatters them (the gaps are irregular), and a click lost on the way changes
    nothing.  Each onset is then paired with the click nearest that latency.
    """
    heard = [h / 1000 for h in heard_ms]
    diffs = np.array([h - s for h in heard for s in sent if 0 < h - s < 20])
    if len(diffs) == 0:
        return []
    bins = np.floor(diffs / 0.025).astype(int)
    values, counts = np.unique(bins, return_counts=True)
    mode = values[np.argmax(counts)]
    near = diffs[(bins >= mode - 1) & (bins <= mode + 1)]
    coarse = float(np.median(near))
    out = []
    for h in heard:
        s = min(sent, key=lambda s: abs(h - s - coarse))
        if abs(h - s - coarse) < 0.25:
            out.append(h - s)
    return out


# --- one path -------------------------------------------------------------------------


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


async def _wait(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while not await asyncio.to_thread(_ready, url):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not get ready")
        await asyncio.sleep(0.3)


ACCOUNT = "AC" + "a" * 32
AUTH_TOKEN = "bench-g2e-auth-token"


def wait_for_stream(playback_url: str, timeout: float = 60) -> None:
    """Until the grant's media playlist exists (what a backend's ``media-processor-started``
    callback would wait for): the multivariant playlist, then the URI it names."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(playback_url, timeout=5) as resp:
            lines = resp.read().decode().splitlines()
        media_url = urllib.parse.urljoin(
            playback_url, [x for x in lines if x and not x.startswith("#")][-1]
        )
        if _ready(media_url):
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the stream's playlist did not appear")
        time.sleep(0.3)


class UsersPath:
    """A backend's calls on ``mixer-ext api`` with the official twilio client."""

    def __init__(self, api: str, room: str) -> None:
        from twilio.rest import Client

        for var in ("TWILIO_REGION", "TWILIO_EDGE"):  # they would rewrite the host
            os.environ.pop(var, None)
        self.client = Client(ACCOUNT, AUTH_TOKEN)
        self.client.media.base_url = api
        self.api, self.room = api, room
        self.processor: str | None = None

    def start(self) -> str:
        """PlayerStreamer -> MediaProcessor -> PlaybackGrant -> token: the app's page URL."""
        from twilio.jwt.access_token import AccessToken
        from twilio.jwt.access_token.grants import PlaybackGrant

        media = self.client.media.v1
        ps = media.player_streamer.create(video=False)
        context = {"room": {"name": self.room}, "outputs": [ps.sid]}
        mp = media.media_processor.create(
            extension="audio-mixer-v1", extension_context=json.dumps(context)
        )
        self.processor = mp.sid
        deadline = time.monotonic() + 60
        while media.media_processor(mp.sid).fetch().status != "started":
            if time.monotonic() > deadline:
                raise RuntimeError("the MediaProcessor did not start")
            time.sleep(0.3)
        grant = media.player_streamer(ps.sid).playback_grant().create(ttl=60).grant
        wait_for_stream(grant["playbackUrl"])
        token = AccessToken(ACCOUNT, "SK" + "5" * 32, "bench-signing-secret" * 2, identity="ear")
        token.add_grant(PlaybackGrant(grant=grant))
        return f"{self.api}/player/examples/quickstart.html?accessToken={quote(token.to_jwt())}"

    def stop(self) -> None:
        if self.processor:
            with contextlib.suppress(Exception):
                self.client.media.v1.media_processor(self.processor).update(status="ended")


_RUNS = itertools.count()


async def run_path(
    room_url: str, tmp: Path, path: str, seconds: float, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    room = f"g2e-{path}-{next(_RUNS)}"
    port = free_port()
    env = {
        **os.environ,
        "MIXER_ROOM_URL": room_url,
        "MIXER_ROOM_SECRET": SECRET,
        "MIXER_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    procs: list[subprocess.Popen[bytes]] = []
    sent: list[float] = []
    log = open(tmp / f"{room}.log", "wb")  # noqa: SIM115, ASYNC230 - closed below
    users: UsersPath | None = None
    try:
        base = f"http://127.0.0.1:{port}"
        if path == "users":
            env.update(
                MIXER_ACCOUNT_SID=ACCOUNT,
                MIXER_AUTH_TOKEN=AUTH_TOKEN,
                MIXER_API_DATA_DIR=str(tmp / "api-data"),
            )
            api = subprocess.Popen(  # noqa: ASYNC220 - start-up, nothing is measured yet
                [*benchlib.mixer_cmd(), "api", "--host", "127.0.0.1", "--port", str(port)],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            procs.append(api)
            await _wait(base + "/healthz", api, f"mixer-ext api (see {log.name})")
            users = UsersPath(base, room)
        else:
            ll = path == "worker"
            env.update(
                MIXER_HLS_DIR=str(tmp / room),
                MIXER_HTTP_HOST="127.0.0.1",
                MIXER_HTTP_PORT=str(port),
                MIXER_HLS_LOW_LATENCY="true" if ll else "false",
                **({} if ll else {"MIXER_HLS_SEGMENT_DURATION": "1.0"}),
            )
            context = {"room": {"name": room}, "outputs": ["hls:live"]}
            worker = subprocess.Popen(  # noqa: ASYNC220 - start-up, nothing is measured yet
                [*benchlib.mixer_cmd(), "run", "--context", json.dumps(context)],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            procs.append(worker)
        talker = subprocess.Popen(  # noqa: ASYNC220 - a fork: ~ms
            [sys.executable, __file__, "--click-talker", "--url", room_url, "--room", room],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(talker)

        async def read_clicks() -> None:
            assert talker.stdout is not None
            while line := await asyncio.to_thread(talker.stdout.readline):
                parts = line.decode().split()
                if parts and parts[0] == "CLICK":
                    sent.append(float(parts[2]))

        reader = asyncio.create_task(read_clicks(), name="g2e-click-reader")
        if users is not None:
            page = await asyncio.to_thread(users.start)
        else:
            await _wait(base + "/readyz", procs[0], f"the worker (see {log.name})")
            # the worker's own page learns LL-HLS from the playlist (no ?lowLatency)
            page = f"{base}/?engine=hlsjs" + ("" if path == "worker" else "&lowLatency=0")
        await asyncio.sleep(3.0)  # a few segments in the playlist, as for a listener joining
        spec = {"url": page, "playMs": int(seconds * 1000)}
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(DRIVER),
            json.dumps(spec),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "NODE_PATH": str(ROOT / "node_modules")},
        )
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + 60)
        stop_process(talker)
        await asyncio.wait({reader}, timeout=5)
        report = json.loads(out.decode().strip().splitlines()[-1])
        if os.environ.get("G2E_DUMP"):
            dump = Path(os.environ["G2E_DUMP"], f"{room}.json")
            await asyncio.to_thread(dump.write_text, json.dumps({"sent": sent, "report": report}))
        return {"report": report, "latency": match(sent, report.get("onsets", [])), "sent": sent}
    finally:
        if users is not None:
            await asyncio.to_thread(users.stop)
        for p in reversed(procs):
            stop_process(p)
        log.close()


LABELS = {
    "users": "users' path: API + SDK player",
    "worker": "worker's own endpoint",
    "plain": "plain HLS (1 s segments)",
}


def parse_sweep(text: str) -> list[tuple[float, float]]:
    """``"0.2/0.6,0.1/0.3"`` -> [(part target, part hold-back), ...] (seconds)."""
    out = []
    for item in filter(None, text.split(",")):
        part, _, hold = item.partition("/")
        try:
            out.append((float(part), float(hold)))
        except ValueError:
            raise ValueError(f"--sweep: {item!r} is not PART/HOLD_BACK (seconds)") from None
    return out


async def run(
    seconds: float, paths: list[str], sweep: list[tuple[float, float]], before: str | None
) -> None:
    print(f"machine: {benchlib.machine()}")
    start_load = os.getloadavg()[0]
    print(f"start: {benchlib.load()}")
    print("method: " + " ".join(__doc__.split("\n\n")[1].split()))
    with tempfile.TemporaryDirectory(prefix="bench-g2e-") as tmpdir:
        tmp = Path(tmpdir)
        port = free_port()
        room_url = f"ws://127.0.0.1:{port}"
        env = {**os.environ, "MIXER_ROOM_SECRET": SECRET, "MIXER_LOG_LEVEL": "WARNING"}
        room_log = open(tmp / "room.log", "wb")  # noqa: SIM115, ASYNC230 - closed below
        server = subprocess.Popen(  # noqa: ASYNC220 - start-up
            [*benchlib.mixer_cmd(), "room-server", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=ROOT, stdout=room_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        p50: dict[str, float] = {}
        try:
            benchlib.wait_for_port(port)
            runs: list[tuple[str, str, dict[str, str]]] = [(p, LABELS[p], {}) for p in paths]
            if before:  # the same users' path with another player (e.g. main's, built)
                runs.append(("users", "users' path, player from --before-player",
                             {"MIXER_PLAYER_DIR": before}))  # fmt: skip
            for part, hold in sweep:  # the users' path, parts and hold-back set on the worker
                env = {"MIXER_HLS_PART_TARGET": str(part), "MIXER_HLS_PART_HOLD_BACK": str(hold)}
                runs.append(("users", f"users' path, part {part:g} s / hold {hold:g} s", env))
            for path, label, extra in runs:
                try:
                    r = await run_path(room_url, tmp, path, seconds, extra)
                except (RuntimeError, ImportError) as exc:
                    print(f"{label}: FAILED: {exc}")
                    continue
                lat, rep = r["latency"], r["report"]
                if rep.get("problem") or not lat:
                    why = f"{rep.get('problem')}, engine {rep.get('engine')}"
                    print(f"{label}: FAILED: no measurement ({why})")
                    continue
                p50.setdefault(path, percentile(lat, 50))
                hl = rep.get("latency") or [float("nan")]
                print(
                    f"{label:40s} clicks heard {len(lat):3d}/{len(r['sent']):3d}  "
                    f"p50 {percentile(lat, 50):.3f} s  p99 {percentile(lat, 99):.3f} s  "
                    f"max {max(lat):.3f} s  stalls {rep['stalls']} "
                    f"({rep['stalls'] / (seconds / 60):.2f}/min)  engine {rep['engine']}  "
                    f"player latency median {float(np.median(hl)):.2f} s  "
                    f"[{benchlib.load()}]"
                )
        finally:
            stop_process(server)
            room_log.close()
    if "users" in p50 and "worker" in p50:
        d = p50["users"] - p50["worker"]
        print(f"users' path - worker's endpoint, p50: {d:+.3f} s (target within 0.1 s)")
    if "plain" in p50 and "worker" in p50:
        print(f"plain / LL-HLS p50 ratio: {p50['plain'] / p50['worker']:.2f}")
    end_load = os.getloadavg()[0]
    busy = max(start_load, end_load) > 0.75 * (os.cpu_count() or 1)
    print(f"end: {benchlib.load()}" + ("  (figures taken under others' load)" if busy else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="listening time per path")
    ap.add_argument(
        "--paths", default="users,worker,plain", help="comma-separated: users, worker, plain"
    )
    ap.add_argument(
        "--sweep",
        default="",
        help="then the users' path once per PART/HOLD_BACK pair (seconds), e.g. 0.2/0.6,0.1/0.3",
    )
    ap.add_argument(
        "--before-player",
        metavar="DIR",
        help="then the users' path once more with the player_demo/ in DIR (built with its"
        " vendor/), e.g. an older checkout's, for a before/after in one run",
    )
    ap.add_argument("--click-talker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--room", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=14, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.click_talker:
        asyncio.run(run_click_talker(args.url, args.room, args.seed))
        return 0
    paths = [p for p in args.paths.split(",") if p]
    unknown = sorted(set(paths) - set(LABELS))
    if unknown:
        ap.error(f"--paths: unknown {', '.join(unknown)} (known: {', '.join(LABELS)})")
    try:
        sweep = parse_sweep(args.sweep)
    except ValueError as exc:
        ap.error(str(exc))
    asyncio.run(run(args.seconds, paths, sweep, args.before_player))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
