"""Capacity: the mixer's CPU for N participants, side by side with the alternatives, in one run.

Method, per N (default 20, 50, 100) and per receiver, a fresh set of processes:

* a room: ``mixer-ext room-server`` on 127.0.0.1 (``--backend embedded``; it forwards
  the encoded Opus), or Debian's Janus from a generated config on the machine's
  interface address (``--backend janus``);
* the receiver, one of
  - ``mixer``: ``mixer-ext run`` of this checkout (one HLS output, ``/metrics``);
  - ``uvloop``: the same on uvloop (``MIXER_EVENT_LOOP=uvloop``, issue 13.2);
  - ``before``: the same command run from a checkout of ``--before REV`` (default
    5a50186, the main before issue 13.1: stock aiortc receive path, per-track decoder
    threads and reader tasks), extracted with ``git archive`` into ``.cache/`` and run
    with the same interpreter (``PYTHONPATH``);
  - ``floor``: a stock aiortc receiver of the same streams (this script with
    ``--floor``: the connector without the RTP tap, ``recv()`` on every track, i.e.
    aiortc's jitter buffer, decoder thread and queue; no mixing, no encoding, no
    outputs);
* N talkers that send pre-encoded Opus (``mixer_ext.sim.preencoded``: a distinct tone
  each, encoded once, replayed), ``--per-process`` of them per Python process, so the
  load generator is not the bottleneck: on the embedded room each is an aiortc
  WebRTC publisher (under 1 % of a core each); on Janus each is by default a Janus
  *remote publisher* fed plain RTP from one socket per process
  (``mixer_ext.sim.janus_remote``; ``--janus-talkers webrtc`` for WebRTC publishers),
  which Janus announces and forwards over WebRTC like any other publisher.

Once the receiver has all N inputs and ``settle`` seconds have passed, the run is
measured for ``--seconds``: CPU seconds of each process from ``/proc/<pid>/stat``
(utime + stime, all threads) and the worker's ``/metrics`` at both ends.  A mixer
row *holds* when over the window at most 1 % of the ticks ran more than 10 ms late
(tick p99 < 10 ms, read at the 10 ms bucket bound), late frames are under 0.5 % of
the frames expected, and the worker used under one core.  The room server's CPU is
printed per forwarded stream (N publishers, each forwarded to the one receiver).

    .venv/bin/python bench/capacity.py [--steps 20,50,100,250] [--seconds 30]
    .venv/bin/python bench/capacity.py --backend janus --steps 20,50
    .venv/bin/python bench/capacity.py --quick        # 3 talkers, 5 s, mixer + floor
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib
from benchlib import Histogram, Scrape, cpu_seconds, free_port, scrape, stop_process

SECRET = "bench-secret-not-for-production-0123456789"
ROOM = "1234"  # numeric: a Janus VideoRoom id, and a valid embedded room name
BOT = "audio-mixer-v1"
TICKS_PER_S = 50
RECEIVERS = ("mixer", "uvloop", "before", "floor")


# --- child roles --------------------------------------------------------------------


def talks(i: int, percent: int) -> bool:
    """Whether talker ``i`` talks when ``percent`` % do: every (100 / percent)-th one."""
    return percent >= 100 or (percent > 0 and i % round(100 / percent) == 0)


async def run_talkers(args: argparse.Namespace) -> None:
    """``--talkers``: ``count`` talkers from index ``first``; prints JOINED, runs until SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[Any]] = []
    leave: list[Any] = []
    from mixer_ext.sim.preencoded import PreEncodedOpusTrack, encode_tone

    if args.backend == "janus" and args.janus_talkers == "rtp":
        from urllib.parse import urlsplit

        from mixer_ext.sim.janus_remote import RemotePublishers
        from mixer_ext.testing.janus import ROOM_SECRET

        remote = RemotePublishers(args.url, ROOM, ROOM_SECRET)
        await remote.open()
        host = urlsplit(args.url).hostname or "127.0.0.1"
        for i in range(args.first, args.first + args.count):
            tone = encode_tone(200.0 + 10.0 * i, 0.1)
            await remote.add(f"talker{i:03d}", tone, host, dtx=not talks(i, args.talking))
        remote.start()
        leave.append(remote.close)
    for i in range(args.first, args.first + args.count):
        if args.backend == "janus" and args.janus_talkers == "rtp":
            break
        identity = f"talker{i:03d}"
        track = PreEncodedOpusTrack(encode_tone(200.0 + 10.0 * i, 0.1))
        if args.backend == "janus":
            from mixer_ext.sim.janus_publisher import JanusPublisher

            pub = JanusPublisher(args.url, ROOM, identity, 0.0, track=track)
            await pub.join()
            await pub.publish()
            leave.append(pub.leave)
        else:
            from mixer_ext.connectors.embedded import RoomClient
            from mixer_ext.roomserver.tokens import mint_token

            client = RoomClient(
                args.url,
                ROOM,
                identity,
                mint_token(SECRET, ROOM, identity, 3600),
                auto_subscribe=False,
            )
            # pre-encoded packets go straight to aiortc's sender (which only packetizes);
            # RoomClient's MutingTrack wrapper passes decoded frames only
            client._publish = track  # type: ignore[assignment]
            await client.connect()
            leave.append(client.disconnect)
    print("JOINED", flush=True)
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.wait(tasks, timeout=10) if tasks else None
    for fn in leave:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(fn(), 5)


async def run_floor(args: argparse.Namespace) -> None:
    """``--floor``: subscribe like the worker, ``recv()`` every track, mix nothing.

    Prints ``TRACKS n`` as tracks arrive and ``FRAMES n`` (frames received
    so far, all tracks) every 0.5 s, until SIGTERM.
    """
    from mixer_ext.connectors.base import TrackSubscribed
    from mixer_ext.connectors.factory import make_connector
    from mixer_ext.settings import load_settings

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    connector = make_connector(load_settings(), ROOM, BOT, tap=False)  # stock aiortc
    frames = 0
    readers: list[asyncio.Task[None]] = []

    async def read(track: Any) -> None:
        nonlocal frames
        with contextlib.suppress(Exception):
            while True:
                await track.recv()
                frames += 1

    async def pump() -> None:
        async for event in connector.events():
            if isinstance(event, TrackSubscribed):
                readers.append(asyncio.create_task(read(event.track), name="floor-reader"))
                print("TRACKS", len(readers), flush=True)

    await connector.connect()
    pumper = asyncio.create_task(pump(), name="floor-events")
    while not stop.is_set():
        print("FRAMES", frames, flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    for t in [*readers, pumper]:
        t.cancel()
    await asyncio.wait([*readers, pumper], timeout=5)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connector.disconnect(), 5)


# --- the measurement ----------------------------------------------------------------


@dataclass
class Row:
    backend: str
    receiver: str  # "mixer", "uvloop", "before" or "floor"
    n: int
    seconds: float
    cpu: float  # receiver CPU seconds over the window
    talkers_cpu: float
    room_cpu: float
    lateness: Histogram | None = None
    late: float = 0.0
    concealed: float = 0.0
    lost: float = 0.0
    frames: float = 0.0  # floor: frames received
    load_before: float = 0.0
    load_after: float = 0.0
    error: str = ""

    @property
    def expected_frames(self) -> float:
        return self.n * self.seconds * TICKS_PER_S

    @property
    def held(self) -> bool:
        if self.error:
            return False
        if self.receiver == "floor":
            return self.frames >= 0.99 * self.expected_frames
        assert self.lateness is not None
        return (
            self.lateness.fraction_above(0.01) <= 0.01
            and self.late < 0.005 * self.expected_frames
            and self.cpu < self.seconds  # under one core
        )

    def line(self) -> str:
        pct = 100 * self.cpu / self.seconds
        per = pct / self.n
        tal = 100 * self.talkers_cpu / self.seconds
        room = 100 * self.room_cpu / self.seconds
        head = f"{self.backend:>8} {self.receiver:>6} {self.n:>4}"
        if self.error:
            return f"{head}  FAILED: {self.error}"
        cpu = f"{pct:>7.1f}% {per:>6.2f}% {tal:>8.1f}% {room:>7.1f}% {room / self.n:>6.2f}%"
        load = f"{self.load_before:>5.2f}->{self.load_after:<5.2f}"
        if self.receiver == "floor":
            got = self.frames / self.expected_frames
            return f"{head} {cpu} {'-':>8} {'-':>8} {'recv ' + format(got, '.1%'):>22} {load}  -"
        assert self.lateness is not None
        p50 = self.lateness.quantile(0.5) * 1e3
        p99 = self.lateness.quantile(0.99) * 1e3
        exp = self.expected_frames
        counters = f"{self.late / exp:>6.2%} {self.concealed / exp:>6.2%} {self.lost / exp:>6.2%}"
        verdict = "held" if self.held else "FAILED"
        return f"{head} {cpu} {p50:>6.2f}ms {p99:>6.2f}ms {counters} {load}  {verdict}"


HEADER = (
    f"{'backend':>8} {'recv':>6} {'N':>4} {'CPU':>8} {'per N':>7} {'talkers':>9} {'room':>8} "
    f"{'room/N':>7} "
    f"{'tick p50':>8} {'tick p99':>8} {'late':>6} {'concl':>6} {'lost':>6} {'load':>11}  verdict"
)


class LineReader:
    """Collects a child's stdout lines in a thread (the child never blocks on a full pipe)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._run, args=(proc,), daemon=True)
        self._thread.start()

    def _run(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.lines.append(raw.decode(errors="replace").strip())


def _spawn(
    cmd: list[str], env: dict[str, str], log: Path | None, errors: Path | None = None
) -> subprocess.Popen[bytes]:
    """``log``: stdout and stderr to a file; else stdout piped, stderr to ``errors`` or nowhere."""
    out: Any = open(log, "wb") if log else subprocess.PIPE  # noqa: SIM115 - the child owns it
    err: Any = subprocess.STDOUT if log else open(errors, "wb") if errors else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        cmd, env={**os.environ, **env}, cwd=benchlib.ROOT, stdout=out, stderr=err,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _last_error(path: Path) -> str:
    """The last traceback line (or last line) of a child's log, for a failed row."""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if "Error" in ln or "Exception" in ln]
    return (errors or lines or [""])[-1].strip()[:160]


def before_checkout(rev: str) -> Path:
    """This repository at ``rev``, extracted once into ``.cache/before-<rev>`` (git archive)."""
    dest = benchlib.ROOT / ".cache" / f"before-{rev}"
    if not (dest / "mixer_ext" / "__init__.py").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(benchlib.ROOT), "archive", rev, "mixer_ext"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def measure(
    backend: str,
    receiver: str,
    n: int,
    seconds: float,
    per_process: int,
    settle: float = 5.0,
    before: Path | None = None,
    profile: Path | None = None,
    janus_talkers: str = "rtp",
    talking: int = 100,
) -> Row:
    """One fresh room + receiver + N talkers; the window starts once all N are in."""
    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as tmpdir:
        tmp = Path(tmpdir)
        procs: list[subprocess.Popen[bytes]] = []
        janus: Any = None
        try:
            env = {"MIXER_LOG_LEVEL": "WARNING", "MIXER_ROOM_SECRET": SECRET}
            if backend == "janus":
                from mixer_ext.testing.janus import room_config, start_janus

                janus = start_janus(
                    tmp, rooms=room_config(int(ROOM), publishers=n + 10), rtp_ports=2 * n + 100
                )
                url = janus.url
                room_pid = janus.process.pid
                env |= {"MIXER_ROOM_BACKEND": "janus", "MIXER_JANUS_URL": url}
            else:
                port = free_port()
                url = f"ws://127.0.0.1:{port}"
                env |= {
                    "MIXER_ROOM_URL": url,
                    "MIXER_ROOM_MAX_PARTICIPANTS": str(n + 10),
                    # every talker connects from 127.0.0.1 (the default cap is 128)
                    "MIXER_ROOM_MAX_CONNECTIONS_PER_ADDRESS": str(n + 10),
                }
                server = _spawn(
                    [
                        *benchlib.mixer_cmd(),
                        "room-server",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                    ],
                    env,
                    tmp / "room.log",
                )
                procs.append(server)
                benchlib.wait_for_port(port)
                room_pid = server.pid
            metrics_port = free_port()
            floor_out: LineReader | None = None
            if receiver != "floor":
                context = {
                    "room": {"name": ROOM},
                    "outputs": ["hls:bench"],
                    "maxParticipantDuration": 3600,
                }
                worker_env = env | {
                    "MIXER_METRICS_PORT": str(metrics_port),
                    "MIXER_HLS_DIR": str(tmp / "hls"),
                }
                if receiver == "uvloop":
                    worker_env["MIXER_EVENT_LOOP"] = "uvloop"
                if receiver == "before":
                    if before is None:
                        raise RuntimeError("the before row needs --before")
                    worker_env["PYTHONPATH"] = str(before)  # its mixer_ext shadows this one
                worker = _spawn(
                    [*benchlib.mixer_cmd(), "run", "--context", json.dumps(context)],
                    worker_env,
                    tmp / "worker.log",
                )
                procs.append(worker)
                benchlib.wait_for_port(metrics_port)
            else:
                worker = _spawn([sys.executable, __file__, "--floor"], env, None)
                procs.append(worker)
                floor_out = LineReader(worker)
            talkers: list[subprocess.Popen[bytes]] = []
            readers: list[LineReader] = []
            for first in range(0, n, per_process):
                count = min(per_process, n - first)
                p = _spawn(
                    [sys.executable, __file__, "--talkers", "--backend", backend, "--url", url,
                     "--first", str(first), "--count", str(count),
                     "--janus-talkers", janus_talkers, "--talking", str(talking)],
                    env,
                    None,
                    tmp / f"talkers-{first}.log",
                )  # fmt: skip
                procs.append(p)
                talkers.append(p)
                readers.append(LineReader(p))
            deadline = time.monotonic() + 60 + 3 * n

            def ready() -> bool:
                if receiver != "floor":
                    return (
                        scrape(f"http://127.0.0.1:{metrics_port}/metrics").value("mixer_inputs")
                        >= n
                    )
                assert floor_out is not None
                return any(ln == f"TRACKS {n}" for ln in floor_out.lines)

            while not (all("JOINED" in r.lines for r in readers) and ready()):
                dead = [p for p in procs if p.poll() is not None]
                if dead:
                    what = " ".join(map(str, dead[0].args[2:4]))
                    logs = [*tmp.glob("talkers-*.log"), tmp / "room.log", tmp / "worker.log"]
                    why = next((e for e in map(_last_error, logs) if e), "")
                    raise RuntimeError(f"a process exited early ({what}): {why}")
                if time.monotonic() > deadline:
                    raise RuntimeError("not every talker was in the mix in time")
                time.sleep(0.5)
            time.sleep(settle)  # joins settle: jitter buffers fill, ICE/DTLS CPU is over
            pids = [p.pid for p in talkers]
            load0 = os.getloadavg()[0]
            s0: Scrape | None = None
            f0 = _floor_frames(floor_out)
            if receiver != "floor":
                s0 = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
            c0 = (cpu_seconds(worker.pid), sum(map(cpu_seconds, pids)), cpu_seconds(room_pid))
            t0 = time.monotonic()
            spy = (
                _profile(worker.pid, seconds, profile / f"{backend}-{receiver}-{n}.txt")
                if profile
                else None
            )
            time.sleep(seconds)
            c1 = (cpu_seconds(worker.pid), sum(map(cpu_seconds, pids)), cpu_seconds(room_pid))
            f1 = _floor_frames(floor_out)
            if spy is not None:
                spy.wait(30)
            elapsed = time.monotonic() - t0
            row = Row(
                backend,
                receiver,
                n,
                elapsed,
                c1[0] - c0[0],
                c1[1] - c0[1],
                c1[2] - c0[2],
                load_before=load0,
                load_after=os.getloadavg()[0],
            )
            if receiver != "floor":
                assert s0 is not None
                s1 = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
                row.lateness = Histogram.between(s0, s1, "mixer_tick_lateness_seconds")
                for name in ("late", "concealed", "lost"):
                    key = f"mixer_input_{name}_frames_total"
                    setattr(row, name, s1.value(key) - s0.value(key))
            else:
                row.frames = f1 - f0
            return row
        except Exception as exc:  # one failed N is a row, not a crash of the search
            return Row(backend, receiver, n, seconds, 0, 0, 0, error=str(exc)[:200])
        finally:
            for p in reversed(procs):
                stop_process(p)
            if janus is not None:
                from mixer_ext.testing.janus import stop_janus

                stop_janus(janus)


def _profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """``--profile``: py-spy samples the receiver (all threads, idle excluded) over the window."""
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    cmd = [str(spy), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "100", "--gil"]
    cmd += ["-f", "raw", "-t", "-o", str(out)]  # collapsed stacks: sort by leaf or prefix
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _floor_frames(out: LineReader | None) -> float:
    """The floor receiver's latest frame count (0 for the mixer rows)."""
    if out is None:
        return 0.0
    for ln in reversed(out.lines):
        if ln.startswith("FRAMES "):
            return float(ln.split()[1])
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("embedded", "janus"), default="embedded")
    parser.add_argument("--quick", action="store_true", help="3 talkers for 5 s, mixer + floor")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window per row")
    parser.add_argument("--steps", default="20,50,100", help="N to measure (20,50,100)")
    parser.add_argument("--receivers", default="mixer,before,floor", help="rows per N, in order")
    parser.add_argument("--before", default="5a50186", help="revision of the 'before' row")
    parser.add_argument("--per-process", type=int, default=25, help="talkers per process (25)")
    parser.add_argument(
        "--janus-talkers",
        choices=("rtp", "webrtc"),
        default="rtp",
        help="janus: remote publishers fed plain RTP (rtp), or WebRTC publishers",
    )
    parser.add_argument(
        "--talking",
        type=int,
        default=100,
        help="percent of the talkers talking, the rest silent as Opus DTX (janus rtp only)",
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy each receiver over its window (pip install py-spy)"
    )
    # child roles
    parser.add_argument("--talkers", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.talkers:
        asyncio.run(run_talkers(args))
        return 0
    if args.floor:
        asyncio.run(run_floor(args))
        return 0

    if args.talking < 100 and not (args.backend == "janus" and args.janus_talkers == "rtp"):
        parser.error("--talking below 100 needs --backend janus with rtp talkers (DTX senders)")
    steps = [3] if args.quick else [int(s) for s in args.steps.split(",")]
    receivers = ["mixer", "floor"] if args.quick else args.receivers.split(",")
    if any(r not in RECEIVERS for r in receivers) or "mixer" not in receivers:
        parser.error("--receivers: mixer plus any of uvloop, before, floor")
    seconds = 5.0 if args.quick else args.seconds
    settle = 2.0 if args.quick else 5.0
    before = before_checkout(args.before) if "before" in receivers else None
    print(f"machine: {benchlib.machine()}")
    print(f"start: {benchlib.load()}")
    method = [
        f"method: backend={args.backend}"
        + (f" ({args.janus_talkers} talkers)" if args.backend == "janus" else "")
        + (f"; {args.talking} % talking, the rest DTX" if args.talking < 100 else "")
        + "; per N and receiver a fresh room, receiver and N",
        f"pre-encoded Opus talkers ({args.per_process} per process); window {seconds:.0f} s",
        f"after all N are in + {settle:.0f} s; CPU = utime+stime from /proc over the window,",
        "% of one core; 'per N' = receiver CPU / N; talkers and room server apart, 'room/N' =",
        "room CPU per forwarded stream; tick lateness from mixer_tick_lateness_seconds;",
        "late/concl/lost = input frame counters / frames expected; a mixer row holds when",
        "<= 1 % of ticks are > 10 ms late, late frames < 0.5 % and CPU < 1 core.",
        "receivers: mixer = this checkout; uvloop = the same on uvloop;",
        f"before = {args.before} (stock aiortc receive, decoder threads, reader tasks);",
        "floor = stock aiortc recv() of every track, no mix",
    ]
    print("\n        ".join(method))
    print(HEADER, flush=True)
    held: list[int] = []
    ratios: list[str] = []
    for n in steps:
        rows: dict[str, Row] = {}
        for receiver in receivers:
            rows[receiver] = measure(
                args.backend,
                receiver,
                n,
                seconds,
                args.per_process,
                settle,
                before,
                args.profile,
                args.janus_talkers,
                args.talking,
            )
            print(rows[receiver].line(), flush=True)
        mixer = rows["mixer"]
        if mixer.held:
            held.append(n)
        for other in ("floor", "before", "uvloop"):
            row = rows.get(other)
            if row is not None and row.cpu > 0 and not row.error and not mixer.error:
                line = f"N={n}: mixer / {other} CPU = {mixer.cpu / mixer.seconds:.3f} / "
                line += f"{row.cpu / row.seconds:.3f} core = {mixer.cpu / row.cpu:.2f}x"
                ratios.append(line)
                print(line, flush=True)
    print("ratios (CPU of the receiver process, same streams, same window):")
    for line in ratios:
        print("  " + line)
    largest = max(held) if held else None
    print(
        f"result: backend={args.backend}: "
        + (f"largest N that held = {largest}" if largest is not None else "no N held")
        + (" (the largest N tried)" if largest == max(steps) else "")
    )
    print(f"end: {benchlib.load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
