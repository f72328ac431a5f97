"""Glass to ear in a real browser, through the whole product: LL-HLS vs plain HLS.

Method: a click talker (this script with ``--click-talker``: a real aiortc peer
sending Opus) joins the embedded room server (``mixer-ext room-server``); the
worker (``mixer-ext run``, as it ships: jitter buffer, mix, AAC, HLS served by
its own HTTP endpoint) mixes the room; headless Chromium opens the worker's own
player page (``/?engine=hlsjs&lowLatency=1|0``, so hls.js runs with the
player's tuning from ``player_demo/hls-config.js``), taps the page's media
element with Web Audio and stamps each click onset at its estimated output
time (``AudioContext.getOutputTimestamp``, output latency included).  The
talker sends silence with a 10 ms, 2 kHz click at irregular intervals
(0.8-1.4 s, seeded) and stamps ``time.time()`` when the frame holding it is
handed to aiortc's encoder; onsets are matched to clicks by that pattern.
LL-HLS: the worker's defaults (0.192 s parts, 1.92 s segments); plain HLS:
``MIXER_HLS_LOW_LATENCY=false`` with 1 s segments and the page's
``?lowLatency=0`` (hls.js holds back 3 target durations).  Both modes run one
after the other in one run, each with a fresh worker and talker.

What it cannot see: the speaker's capture latency (a microphone hands a 20 ms
frame over at its end: up to 20 ms more), network RTT (all on loopback here),
and the output device's real latency beyond what Chromium reports.  The
mixer's own share (frame arrival -> AAC packet) is bench/latency.py's (a).
Usage: python bench/glass_to_ear.py [--seconds 60]   (G2E_DUMP=DIR keeps the raw clicks and onsets)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

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


# --- one mode -------------------------------------------------------------------------


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


async def run_mode(room_url: str, tmp: Path, ll: bool, seconds: float) -> dict[str, Any]:
    room = "g2e-ll" if ll else "g2e-plain"
    http_port = free_port()
    env = {
        **os.environ,
        "MIXER_ROOM_URL": room_url,
        "MIXER_ROOM_SECRET": SECRET,
        "MIXER_LOG_LEVEL": "WARNING",
        "MIXER_HLS_DIR": str(tmp / room),
        "MIXER_HTTP_HOST": "127.0.0.1",
        "MIXER_HTTP_PORT": str(http_port),
        "MIXER_HLS_LOW_LATENCY": "true" if ll else "false",
        **({} if ll else {"MIXER_HLS_SEGMENT_DURATION": "1.0"}),
    }
    context = {"room": {"name": room}, "outputs": ["hls:live"], "maxParticipantDuration": 3600}
    procs: list[subprocess.Popen[bytes]] = []
    sent: list[float] = []
    log = open(tmp / f"{room}-worker.log", "wb")  # noqa: SIM115, ASYNC230 - closed below
    try:
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
        base = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(_ready, base + "/readyz"):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not get ready (see {log.name})")
            await asyncio.sleep(0.3)
        await asyncio.sleep(3.0)  # a few segments in the playlist, as for a listener joining
        spec = {"url": f"{base}/?engine=hlsjs&lowLatency={int(ll)}", "playMs": int(seconds * 1000)}
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
        for p in reversed(procs):
            stop_process(p)
        log.close()


async def run(seconds: float) -> None:
    print(f"machine: {benchlib.machine()}")
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
        rows: list[tuple[str, list[float]]] = []
        try:
            benchlib.wait_for_port(port)
            for label, ll in (
                ("LL-HLS (0.192 s parts)", True),
                ("plain HLS (1 s segments)", False),
            ):
                r = await run_mode(room_url, tmp, ll, seconds)
                lat, rep = r["latency"], r["report"]
                if rep.get("problem") or not lat:
                    why = f"{rep.get('problem')}, engine {rep.get('engine')}"
                    print(f"{label}: no measurement ({why})")
                    continue
                rows.append((label, lat))
                hl = rep.get("latency") or [float("nan")]
                print(
                    f"{label:26s} clicks heard {len(lat):3d}/{len(r['sent']):3d}  "
                    f"p50 {percentile(lat, 50):.3f} s  p99 {percentile(lat, 99):.3f} s  "
                    f"max {max(lat):.3f} s  stalls {rep['stalls']}  engine {rep['engine']}  "
                    f"hls.js latency median {float(np.median(hl)):.2f} s"
                )
        finally:
            stop_process(server)
            room_log.close()
    if len(rows) == 2:
        ratio = percentile(rows[1][1], 50) / percentile(rows[0][1], 50)
        print(f"plain / LL-HLS p50 ratio: {ratio:.2f}")
    print(f"end: {benchlib.load()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="listening time per mode")
    ap.add_argument("--click-talker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--room", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=14, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.click_talker:
        asyncio.run(run_click_talker(args.url, args.room, args.seed))
        return 0
    asyncio.run(run(args.seconds))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
