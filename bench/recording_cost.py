"""What recording costs the room server: N tracks' payloads through TrackRecorder, on vs off.

Method: one process plays the room server's part for ``--tracks`` published tracks: every
20 ms (paced from a fixed start, as the forwarder receives them) it hands each track's
next real Opus payload (``encode_tone``, 32 kbps mono) to a sink, for ``--seconds``.
``off``: the sink does nothing (what forwarding alone costs this loop); ``on``: the sink is
that track's ``TrackRecorder.push`` (stamp, bounded queue; the mux in its writer thread
into a live ``.mka`` on local disk).  CPU = user + system time of the whole process (all
threads) from ``os.times()``; the difference is recording's cost, given as a share of one
core and per payload, beside the room server's own 49 % of a core for 50 publishers
(CHANGELOG.md, "Capacity").  Payloads dropped by a full queue are counted (must be 0).

    .venv/bin/python bench/recording_cost.py [--tracks 50] [--seconds 20] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib

from mixer_ext.roomserver.recorder import RecordingTags, TrackRecorder
from mixer_ext.sim.preencoded import encode_tone

ROOM_SERVER_50 = 0.492  # of one core, CHANGELOG.md "Capacity" (embedded room, 50 publishers)


def run(tracks: int, seconds: float, record: bool, work: Path) -> tuple[float, int, int]:
    """(CPU seconds, payloads, dropped) for one run."""
    loop = encode_tone(440, channels=1)
    recorders = []
    sinks = []
    start = time.monotonic()
    for i in range(tracks):
        if record:
            rec = TrackRecorder(
                work / f"t{i}.mka",
                RecordingTags(track_name=f"t{i}"),
                room_start=start,
                clock=time.monotonic,
            )
            recorders.append(rec)
            sinks.append(rec.push)
        else:
            sinks.append(lambda payload, ts: None)
    frames = round(seconds / 0.02)
    t0 = os.times()
    for n in range(frames):
        due = start + n * 0.02
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        payload = loop.payloads[n % len(loop.payloads)]
        for sink in sinks:
            sink(payload, n * 960)
    for rec in recorders:
        rec.close()
    for rec in recorders:
        rec.join(30)
    t1 = os.times()
    cpu = (t1.user - t0.user) + (t1.system - t0.system)
    dropped = sum(r.dropped for r in recorders)
    return cpu, frames * tracks, dropped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tracks", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--quick", action="store_true", help="50 tracks for 3 s")
    args = ap.parse_args()
    if args.quick:
        args.seconds = 3.0
    print(f"machine: {benchlib.machine()}")
    print(f"load before: {benchlib.load()}")
    print(
        f"method: {args.tracks} tracks x 50 real Opus payloads/s for {args.seconds:.0f} s, "
        "paced from a fixed start; off: no-op sink; on: TrackRecorder.push (writer thread per "
        "track, live .mka on local disk); process CPU from os.times()"
    )
    work = Path(tempfile.mkdtemp(prefix="mixer-ext-reccost-"))
    try:
        off, payloads, _ = run(args.tracks, args.seconds, False, work)
        on, _, dropped = run(args.tracks, args.seconds, True, work)
        size = sum(f.stat().st_size for f in work.glob("*.mka"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cost = (on - off) / args.seconds
    print(f"off: {100 * off / args.seconds:.1f} % of one core")
    print(f"on:  {100 * on / args.seconds:.1f} % of one core ({size / 1e6:.1f} MB written)")
    print(
        f"recording {args.tracks} tracks: {100 * cost:.1f} % of one core, "
        f"{1e6 * (on - off) / payloads:.1f} us per payload, {dropped} dropped"
    )
    print(
        f"vs the room server forwarding 50 publishers ({100 * ROOM_SERVER_50:.0f} % of a core): "
        f"+{100 * cost / ROOM_SERVER_50 * 50 / args.tracks:.1f} % at 50 tracks"
    )
    print(f"load after: {benchlib.load()}")
    return 0 if dropped == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
