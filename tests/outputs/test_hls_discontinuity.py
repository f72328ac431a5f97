"""Issue 16.8: gaps are marked, never stretched.

When audio is missing from the timeline (frames dropped at a full queue) or the
clock re-anchors after a stall, the segment in progress ends at its last sample,
the next one follows ``#EXT-X-DISCONTINUITY``, no segment is longer than its
target and ``#EXT-X-TARGETDURATION`` is the same in every playlist the run writes
(RFC 8216 4.3.3.1 forbids changing it).  Every playlist version is captured as it
is written (the output's ``on_change`` hook) and read the way a player does.
Real encoder, real outputs, both playlist kinds (LL-HLS is the default).
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from mixer_ext.context import parse_output
from mixer_ext.core.clock import MixerClock
from mixer_ext.core.mixer import Mixer
from mixer_ext.encode.fanout import OutputPipeline
from mixer_ext.hls.playlist import parse_media_playlist
from mixer_ext.outputs.hls import HlsOutput
from mixer_ext.settings import JitterBufferSize, Settings
from mixer_ext.testing.feed import sine_frame
from tests.support.hls_reader import read_hls

pytestmark = pytest.mark.slow

SEGMENT = 1.0


def discontinuities_metric() -> float:
    return REGISTRY.get_sample_value("mixer_output_discontinuities_total", {"kind": "hls"}) or 0.0


def settings(tmp_path: Path, low_latency: bool) -> Settings:
    return Settings(
        hls_dir=tmp_path / "hls",
        hls_segment_duration=SEGMENT,
        hls_low_latency=low_latency,
        hls_list_size=1000,
    )


def capture(pipeline: OutputPipeline) -> list[str]:
    """Every playlist text the HLS output writes, in order."""
    out = pipeline.outputs[0]
    assert isinstance(out, HlsOutput)
    versions: list[str] = []
    pipeline.add_hls_listener(lambda _name: versions.append(out.playlist_path.read_text()))
    return versions


def check_run(versions: list[str], expected_gaps: int) -> None:
    assert versions, "no playlist was written"
    tags = {re.search(r"#EXT-X-TARGETDURATION:(\d+)", v).group(1) for v in versions}  # type: ignore[union-attr]
    assert tags == {str(round(SEGMENT))}, f"TARGETDURATION changed during the run: {tags}"
    final = parse_media_playlist(versions[-1])
    assert final.ended
    longest = max(s.duration for s in final.segments)
    assert longest <= SEGMENT + 0.05, f"a segment was stretched to {longest:.3f} s"
    marked = [s.sequence for s in final.segments if s.discontinuity]
    assert len(marked) == expected_gaps, (marked, versions[-1])
    assert versions[-1].count("#EXT-X-DISCONTINUITY\n") == expected_gaps


@pytest.mark.parametrize("low_latency", [True, False], ids=["llhls", "plain"])
async def test_dropped_frames_end_the_segment_and_mark_the_gap(
    tmp_path: Path, low_latency: bool
) -> None:
    pipeline = OutputPipeline([parse_output("hls:a")], 96, settings(tmp_path, low_latency))
    await pipeline.start()
    versions = capture(pipeline)
    before = discontinuities_metric()
    # 3 s of audio, a 2 s hole (100 frames that never reach the encoder), 3 s more
    ticks = [*range(150), *range(250, 400)]
    for tick in ticks:
        pipeline.on_mix(sine_frame(tick))
        while pipeline._queue.qsize() > 64:  # noqa: ASYNC110 - no drops but the hole's
            await asyncio.sleep(0.005)
    await pipeline.close()
    check_run(versions, expected_gaps=1)
    assert discontinuities_metric() - before == 1
    final = parse_media_playlist(versions[-1])
    gap_at = next(i for i, s in enumerate(final.segments) if s.discontinuity)
    # the segment after the gap starts 2 s (plus the audio) later by the wall clock too
    step = final.segments[gap_at].start_time - final.segments[gap_at - 1].start_time
    assert 1.9 < step.total_seconds() - final.segments[gap_at - 1].duration < 2.1
    # what a player plays: 6 s of audio, not 8 (nothing stretched over the hole)
    played = sum(s.duration for s in final.segments)
    assert abs(played - 6.0) < 0.1, played
    assert abs(read_hls(tmp_path / "hls" / "a").duration - 6.0) < 0.1


async def test_a_full_encoder_queue_marks_every_gap(tmp_path: Path) -> None:
    pipeline = OutputPipeline([parse_output("hls:a")], 64, settings(tmp_path, True))
    await pipeline.start()
    versions = capture(pipeline)
    for tick in range(2000):  # 40 s of audio handed over at once: the queue overflows
        pipeline.on_mix(sine_frame(tick))
    await pipeline.close()
    dropped = pipeline.status()["encoder"]["dropped_frames"]
    assert dropped > 0
    final = parse_media_playlist(versions[-1])
    gaps = sum(s.discontinuity for s in final.segments)
    assert gaps >= 1
    check_run(versions, expected_gaps=gaps)


@pytest.mark.slow
@pytest.mark.parametrize("low_latency", [True, False], ids=["llhls", "plain"])
async def test_a_clock_resync_marks_a_discontinuity(tmp_path: Path, low_latency: bool) -> None:
    """The mixer clock (real, with a monotonic source that jumps 5 s) re-anchors: HLS marks it."""
    offset = [0.0]
    pipeline = OutputPipeline([parse_output("hls:a")], 96, settings(tmp_path, low_latency))
    await pipeline.start()
    versions = capture(pipeline)
    clock = MixerClock(
        Mixer(JitterBufferSize.SMALL), pipeline, clock=lambda: time.monotonic() + offset[0]
    )
    clock.start()
    try:
        await asyncio.sleep(2.5)
        offset[0] += 5.0
        await asyncio.sleep(2.5)
    finally:
        await clock.stop()
        await pipeline.close()
    assert clock.resyncs == 1
    check_run(versions, expected_gaps=1)


async def test_a_full_output_queue_marks_every_gap(tmp_path: Path) -> None:
    """The HLS output's own queue (made small here) overflows: its drops are marked too."""
    import queue

    from mixer_ext.encode.encoder import AacEncoder

    encoder = AacEncoder(64)
    versions: list[str] = []
    out = HlsOutput(
        "a",
        encoder.params,
        settings(tmp_path, True),
        on_change=lambda: versions.append(out.playlist_path.read_text()),
    )
    out._queue = queue.Queue(maxsize=8)
    await asyncio.to_thread(out.open)
    # 10 s of packets, encoded first, then offered in bursts of 50 (far more than the
    # queue holds) with a pause for the output to drain between them, as an encoder
    # that runs ahead in spurts would: every burst overflows, and the packets of the
    # next one get in after the gap.  (Encoding between offers gave the output thread
    # time to keep up on an idle machine, and then nothing was dropped.)
    packets = [p for tick in range(500) for p in encoder.encode(sine_frame(tick))]
    packets += encoder.flush()
    for i in range(0, len(packets), 50):
        for packet in packets[i : i + 50]:
            out.offer(packet)
        await asyncio.sleep(0.1)
    await asyncio.to_thread(out.close, True)
    assert out.dropped > 0
    final = parse_media_playlist(versions[-1])
    gaps = sum(s.discontinuity for s in final.segments)
    assert gaps >= 1
    check_run(versions, expected_gaps=gaps)
