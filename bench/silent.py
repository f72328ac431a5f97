"""Worker CPU for N silent participants vs N talking ones (issue 13, "silence costs nothing").

Method, per mode (a fresh room server, worker and sender process each time; the
modes alternate, ``--rounds`` times, and the median is kept):

* ``mixer-ext room-server`` on 127.0.0.1 (it forwards Opus payloads, never decodes);
* ``mixer-ext run`` with one HLS output (``MIXER_METRICS_PORT`` set);
* one sender process (this script with ``--senders``) with N participants, each a
  ``RoomClient`` publishing a ``PreEncodedOpusTrack`` (mixer_ext.sim.preencoded:
  replayed packets, no encoding), in one of three modes:
  ``talking`` (a 440 Hz tone loop), ``dtx`` (the tiny DTX frame libopus emits for
  digital silence, sent every 400 ms as a WebRTC sender with DTX does), ``dtx20``
  (the same frame every 20 ms: the worst case, a sender that transmits every frame)
  or ``muted`` (the tone, muted with ``set-enabled``: the room then forwards
  nothing); and ``alone``: the worker with nobody in the
  room (its fixed cost: the tick, AAC encode, HLS), subtracted to give the cost
  *per participant* of each mode.

Once the worker mixes N inputs and ``--settle`` seconds have passed, the worker's
CPU (utime + stime of every thread, from ``/proc/<pid>/stat``) is measured over
``--seconds``.  Figures are % of one core; the ratios are silent / talking.

    .venv/bin/python bench/silent.py [--n 20] [--seconds 20] [--rounds 3]
    .venv/bin/python bench/silent.py --quick        # N = 5, 4 s, one round
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
from benchlib import cpu_seconds, free_port, median, scrape, stop_process

SECRET = "bench-silent-secret-0123456789abcdef"
ROOM = "RM-bench-silent"
MODES = ("talking", "dtx", "dtx20", "muted", "alone")


async def run_senders(n: int, mode: str, url: str) -> None:
    """``--senders``: N participants in ``mode``; prints JOINED, runs until SIGTERM."""
    from mixer_ext.connectors.embedded import RoomClient
    from mixer_ext.roomserver.tokens import mint_token
    from mixer_ext.sim.preencoded import PreEncodedOpusTrack, encode_tone

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tone = encode_tone(440.0, 0.1)
    clients: list[Any] = []
    for i in range(n):
        identity = f"p{i:03d}"
        client = RoomClient(
            url, ROOM, identity, mint_token(SECRET, ROOM, identity, 3600), auto_subscribe=False
        )
        # RoomClient wraps what it publishes in a MutingTrack, which passes decoded frames
        # only; pre-encoded packets go straight to aiortc's sender (which only packetizes).
        client._publish = PreEncodedOpusTrack(
            tone, silent=mode in ("dtx", "dtx20"), offset=i, dtx_every=1 if mode == "dtx20" else 20
        )
        await client.connect()
        if mode == "muted":
            await client.set_enabled(False)
        clients.append(client)
    print("JOINED", flush=True)
    await stop.wait()
    for client in clients:
        await client.disconnect()


def _spawn(cmd: list[str], env: dict[str, str], log: Path | None) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log is not None else subprocess.PIPE  # noqa: SIM115
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)


def _joined(log: Path) -> bool:
    try:
        return "JOINED" in log.read_text(errors="replace")
    except OSError:
        return False


def measure(mode: str, n: int, seconds: float, settle: float) -> float:
    """Worker CPU (% of one core) with N participants in ``mode``."""
    with tempfile.TemporaryDirectory(prefix="bench-silent-") as tmpdir:
        tmp = Path(tmpdir)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            port, metrics_port = free_port(), free_port()
            url = f"ws://127.0.0.1:{port}"
            env = {
                "MIXER_LOG_LEVEL": "WARNING",
                "MIXER_ROOM_SECRET": SECRET,
                "MIXER_ROOM_URL": url,
                "MIXER_ROOM_MAX_PARTICIPANTS": str(n + 10),
            }
            room = [*benchlib.mixer_cmd(), "room-server", "--host", "127.0.0.1", "--port"]
            procs.append(_spawn([*room, str(port)], env, tmp / "room.log"))
            benchlib.wait_for_port(port)
            context = {"room": {"name": ROOM}, "outputs": ["hls:b"], "maxParticipantDuration": 600}
            worker = _spawn(
                [*benchlib.mixer_cmd(), "run", "--context", json.dumps(context)],
                env | {"MIXER_METRICS_PORT": str(metrics_port), "MIXER_HLS_DIR": str(tmp / "hls")},
                tmp / "worker.log",
            )
            procs.append(worker)
            benchlib.wait_for_port(metrics_port)
            if mode == "alone":
                n = 0
            cmd = [sys.executable, __file__, "--senders", "--mode", mode, "--n", str(n)]
            senders = _spawn([*cmd, "--url", url], env, tmp / "senders.log")
            procs.append(senders)
            deadline = time.monotonic() + 30 + 2 * n
            while scrape(f"http://127.0.0.1:{metrics_port}/metrics").value(
                "mixer_inputs"
            ) < n or not _joined(tmp / "senders.log"):
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"a process exited early; see {tmp}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the worker never mixed {n} inputs")
                time.sleep(0.5)
            time.sleep(settle)
            c0, t0 = cpu_seconds(worker.pid), time.monotonic()
            time.sleep(seconds)
            c1, t1 = cpu_seconds(worker.pid), time.monotonic()
            if worker.poll() is not None:
                raise RuntimeError("the worker exited during the window")
            return 100 * (c1 - c0) / (t1 - t0)
        finally:
            for p in reversed(procs):
                stop_process(p)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="participants per run (20)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window (20 s)")
    parser.add_argument("--settle", type=float, default=3.0, help="wait after all are in (3 s)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--modes", default=",".join(MODES), help=",".join(MODES))
    parser.add_argument("--quick", action="store_true", help="N = 5, 4 s, one round")
    parser.add_argument("--json", action="store_true", help="also print a JSON line of figures")
    parser.add_argument("--senders", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.senders:
        asyncio.run(run_senders(args.n, args.mode, args.url))
        return 0
    if args.quick:
        args.n, args.seconds, args.rounds, args.settle = 5, 4.0, 1, 2.0
    modes = [m for m in args.modes.split(",") if m]
    if "talking" not in modes or any(m not in MODES for m in modes):
        parser.error(f"--modes: a subset of {','.join(MODES)} that includes talking")
    print(f"machine: {benchlib.machine()}")
    print(f"start: {benchlib.load()}")
    print(
        f"method: N={args.n} pre-encoded participants through the embedded room into one "
        f"worker (1 HLS output); {args.rounds} round(s) alternating the modes, each a fresh "
        f"room+worker+senders; worker CPU (utime+stime, /proc) over {args.seconds:.0f} s after "
        f"all N are mixed + {args.settle:.0f} s; % of one core; median of the rounds"
    )
    results: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode in modes:
            cpu = measure(mode, args.n, args.seconds, args.settle)
            results[mode].append(cpu)
            print(f"round {r + 1} {mode:>8}: worker {cpu:6.1f}% of a core", flush=True)
    med = {m: median(v) for m, v in results.items()}
    base = med.get("alone", 0.0)
    per = {m: (med[m] - base) / args.n for m in modes if m != "alone"}
    if "alone" in med:
        print(f"{'alone':>8}: median {base:6.1f}% of a core (the worker's fixed cost)")
    for mode in per:
        ratio = per[mode] / per["talking"] if per["talking"] > 0 else float("nan")
        print(
            f"{mode:>8}: median {med[mode]:6.1f}% of a core, {per[mode]:.2f}% per participant"
            f"{' above alone' if 'alone' in med else ''}: {ratio:.2f}x talking"
        )
    if args.json:
        print("JSON " + json.dumps({"n": args.n, "median_cpu_percent": med, "per": per}))
    print(f"end: {benchlib.load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
