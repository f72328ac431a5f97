"""One input's jitter buffer: ordering, loss, lateness, gaps and resampling (virtual time)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from mixer_ext.core.frames import TICK_SAMPLES
from mixer_ext.core.input import Input
from mixer_ext.core.jitter import LATE_STREAK_RESYNC
from mixer_ext.settings import JitterBufferSize
from mixer_ext.testing.core import max_step, s16_frame, tone
from mixer_ext.testing.spectrum import amplitude_at

T = TICK_SAMPLES


def feed_and_pull(
    inp: Input,
    frames: list[tuple[int, float]],
    ticks: int,
    freq: float = 440.0,
    amplitude: float = 10000.0,
    tick0: int = 0,
) -> np.ndarray:
    """Push (pts, arrival s) frames of a tone in order of arrival; pull ``ticks`` ticks."""
    out = []
    pending = list(frames)
    for n in range(tick0, tick0 + ticks):
        while pending and pending[0][1] <= n * 0.020:
            pts, arrival = pending.pop(0)
            inp.push(s16_frame(tone(freq, amplitude, pts, T), pts), arrival)
        block = inp.pull()
        assert block.shape == (T, 2) and block.dtype == np.int16
        out.append(block)
    return np.concatenate(out)


def find_lag(out: np.ndarray, segment: np.ndarray, offset: int = T) -> int:
    """Where the stream's sample 0 is in ``out``, given its samples [offset, offset + len)."""
    for lag in range(len(out) - len(segment) - offset):
        if np.array_equal(out[lag + offset : lag + offset + len(segment)], segment):
            return lag
    raise AssertionError("stream not found in the output")


def steady(n: int, delay: float = 0.003) -> list[tuple[int, float]]:
    return [(k * T, k * 0.020 + delay) for k in range(n)]


def test_silence_when_nothing_arrives() -> None:
    inp = Input(JitterBufferSize.MEDIUM)
    for _ in range(10):
        assert not inp.pull().any()
    assert inp.latency_samples == 0


# the fixed depths (adaptive sizes itself: tests/core/test_jitter_adaptive.py)
@pytest.mark.parametrize(
    "size", [s for s in JitterBufferSize if s is not JitterBufferSize.ADAPTIVE]
)
def test_a_steady_stream_plays_unchanged_after_its_depth(size: JitterBufferSize) -> None:
    inp = Input(size)
    out = feed_and_pull(inp, steady(100), 100)
    ms = size.milliseconds
    # the stream's own samples, in order and bit-exact (after the 2 ms fade-in)
    ref = tone(440.0, 10000.0, 0, 60 * T)
    lag = find_lag(out, ref[T : 2 * T])
    assert lag == pytest.approx((ms + 20 + 3) * 48, abs=48)  # depth + one tick of quantisation
    assert np.array_equal(out[lag + 200 : lag + 50 * T], ref[200 : 50 * T])
    assert inp.concealed_ticks == 0 and inp.late_frames == 0 and inp.lost_frames == 0
    assert inp.latency_samples <= inp.latency_bound_samples


def test_reordered_frames_inside_the_buffer_play_in_order() -> None:
    frames = steady(60)
    # frame 20 and 21 swap; frame 30 arrives 30 ms after 31
    frames[20], frames[21] = (21 * T, 21 * 0.02 + 0.003), (20 * T, 21 * 0.02 + 0.004)
    frames[30] = (30 * T, 31 * 0.02 + 0.013)
    frames.sort(key=lambda f: f[1])
    a = feed_and_pull(Input(JitterBufferSize.MEDIUM), steady(60), 60)
    inp = Input(JitterBufferSize.MEDIUM)
    b = feed_and_pull(inp, frames, 60)
    assert np.array_equal(a, b)
    assert inp.reordered_frames == 2 and inp.lost_frames == 0 and inp.late_frames == 0


def test_a_late_frame_is_dropped_counted_and_concealed_without_a_click() -> None:
    frames = steady(80)
    frames[40] = (40 * T, 40 * 0.020 + 0.200)  # 200 ms late: far beyond 40 ms
    frames.sort(key=lambda f: f[1])
    inp = Input(JitterBufferSize.MEDIUM)
    out = feed_and_pull(inp, frames, 80)
    assert inp.late_frames == 1
    assert inp.concealed_ticks >= 1
    ref = feed_and_pull(Input(JitterBufferSize.MEDIUM), steady(80), 80)
    natural = max_step(ref[10 * T :])
    assert max_step(out[10 * T :]) <= natural * 1.1 + 2


def test_lost_frames_are_concealed_with_a_fade_not_a_hard_cut() -> None:
    frames = [f for f in steady(120) if f[0] // T not in (30, 60, 61, 62, 63, 64)]
    inp = Input(JitterBufferSize.SMALL)
    out = feed_and_pull(inp, frames, 120)
    ref = feed_and_pull(Input(JitterBufferSize.SMALL), steady(120), 120)
    natural = max_step(ref[10 * T :])
    assert inp.lost_frames == 6
    assert 2 <= inp.concealed_ticks <= 6
    assert max_step(out[10 * T :]) <= natural * 1.1 + 2
    # one lost frame: concealed (not silent) for its whole 20 ms
    diff = np.flatnonzero(np.any(out != ref, axis=1))
    hole1 = out[diff[0] : diff[0] + T, 0]
    assert np.abs(hole1).max() > 1000
    # five lost frames (100 ms): faded to silence within 60 ms, silent until the audio returns
    start2 = int(diff[np.searchsorted(diff, 50 * T)])
    gap = out[start2 : start2 + 5 * T, 0]
    assert np.abs(gap[: T // 2]).max() > 1000
    assert np.abs(gap[2 * T : 3 * T]).max() < 4000  # fading
    assert np.all(gap[3 * T + 2 : 5 * T - 2] == 0)
    assert np.array_equal(
        out[start2 + 5 * T + 200 : start2 + 8 * T], ref[start2 + 5 * T + 200 : start2 + 8 * T]
    )


def test_dtx_gap_then_resume_has_no_latency_build_up() -> None:
    # 2 s of talk, 5 s of DTX (no packets; pts jumps by the real gap), 2 s of talk
    first = steady(100)
    second = [(k * T, k * 0.020 + 0.003) for k in range(350, 450)]
    inp = Input(JitterBufferSize.MEDIUM)
    out = feed_and_pull(inp, first + second, 450)
    before = out[: 110 * T, 0]
    after = out[340 * T :, 0]
    lag_before = int(np.flatnonzero(before)[0])
    lag_after = int(np.flatnonzero(after)[0]) + 340 * T - 350 * T
    assert abs(lag_after - lag_before) <= 48
    assert np.all(out[110 * T : 350 * T] == 0)  # silence, not loss
    assert inp.lost_frames == 0 and inp.late_frames == 0


@pytest.mark.parametrize("jump", [-10_000_000, 3_000_000, 40_000])
def test_a_pts_jump_across_a_mute_resyncs_instead_of_waiting_or_dropping(jump: int) -> None:
    # a sender whose pts do not follow real time across a pause (track replaced, clock reset)
    first = steady(100)
    second = [(k * T + jump, k * 0.020 + 0.003) for k in range(200, 300)]
    inp = Input(JitterBufferSize.MEDIUM)
    out = feed_and_pull(inp, first + second, 300)
    lag_before = int(np.flatnonzero(out[:, 0])[0])
    lag_after = int(np.flatnonzero(out[150 * T :, 0])[0]) + 150 * T - 200 * T
    assert abs(lag_after - lag_before) <= 48
    assert inp.late_frames == 0
    assert inp.peak_latency_samples <= inp.latency_bound_samples


def test_a_burst_after_a_network_stall_is_played_not_buffered_forever() -> None:
    # frames 40..49 are held 150 ms by the network and then arrive all at once
    frames = [(k * T, (0.98 + 0.150 if 40 <= k < 50 else k * 0.020) + 0.003) for k in range(200)]
    frames.sort(key=lambda f: f[1])
    inp = Input(JitterBufferSize.MEDIUM)
    feed_and_pull(inp, frames, 200)
    assert inp.late_frames > 0  # those beyond 40 ms came too late
    assert inp.latency_samples <= inp.latency_bound_samples  # and no latency stayed behind


def test_any_rate_and_layout_is_resampled_to_48k_stereo_and_restamped() -> None:
    inp = Input(JitterBufferSize.SMALL)
    rate, n = 44_100, 441  # 10 ms frames of mono float
    out = []
    for k in range(300):
        t = (np.arange(n) + k * n) / rate
        x = (0.25 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
        f = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="flt", layout="mono")
        f.sample_rate = rate
        f.pts = k * n
        f.time_base = Fraction(1, rate)
        inp.push(f, k * 0.010 + 0.002)
        if k % 2 == 1:
            out.append(inp.pull())
    y = np.concatenate(out)[50 * T :]
    assert np.array_equal(y[:, 0], y[:, 1])
    assert amplitude_at(y[:, 0].astype(np.float64), 1000.0) == pytest.approx(0.25 * 32767, rel=0.02)
    assert inp.concealed_ticks == 0 and inp.lost_frames == 0 and inp.late_frames == 0
    assert max_step(y) < 0.25 * 32767 * 2 * np.pi * 1000 / 48000 * 1.1


def test_a_wrapping_32_bit_rtp_timestamp_is_unwrapped_not_a_discontinuity() -> None:
    base = (1 << 32) - 50 * T  # wraps at the 50th frame
    inp = Input(JitterBufferSize.MEDIUM)
    out = []
    for n in range(100):
        if n:  # frame k arrives 3 ms after it was sent, before tick k + 1
            k = n - 1
            pts = (base + k * T) % (1 << 32)
            inp.push(s16_frame(tone(440.0, 10000.0, k * T, T), pts), k * 0.020 + 0.003)
        out.append(inp.pull())
    ref = feed_and_pull(Input(JitterBufferSize.MEDIUM), steady(100), 100)
    assert np.array_equal(np.concatenate(out)[: 99 * T], ref[: 99 * T])
    assert inp.resyncs == 0 and inp.late_frames == 0 and inp.lost_frames == 0


def test_frames_round_tripped_through_real_opus_mix_at_their_level() -> None:
    """aiortc's own Opus encoder and decoder: the frames a remote track hands the reader."""
    from aiortc.codecs.opus import OpusDecoder, OpusEncoder
    from aiortc.jitterbuffer import JitterFrame

    enc, dec = OpusEncoder(), OpusDecoder()
    rtp0 = 3_000_000_000  # a random RTP start, as a sender picks
    inp = Input(JitterBufferSize.MEDIUM)
    out = []
    for k in range(150):
        payloads, ts = enc.encode(s16_frame(tone(1000.0, 10000.0, k * T, T), k * T))
        for p in payloads:
            for frame in dec.decode(JitterFrame(p, (rtp0 + ts) % (1 << 32))):
                assert frame.format.name == "s16" and frame.sample_rate == 48_000
                inp.push(frame, k * 0.020)
        out.append(inp.pull())
    y = np.concatenate(out)[50 * T :, 0].astype(np.float64)
    assert amplitude_at(y, 1000.0) == pytest.approx(10000.0, rel=0.05)
    assert inp.lost_frames == 0 and inp.late_frames == 0 and inp.concealed_ticks == 0


@pytest.mark.parametrize("jump", [19_200, 4_800, -19_200])
def test_a_pts_jump_while_talking_costs_a_moment_not_lasting_latency(jump: int) -> None:
    # the sender's pts jump by +-400 ms or +100 ms in the middle of continuous audio
    frames = [(k * T + (jump if k >= 100 else 0), k * 0.020 + 0.003) for k in range(300)]
    inp = Input(JitterBufferSize.MEDIUM)
    out = feed_and_pull(inp, frames, 300)
    assert inp.resyncs >= 1
    # forward: at most the first frame was too early to hold; backward: five late, then re-anchored
    assert inp.early_frames <= 1
    assert inp.late_frames == (LATE_STREAK_RESYNC if jump < 0 else 0)
    early, late = inp.early_frames, inp.late_frames
    inp.reset_peak_latency()
    later = [(k * T + jump, k * 0.020 + 0.003) for k in range(300, 400)]
    feed_and_pull(inp, later, 100, tick0=300)
    assert inp.peak_latency_samples <= inp.latency_bound_samples
    assert (inp.early_frames, inp.late_frames) == (early, late)
    # audio plays again after the jump, with no click at the jump
    assert np.abs(out[-50 * T :, 0]).min() < 200 < np.abs(out[-50 * T :, 0]).max()
    assert max_step(out[10 * T :]) <= max_step(out[10 * T : 90 * T]) * 1.5 + 2
