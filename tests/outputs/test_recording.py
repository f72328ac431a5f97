"""Recordings (file:PATH) play back with the right duration, after a normal end and SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import numpy as np
import pytest

from mixer_ext.context import parse_output
from mixer_ext.core.frames import SAMPLE_RATE
from mixer_ext.encode.fanout import OutputPipeline
from mixer_ext.settings import Settings
from mixer_ext.testing.feed import TONE_HZ, feed
from mixer_ext.testing.spectrum import tone_levels
from tests.support.env import ROOT
from tests.support.hls_reader import read_ts


def decoded_seconds(path: Path) -> tuple[float, np.ndarray]:
    """Decode the whole file as a player would; (seconds of audio, samples)."""
    chunks = []
    with av.open(str(path)) as c:
        for frame in c.decode(c.streams.audio[0]):
            chunks.append(frame.to_ndarray().T)
    pcm = np.concatenate(chunks)
    return len(pcm) / SAMPLE_RATE, pcm


@pytest.mark.slow
@pytest.mark.parametrize("ext", [".m4a", ".mp4", ".ts"])
async def test_recording_plays_back_with_the_right_duration(tmp_path: Path, ext: str) -> None:
    path = tmp_path / "sub" / f"rec{ext}"
    pipeline = OutputPipeline([parse_output(f"file:{path}")], 128, Settings())
    await pipeline.start()
    await feed(pipeline, 6.0)
    await pipeline.close()
    with av.open(str(path)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        assert float(c.duration or 0) / 1e6 == pytest.approx(6.0, abs=0.05)
    seconds, pcm = decoded_seconds(path)
    # mp4 trims the encoder priming with an edit list; TS plays it (1024 samples)
    assert seconds == pytest.approx(6.0, abs=0.05)
    assert tone_levels(pcm, SAMPLE_RATE, [TONE_HZ])[TONE_HZ] > 0.15
    if ext == ".ts":
        ts = read_ts(path.read_bytes())
        assert [p.seq for _t, p in ts.payloads] == list(range(12))


async def test_ts_recording_is_readable_while_the_run_goes_on(tmp_path: Path) -> None:
    """A crash must not lose the last seconds: what was mixed is on disk already."""
    path = tmp_path / "live.ts"
    pipeline = OutputPipeline([parse_output(f"file:{path}")], 96, Settings())
    await pipeline.start()
    try:
        await feed(pipeline, 4.0)
        for _ in range(50):  # the output thread writes behind the encoder
            if path.exists() and path.stat().st_size > 40_000:
                break
            await asyncio.sleep(0.05)
        so_far = read_ts(path.read_bytes())  # still open: no trailer, no close
    finally:
        await pipeline.close()
    assert so_far.duration > 2.0, so_far.duration
    assert len(so_far.payloads) >= 4


@pytest.mark.slow
def test_sigterm_finalizes_the_recording(tmp_path: Path) -> None:
    """A worker-like process that closes the pipeline on SIGTERM leaves a playable m4a."""
    m4a = tmp_path / "rec.m4a"
    script = textwrap.dedent(
        f"""
        import asyncio, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from mixer_ext.context import parse_output
        from mixer_ext.encode.fanout import OutputPipeline
        from mixer_ext.settings import Settings
        from mixer_ext.testing.feed import feed

        async def main():
            pipeline = OutputPipeline([parse_output("file:{m4a}")], 96, Settings())
            await pipeline.start()
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            feeding = asyncio.create_task(feed(pipeline, 600.0, speed=1.0), name="feed")
            print("started", flush=True)
            await stop.wait()
            feeding.cancel()
            await asyncio.gather(feeding, return_exceptions=True)
            await pipeline.close()

        asyncio.run(main())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        t0 = time.monotonic()
        time.sleep(3.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        ran = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    seconds, _pcm = decoded_seconds(m4a)
    # fed in real time for ~3 s: the moov is there and covers all of it
    assert 2.5 <= seconds <= ran + 0.5
