"""Capacity: the most talkers whose mix stays real time, and the mixer's CPU per participant.

Method, per N (a fresh set of processes for each N):

* a room: ``mixer-ext room-server`` on 127.0.0.1 (``--backend embedded``),
  or Debian's Janus started from a generated config on the machine's
  interface address, as ``tests/janus_util.py`` does (``--backend janus``);
* ``mixer-ext run`` (the worker, one HLS output, ``MIXER_METRICS_PORT`` set);
* N talkers, real aiortc peers sending a distinct 0.1-full-scale tone each
  (Opus), ``--per-process`` of them in each of ceil(N / per-process) Python
  processes (this script with ``--talkers``), so their CPU is counted apart.

Once the worker reports N participants and 5 s have passed, the run is
measured for ``--seconds`` (60): CPU seconds of each process from
``/proc/<pid>/stat`` (utime + stime, all threads), and the worker's
``/metrics`` scraped at both ends.  N *holds* when, over the window,
(1) at most 1 % of the ticks ran more than 10 ms late (``tick lateness
p99 < 10 ms``, read exactly at the 10 ms bucket bound) and (2) no input was
starved because of the mixer: frames that arrived too late to be mixed
(``mixer_input_late_frames_total``) are at most 1 % of the frames expected.
On a punctual loop (condition 1: the readers share the tick's event loop)
a late frame was held up upstream: talker processes and the room share the
two cores; 1 % is the tolerance for that.  Concealed and lost frames are
printed too: those come from senders that did not send in time.
The search runs N = 5, 10, 20, 30, ... and stops at the first N that fails.

The floor row: at the last N that held (the first N tried if none did),
the worker is replaced by a stock aiortc receiver (this script with
``--floor``): the same connector joins, every subscribed track's ``recv()``
is called (Opus decode, jitter buffer of aiortc) and the frame dropped: no
mixing, no encoding, no outputs.

    .venv/bin/python bench/capacity.py [--backend embedded|janus] [--seconds 60]
    .venv/bin/python bench/capacity.py --quick        # 3 talkers, 5 s, no search
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


# --- child roles --------------------------------------------------------------------


async def run_talkers(args: argparse.Namespace) -> None:
    """``--talkers``: ``count`` talkers from index ``first``; prints JOINED, runs until SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[Any]] = []
    leave: list[Any] = []
    for i in range(args.first, args.first + args.count):
        identity = f"talker{i:03d}"
        freq = 200.0 + 10.0 * i
        if args.backend == "janus":
            from mixer_ext.sim.janus_publisher import JanusPublisher

            pub = JanusPublisher(args.url, ROOM, identity, freq)
            await pub.join()
            await pub.publish()
            leave.append(pub.leave)
        else:
            from mixer_ext.roomserver.tokens import mint_token
            from mixer_ext.sim.talker import Talker
            from mixer_ext.sim.tracks import ToneTrack

            talker = Talker(
                args.url,
                ROOM,
                identity,
                mint_token(SECRET, ROOM, identity, 3600),
                ToneTrack(freq, 0.1),
            )
            tasks.append(asyncio.create_task(talker.run(), name=f"talker:{identity}"))
            await talker.joined.wait()
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
    connector = make_connector(load_settings(), ROOM, BOT)
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
    receiver: str  # "mixer" or "floor"
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
            self.lateness.fraction_above(0.01) <= 0.01 and self.late <= 0.01 * self.expected_frames
        )

    def line(self) -> str:
        pct = 100 * self.cpu / self.seconds
        per = pct / self.n
        tal = 100 * self.talkers_cpu / self.seconds
        room = 100 * self.room_cpu / self.seconds
        head = f"{self.backend:>8} {self.receiver:>6} {self.n:>4}"
        if self.error:
            return f"{head}  FAILED: {self.error}"
        cpu = f"{pct:>7.1f}% {per:>6.2f}% {tal:>8.1f}% {room:>7.1f}%"
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


def _spawn(cmd: list[str], env: dict[str, str], log: Path | None) -> subprocess.Popen[bytes]:
    out: Any = open(log, "wb") if log else subprocess.PIPE  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        cmd,
        env={**os.environ, **env},
        cwd=benchlib.ROOT,
        stdout=out,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )


def measure(
    backend: str, receiver: str, n: int, seconds: float, per_process: int, settle: float = 5.0
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

                janus = start_janus(tmp, rooms=room_config(int(ROOM), publishers=n + 10))
                url = janus.url
                room_pid = janus.process.pid
                env |= {"MIXER_ROOM_BACKEND": "janus", "MIXER_JANUS_URL": url}
            else:
                port = free_port()
                url = f"ws://127.0.0.1:{port}"
                env |= {"MIXER_ROOM_URL": url, "MIXER_ROOM_MAX_PARTICIPANTS": str(n + 10)}
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
            if receiver == "mixer":
                context = {
                    "room": {"name": ROOM},
                    "outputs": ["hls:bench"],
                    "maxParticipantDuration": 3600,
                }
                worker = _spawn(
                    [*benchlib.mixer_cmd(), "run", "--context", json.dumps(context)],
                    env
                    | {"MIXER_METRICS_PORT": str(metrics_port), "MIXER_HLS_DIR": str(tmp / "hls")},
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
                     "--first", str(first), "--count", str(count)],
                    env,
                    None,
                )  # fmt: skip
                procs.append(p)
                talkers.append(p)
                readers.append(LineReader(p))
            deadline = time.monotonic() + 60 + 3 * n

            def ready() -> bool:
                if receiver == "mixer":
                    return (
                        scrape(f"http://127.0.0.1:{metrics_port}/metrics").value("mixer_inputs")
                        >= n
                    )
                assert floor_out is not None
                return any(ln == f"TRACKS {n}" for ln in floor_out.lines)

            while not (all("JOINED" in r.lines for r in readers) and ready()):
                dead = [p for p in procs if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"a process exited early ({dead[0].args[:4]})")
                if time.monotonic() > deadline:
                    raise RuntimeError("not every talker was in the mix in time")
                time.sleep(0.5)
            time.sleep(settle)  # joins settle: jitter buffers fill, ICE/DTLS CPU is over
            pids = [p.pid for p in talkers]
            load0 = os.getloadavg()[0]
            s0: Scrape | None = None
            f0 = _floor_frames(floor_out)
            if receiver == "mixer":
                s0 = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
            c0 = (cpu_seconds(worker.pid), sum(map(cpu_seconds, pids)), cpu_seconds(room_pid))
            t0 = time.monotonic()
            time.sleep(seconds)
            c1 = (cpu_seconds(worker.pid), sum(map(cpu_seconds, pids)), cpu_seconds(room_pid))
            f1 = _floor_frames(floor_out)
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
            if receiver == "mixer":
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
    parser.add_argument("--quick", action="store_true", help="3 talkers for 5 s, no search")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window per N")
    parser.add_argument("--steps", default="5,10,20,30,40,50,60,80,100", help="N to try, in order")
    parser.add_argument("--per-process", type=int, default=5, help="talkers per process")
    parser.add_argument("--no-floor", action="store_true", help="skip the stock-aiortc row")
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

    steps = [3] if args.quick else [int(s) for s in args.steps.split(",")]
    seconds = 5.0 if args.quick else args.seconds
    settle = 2.0 if args.quick else 5.0
    print(f"machine: {benchlib.machine()}")
    print(f"start: {benchlib.load()}")
    method = [
        f"method: backend={args.backend}; per N a fresh room, worker (1 HLS output) and N aiortc",
        f"talkers ({args.per_process} per process); window {seconds:.0f} s after all N are mixed "
        f"+ {settle:.0f} s;",
        "CPU = utime+stime from /proc over the window, % of one core; 'per N' = mixer CPU / N;",
        "talkers and room server counted apart; tick lateness from the worker's",
        "mixer_tick_lateness_seconds histogram; late/concl/lost = input frame counters / frames",
        "expected; N holds when <= 1 % of ticks are > 10 ms late and late frames <= 1 %;",
        "the floor row is stock aiortc recv() on every track at the last N that held",
        "(no mixing, no encoding), same talkers, same window",
    ]
    print("\n        ".join(method))
    print(HEADER, flush=True)
    last_held: Row | None = None
    for n in steps:
        row = measure(args.backend, "mixer", n, seconds, args.per_process, settle)
        print(row.line(), flush=True)
        if not row.held:
            break
        last_held = row
    if not args.no_floor:
        # at the last N that held; when none did, at the first N tried (still a floor)
        ref = last_held or row
        floor = measure(args.backend, "floor", ref.n, seconds, args.per_process, settle)
        print(floor.line(), flush=True)
        if floor.cpu > 0 and not floor.error and not ref.error:
            print(f"mixer / floor CPU at N={ref.n}: {ref.cpu / floor.cpu:.2f}x")
    if last_held is None:
        print(f"result: backend={args.backend}: no N held")
    else:
        per = 100 * last_held.cpu / last_held.seconds / last_held.n
        print(
            f"result: backend={args.backend}: last N that held = {last_held.n}"
            f"{' (the largest N tried)' if last_held.n == steps[-1] else ''}; "
            f"mixer CPU {per:.2f}% of a core per participant"
        )
    print(f"end: {benchlib.load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
