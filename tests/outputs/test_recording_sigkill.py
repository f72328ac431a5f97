"""Issue 16.6: a recording cut by SIGKILL (OOM kill, node loss) still plays up to its last second.

A child process feeds an ``OutputPipeline`` with one recording in real time,
is killed with SIGKILL after ~3 s, and what it left on disk is decoded with
PyAV (FFmpeg's own demuxer and AAC decoder, what a player uses).  ``.ts`` is
written packet by packet and survives today; ``.m4a`` is a plain MP4 whose
index (moov) is written at close, so a killed run leaves nothing playable
until it is written fragmented (16.6, needs recording.py after the layout
refactor): that case is ``xfail(strict=True)`` until then.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import pytest

from tests.support.env import ROOT

pytestmark = pytest.mark.slow

FED = 3.0


def decoded_seconds(path: Path) -> float:
    samples = 0
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            samples += frame.samples
    return samples / 48_000


def killed_recording(path: Path) -> float:
    """Record into ``path`` in real time, SIGKILL the writer after FED s; the real time fed."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT)!r})
        from mixer_ext.context import parse_output
        from mixer_ext.encode.fanout import OutputPipeline
        from mixer_ext.settings import Settings
        from mixer_ext.testing.feed import feed

        async def main():
            pipeline = OutputPipeline([parse_output("file:{path}")], 96, Settings())
            await pipeline.start()
            print("started", flush=True)
            await feed(pipeline, 600.0, speed=1.0)

        asyncio.run(main())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        t0 = time.monotonic()
        time.sleep(FED)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        return time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize(
    "ext",
    [
        ".ts",
        ".m4a",
    ],
)
def test_a_killed_recording_plays_up_to_the_kill(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"rec{ext}"
    ran = killed_recording(path)
    try:
        seconds = decoded_seconds(path)
    except av.error.FFmpegError as exc:
        raise AssertionError(f"the killed {ext} does not open: {exc}") from None
    # fragments/packets reach the disk about once a second: lose at most ~1.5 s
    assert ran - 1.5 <= seconds <= ran + 0.5, (seconds, ran)
