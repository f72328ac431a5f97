"""Issue 16.0: memory stays flat while every output kind runs (faster than real time).

One child process runs an ``OutputPipeline`` with every file-backed output
kind at once (event HLS with 0.5 s segments, so 8 audio minutes make as many
segments as 32 minutes at the default 2 s; a ``.ts`` and an ``.m4a``
recording), fed as fast as it takes it without drops, and prints its RSS
after every audio minute.  RSS growth from the end of minute 2 (warm-up) to
the end is bounded.  A fresh process, so other tests' allocations do not
count.  ``bench/rss_outputs.py`` has the per-kind, per-allocator figures.

It failed before ``OutputPipeline.start()`` capped glibc's malloc arenas
(seen: +61.8 MB from minute 2 to 8, 86 -> 148 MB: per-thread arenas kept what
FFmpeg frees); capped, the growth is about 1 MB.  ``MALLOC_ARENA_MAX`` is
removed from the child's environment so the cap tested is the pipeline's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.env import ROOT

pytestmark = pytest.mark.slow

MINUTES = 8
WARMUP = 2
#: MB of RSS growth allowed after warm-up (the .m4a index alone is ~0.2 MB per audio minute)
BOUND_MB = 12.0


@pytest.mark.timeout(150)
def test_rss_is_flat_after_warm_up_with_every_output_kind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    script = textwrap.dedent(
        f"""
        import asyncio, json, os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from mixer_ext.context import parse_output
        from mixer_ext.encode.fanout import OutputPipeline
        from mixer_ext.settings import HlsPlaylistType, Settings
        from mixer_ext.testing.feed import feed

        def rss_mb():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

        async def main():
            tmp = Path({str(tmp_path)!r})
            settings = Settings(
                hls_dir=tmp / "hls", hls_playlist_type=HlsPlaylistType.EVENT,
                hls_segment_duration=0.5,
            )
            specs = ["hls:main", f"file:{{tmp / 'rec.ts'}}", f"file:{{tmp / 'rec.m4a'}}"]
            pipeline = OutputPipeline([parse_output(s) for s in specs], 128, settings)
            await pipeline.start()
            tick = 0
            for minute in range(1, {MINUTES} + 1):
                tick = await feed(pipeline, 60.0, first_tick=tick)
                print(json.dumps({{"minute": minute, "rss": rss_mb()}}), flush=True)
            await pipeline.close()
            print(json.dumps({{"dropped": pipeline.dropped_frames}}), flush=True)

        asyncio.run(main())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=140,
        check=False,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    rss = {line["minute"]: line["rss"] for line in lines if "minute" in line}
    assert "dropped" in lines[-1], out.stdout  # the child ran to its end
    growth = rss[MINUTES] - rss[WARMUP]
    assert growth <= BOUND_MB, f"RSS grew {growth:.1f} MB after warm-up: {rss}"
