"""Per-track recordings (issue 23.1): real Opus into .mka, gaps kept as time, crash-safe.

The payloads are real libopus output (``encode_tone``); the files are read back with
FFmpeg's own demuxer and Opus decoder (PyAV), the tone checked by FFT per window.
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

from mixer_ext.roomserver.recorder import (
    REANCHOR_SECONDS,
    RecordingTags,
    RecordingTimeline,
    TrackRecorder,
    opus_head,
    read_tags,
)
from mixer_ext.sim.preencoded import encode_tone
from mixer_ext.testing.timeline import decode_timeline, tone_level
from tests.support.env import ROOT

FRAME = 960


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_timeline_keeps_rtp_gaps_and_unwraps() -> None:
    tl = RecordingTimeline()
    base = (1 << 32) - 2 * FRAME  # wraps after two packets
    assert tl.place(base, 0.0) == 0
    assert tl.place(base + FRAME, 0.02) == FRAME
    assert tl.place((base + 2 * FRAME) % (1 << 32), 0.04) == 2 * FRAME
    # DTX: 0.4 s without packets, the timestamps jump over it
    assert tl.place((base + 22 * FRAME) % (1 << 32), 0.44) == 22 * FRAME
    # a late reordered packet and a duplicate are dropped
    assert tl.place((base + 21 * FRAME) % (1 << 32), 0.45) is None
    assert tl.place((base + 22 * FRAME) % (1 << 32), 0.45) is None
    assert tl.late == 2


def test_timeline_places_by_arrival_when_the_sender_clock_stood_still() -> None:
    tl = RecordingTimeline()
    assert tl.place(5000, 10.0) == 0
    assert tl.place(5000 + FRAME, 10.02) == FRAME
    # the sender paused 5 s and its timestamps resumed where they were
    gap = 5.0
    pts = tl.place(5000 + 2 * FRAME, 10.04 + gap)
    assert pts is not None and abs(pts - round((0.04 + gap) * 48_000)) <= 1
    assert tl.reanchored == 1
    # and continues by RTP from the new anchor
    assert tl.place(5000 + 3 * FRAME, 10.06 + gap) == pts + FRAME
    assert gap > REANCHOR_SECONDS


def test_opus_head_is_rfc7845() -> None:
    head = opus_head(2)
    assert head[:8] == b"OpusHead" and len(head) == 19 and head[9] == 2
    with pytest.raises(ValueError, match="channels"):
        opus_head(3)


def test_recording_decodes_to_its_tone_with_gaps_kept(tmp_path: Path) -> None:
    """2 s of tone, 1.5 s DTX gap (no packets), 1 s muted-by-arrival gap, 2 s of tone."""
    loop = encode_tone(440, channels=1)
    clock = FakeClock()
    path = tmp_path / "RT1.mka"
    rec = TrackRecorder(
        path,
        RecordingTags(room_sid="RM1", track_name="mic", participant="alice"),
        room_start=clock.now - 2.5,
        clock=clock,
    )
    ts = 1234
    n = 0

    def send(frames: int) -> None:
        nonlocal ts, n
        for _ in range(frames):
            rec.push(loop.payloads[n % len(loop.payloads)], ts)
            ts += FRAME
            n += 1
            clock.now += 0.02

    send(100)  # 0..2 s
    ts += 75 * FRAME  # DTX: 1.5 s without packets, timestamps running
    clock.now += 1.5
    send(100)  # 3.5..5.5 s
    rec.close()
    result = rec.join(10)
    assert result is not None and result.error is None
    assert result.packets == 200 and result.dropped == 0
    assert abs(result.duration - 5.5) < 0.03
    tags = read_tags(path)
    assert tags["ROOM_SID"] == "RM1" and tags["TRACK_NAME"] == "mic"
    assert tags["OFFSET_MS"] == "2500"
    with av.open(str(path)) as c:
        assert c.streams.audio[0].codec_context.name == "opus"
    pcm = decode_timeline(path)
    assert abs(len(pcm) / 48_000 - 5.5) < 0.05
    assert tone_level(pcm, 440, 0.2, 1.9) > 0.2
    assert tone_level(pcm, 440, 2.2, 3.3) < 0.01  # the gap is silence, and is there
    assert tone_level(pcm, 440, 3.7, 5.4) > 0.2


def test_a_full_queue_drops_the_newest_and_never_blocks(tmp_path: Path) -> None:
    loop = encode_tone(440, channels=1)
    clock = FakeClock()
    rec = TrackRecorder(
        tmp_path / "x.mka", RecordingTags(), room_start=0.0, clock=clock, queue_packets=5
    )
    t0 = time.monotonic()
    for i in range(5000):
        rec.push(loop.payloads[i % len(loop.payloads)], i * FRAME)
        clock.now += 0.02
    assert time.monotonic() - t0 < 2.0  # never waited for the writer
    rec.close()
    result = rec.join(20)
    assert result is not None and result.error is None
    assert result.packets + result.dropped == 5000
    assert result.dropped == rec.dropped


def test_unwritable_directory_fails_that_recording_only(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = []
    rec = TrackRecorder(
        blocker / "sub" / "x.mka",
        RecordingTags(),
        room_start=0.0,
        clock=FakeClock(),
        on_done=done.append,
    )
    rec.push(encode_tone(440).payloads[0], 0)
    rec.close()
    result = rec.join(10)
    assert result is not None and result.error is not None
    assert done == [result]


FED = 4.0


@pytest.mark.slow
def test_a_sigkilled_recorder_leaves_a_file_that_decodes_to_its_last_second(
    tmp_path: Path,
) -> None:
    """A child records a real-time tone; SIGKILL after FED s; the file still plays."""
    path = tmp_path / "killed.mka"
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from mixer_ext.roomserver.recorder import RecordingTags, TrackRecorder
        from mixer_ext.sim.preencoded import encode_tone

        loop = encode_tone(660, channels=1)
        start = time.monotonic()
        rec = TrackRecorder(Path({str(path)!r}), RecordingTags(track_name="t"),
                            room_start=start, clock=time.monotonic)
        print("started", flush=True)
        n = 0
        while True:
            rec.push(loop.payloads[n % len(loop.payloads)], n * 960)
            n += 1
            time.sleep(max(0.0, start + n * 0.02 - time.monotonic()))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        t0 = time.monotonic()
        time.sleep(FED)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        ran = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    pcm = decode_timeline(path)
    seconds = len(pcm) / 48_000
    # everything up to about the last cluster (1 s) decodes
    assert seconds >= ran - 2.0, f"only {seconds:.2f} s of {ran:.2f} s decodable"
    assert tone_level(pcm, 660, 0.1, seconds - 0.1) > 0.2
