"""Issue 16.0: RSS of each output kind fed faster than real time, and what the allocator does to it.

Method.  Each (output kind, allocator variant) runs in a fresh child process:
an ``OutputPipeline`` with one output is fed ``--minutes`` of synthetic mix
(a 440 Hz sine, a payload every 500 ms) as fast as it takes it, without drops
(``mixer_ext.testing.feed.feed``).  After every minute of audio the child prints
its RSS (``/proc/self/statm``) and the Python heap (``tracemalloc``).  The
parent prints, per run, RSS at the first minute, at the warm-up minute
(``--warmup``, default 10) and at the end, and the growth per audio minute
after warm-up (least-squares slope), side by side for the variants:

* ``default``: glibc malloc as the process gets it;
* ``arena2``: ``MALLOC_ARENA_MAX=2`` (glibc gives each thread that allocates
  its own arena, up to 8 x cores; the encoder and each output are threads);
* ``trim``: ``malloc_trim(0)`` after every audio minute (returns free heap
  pages to the OS: growth that goes away here is freed-but-kept memory,
  growth that stays is live native memory, i.e. a leak or an index).

    .venv/bin/python bench/rss_outputs.py                   # 30 audio minutes each
    .venv/bin/python bench/rss_outputs.py --segment 0.5 --minutes 8 --warmup 2 --kinds hls-event
    .venv/bin/python bench/rss_outputs.py --quick           # 2 audio minutes, two kinds
    .venv/bin/python bench/rss_outputs.py --minutes 4 --warmup 1 --kinds hls-live m4a
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import benchlib

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("hls-live", "hls-event", "ts", "m4a")
VARIANTS = ("default", "arena2", "trim")
MIB = 1024 * 1024


def rss_mb() -> float:
    return benchlib.rss_bytes(os.getpid()) / MIB


async def child(kind: str, minutes: int, trim: bool, directory: Path, segment: float) -> None:
    from mixer_ext.context import parse_output
    from mixer_ext.encode.fanout import OutputPipeline
    from mixer_ext.settings import HlsPlaylistType, Settings
    from mixer_ext.testing.feed import feed

    if kind.startswith("hls"):
        spec = "hls:main"
        playlist = HlsPlaylistType.EVENT if kind == "hls-event" else HlsPlaylistType.LIVE
        settings = Settings(
            hls_dir=directory, hls_playlist_type=playlist, hls_segment_duration=segment
        )
    else:
        spec = f"file:{directory / ('rec.' + kind)}"
        settings = Settings()
    libc = ctypes.CDLL("libc.so.6") if trim else None
    tracemalloc.start()
    pipeline = OutputPipeline([parse_output(spec)], 128, settings)
    await pipeline.start()
    tick = 0
    t0 = time.monotonic()
    for minute in range(1, minutes + 1):
        tick = await feed(pipeline, 60.0, first_tick=tick)
        if libc is not None:
            libc.malloc_trim(0)
        heap, _ = tracemalloc.get_traced_memory()
        line = {
            "minute": minute,
            "rss": rss_mb(),
            "heap": heap / MIB,
            "wall": time.monotonic() - t0,
        }
        print(json.dumps(line), flush=True)
    await pipeline.close()


def slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def run(kind: str, variant: str, minutes: int, segment: float) -> list[dict[str, float]]:
    env = dict(os.environ)
    env.pop("MALLOC_ARENA_MAX", None)
    if variant == "arena2":
        env["MALLOC_ARENA_MAX"] = "2"
    with tempfile.TemporaryDirectory(prefix="rss-") as tmp:
        cmd = [sys.executable, __file__, "--child", kind, "--minutes", str(minutes), "--dir", tmp]
        cmd += ["--segment", str(segment)]
        if variant == "trim":
            cmd.append("--trim")
        out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{kind}/{variant} failed: {out.stderr.strip().splitlines()[-1:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=30, help="minutes of audio per run")
    parser.add_argument("--warmup", type=int, default=10, help="audio minutes before the slope")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--segment", type=float, default=2.0, help="HLS segment seconds (0.5: 4x the segments)"
    )
    parser.add_argument("--quick", action="store_true", help="2 audio minutes, hls-live and m4a")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--trim", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(ROOT))
        asyncio.run(child(args.child, args.minutes, args.trim, args.dir, args.segment))
        return
    if args.quick:
        args.minutes, args.warmup, args.kinds = 2, 1, ["hls-live", "m4a"]
    print(f"machine: {benchlib.machine()}")
    print(
        f"method: one output per child process, {args.minutes} audio minutes fed as fast as "
        f"it takes them; HLS segments {args.segment} s; RSS after each audio minute; "
        f"slope from minute {args.warmup} on"
    )
    header = f"{'kind':10} {'variant':8} {'rss@1':>7} {'rss@wu':>7} {'rss@end':>8} "
    print(header + f"{'MB/min':>7} {'heap':>6} {'x realtime':>10}")
    for kind in args.kinds:
        for variant in args.variants:
            rows = run(kind, variant, args.minutes, args.segment)
            warm = [r for r in rows if r["minute"] >= args.warmup] or rows[-1:]
            growth = slope([(r["minute"], r["rss"]) for r in warm])
            speed = rows[-1]["minute"] * 60 / rows[-1]["wall"]
            print(
                f"{kind:10} {variant:8} {rows[0]['rss']:7.1f} {warm[0]['rss']:7.1f} "
                f"{rows[-1]['rss']:8.1f} {growth:7.2f} {rows[-1]['heap']:6.1f} {speed:10.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
