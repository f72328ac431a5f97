"""The mix, the limiter, the level meter and the payload timeline (virtual time, no I/O)."""

from __future__ import annotations

import numpy as np
import pytest

from mixer_ext.core.frames import TICK_SAMPLES, TICKS_PER_PAYLOAD
from mixer_ext.core.input import Input
from mixer_ext.core.levels import LevelMeter, peak_of
from mixer_ext.core.mixer import Limiter, Mixer, forward_min
from mixer_ext.core.payload import MetadataPayload
from mixer_ext.settings import JitterBufferSize
from mixer_ext.testing.core import max_step, s16_frame, tone
from mixer_ext.testing.spectrum import amplitude_at

T = TICK_SAMPLES


class Feeder:
    """Feeds one input a tone on time, one 20 ms frame per tick (arrival 5 ms before its tick)."""

    def __init__(self, inp: Input, freq: float, amplitude: float, tick0: int) -> None:
        self.inp, self.freq, self.amplitude, self.tick0 = inp, freq, amplitude, tick0
        self.k = 0

    def feed(self, tick: int) -> None:
        pts = self.k * T
        self.inp.push(s16_frame(tone(self.freq, self.amplitude, pts, T), pts), tick * 0.020 - 0.005)
        self.k += 1


def run(
    mixer: Mixer, feeders: list[Feeder], ticks: int
) -> tuple[np.ndarray, list[MetadataPayload]]:
    out, payloads = [], []
    for _ in range(ticks):
        t = mixer.tick_index
        for f in feeders:
            f.feed(t)
        frame, payload = mixer.tick()
        assert frame.pts == t * T
        assert frame.samples.shape == (T, 2) and frame.samples.dtype == np.int16
        out.append(frame.samples)
        if payload is not None:
            payloads.append(payload)
    return np.concatenate(out), payloads


def test_three_sines_are_all_in_the_mix_at_their_levels() -> None:
    mixer = Mixer(JitterBufferSize.SMALL, exclude_identity="audio-mixer-v1")
    tones = {"alice": (440.0, 6000.0), "bob": (1000.0, 3000.0), "carol": (2500.0, 9000.0)}
    feeders = [Feeder(mixer.add_input(who, f"TR_{who}"), f, a, 0) for who, (f, a) in tones.items()]
    out, payloads = run(mixer, feeders, 150)
    steady = out[50 * T :, 0].astype(np.float64)  # 2 s after the buffers settled
    for freq, amp in tones.values():
        assert amplitude_at(steady, freq) == pytest.approx(amp, rel=0.03)
    assert amplitude_at(steady, 1700.0) < 30  # nothing else
    # each participant's own peak, before mixing
    last = payloads[-1].levels
    for who, (_, amp) in tones.items():
        assert abs(last[who] - amp) <= 1
    assert mixer.limiter.min_gain == 1.0  # 18000 peak: never limited


def test_payloads_every_25_ticks_with_seq_rising_by_one_stamped_at_window_end() -> None:
    mixer = Mixer(JitterBufferSize.MEDIUM, exclude_identity="bot")
    mixer.add_participant("bot")
    mixer.add_participant("dave")  # present without any track
    got: list[tuple[int, MetadataPayload]] = []
    for n in range(1, 25 * 40 + 1):
        _, payload = mixer.tick()
        if payload is not None:
            got.append((n, payload))
    assert [n for n, _ in got] == list(range(25, 1001, 25))
    assert [p.seq for _, p in got] == list(range(40))
    # stamped with the end of the window each describes (issue 26)
    assert [p.pts for _, p in got] == [(i + 1) * TICKS_PER_PAYLOAD * T for i in range(40)]
    assert all(p.levels == {"dave": -1} for _, p in got)
    assert got[0][1].to_json() == '{"s":0,"p":{"dave":{"v":-1}}}'
    with pytest.raises(ValueError):
        mixer.add_input("bot", "TR_x")


def test_v_and_minus_one_follow_mute_and_unmute_exactly() -> None:
    mixer = Mixer(JitterBufferSize.SMALL)
    a = Feeder(mixer.add_input("alice", "TR_a"), 440.0, 12000.0, 0)
    b = Feeder(mixer.add_input("bob", "TR_b"), 880.0, 7000.0, 0)
    _, p0 = run(mixer, [a, b], 50)  # windows 0, 1
    assert p0[1].levels == {"alice": 12000, "bob": 7000}
    mixer.set_enabled("bob", "TR_b", False)  # at a window boundary
    _, p1 = run(mixer, [a, b], 50)  # windows 2, 3
    assert [p.levels["bob"] for p in p1] == [-1, -1]
    assert [p.levels["alice"] for p in p1] == [12000, 12000]
    run(mixer, [a, b], 10)
    mixer.set_enabled("bob", "TR_b", True)  # 10 ticks into window 4
    _, p2 = run(mixer, [a, b], 40)  # rest of window 4 and window 5
    assert [p.levels["bob"] for p in p2] == [7000, 7000]
    mixer.set_enabled("alice", "TR_a", False)
    mixer.set_enabled("alice", "TR_a", True)  # muted and unmuted before any tick: no gap
    _, p3 = run(mixer, [a, b], 25)
    assert p3[0].levels == {"alice": 12000, "bob": 7000}
    assert [p.seq for p in p0 + p1 + p2 + p3] == [0, 1, 2, 3, 4, 5, 6]
    # the level is the participant's own peak, whatever the others do: one quiet, one loud
    mixer.remove_participant("bob")
    _, p4 = run(mixer, [a], 25)
    assert p4[0].levels == {"alice": 12000}


def test_mute_unmute_and_leaving_do_not_click() -> None:
    mixer = Mixer(JitterBufferSize.OFF)
    a = Feeder(mixer.add_input("alice", "TR_a"), 440.0, 20000.0, 0)
    out0, _ = run(mixer, [a], 20)
    natural = max_step(out0[5 * T :])
    mixer.set_enabled("alice", "TR_a", False)
    out1, _ = run(mixer, [a], 5)
    mixer.set_enabled("alice", "TR_a", True)
    out2, _ = run(mixer, [a], 5)
    mixer.remove_participant("alice")
    out3, _ = run(mixer, [], 5)
    whole = np.concatenate((out0, out1, out2, out3))
    assert max_step(whole[5 * T :]) <= natural + 2
    assert np.all(out1[2 * T :] == 0) and np.all(out3[T + 96 :] == 0)
    assert mixer.participant_count == 0 and mixer.input_count == 0


def test_single_input_below_the_limit_passes_at_unity_gain() -> None:
    lim = Limiter()
    rng = np.random.default_rng(3)
    x = rng.integers(-32768, 32768, (200 * T, 2)).astype(np.int16)
    x[x == -32768] = -32767
    out = np.concatenate([lim.process(x[i * T : (i + 1) * T].astype(np.int32)) for i in range(200)])
    d = lim.lookahead
    assert np.array_equal(out[d:], x[:-d])  # bit-exact, 2 ms later
    assert lim.min_gain == 1.0


def test_loud_sum_is_limited_without_wrap_around_or_clipping() -> None:
    mixer = Mixer(JitterBufferSize.OFF)
    feeders = [
        Feeder(mixer.add_input(f"p{i}", "TR"), 400.0, 30000.0, 0) for i in range(4)
    ]  # in phase: the sum peaks at 120000, far beyond int16
    out, payloads = run(mixer, feeders, 150)
    steady = out[50 * T :].astype(np.int64)
    assert int(np.abs(steady).max()) <= 32767
    # no wrap-around: the output follows the sign of the tone everywhere it is not tiny
    ref = np.sin(
        2 * np.pi * 400 * (np.arange(len(steady)) - 96) / 48000 + 2 * np.pi * 400 * 50 * T / 48000
    )
    big = np.abs(ref) > 0.2
    assert np.all(np.sign(steady[big, 0]) == np.sign(ref[big]))
    # no hard clip: a clipped sine is flat at the top and full of odd harmonics
    sig = steady[:, 0].astype(np.float64)
    fundamental = amplitude_at(sig, 400.0)
    assert fundamental > 20000
    for h in (1200.0, 2000.0, 2800.0):
        assert amplitude_at(sig, h) < fundamental * 0.01
    top = np.abs(sig) >= 32000
    flat = top[1:] & top[:-1] & (sig[1:] == sig[:-1])
    assert int(flat.sum()) < 10  # a hard clip holds the top for many samples per period
    assert 0.2 < mixer.limiter.min_gain < 0.3
    assert payloads[-1].levels["p0"] == 30000  # levels are before the mix


def test_level_meter() -> None:
    m = LevelMeter()
    assert m.take() == -1
    m.update(np.array([[3, -7], [2, 1]], np.int16))
    m.update(np.array([[-32768, 0]], np.int16))
    assert m.take() == 32767
    m.add_peak(0)
    assert m.take() == 0
    assert peak_of(np.zeros((0, 2), np.int16)) == 0


def test_a_participant_who_joins_starts_at_the_current_tick() -> None:
    mixer = Mixer(JitterBufferSize.SMALL)
    a = Feeder(mixer.add_input("alice", "TR_a"), 440.0, 5000.0, 0)
    run(mixer, [a], 60)  # into window 2
    mixer.add_participant("bob")
    _, p = run(mixer, [a], 15)  # completes window 2
    assert p[-1].levels == {"alice": 5000, "bob": -1}
    b = Feeder(mixer.add_input("bob", "TR_b"), 1500.0, 9000.0, mixer.tick_index)
    out, p = run(mixer, [a, b], 50)
    # bob's own pts start at 0, but his audio plays from the tick he joined (+ his 20 ms
    # buffer + a tick): not before, and fully after
    mix = out[:, 0].astype(np.float64)
    assert amplitude_at(mix[: 2 * T], 1500.0) < 200
    assert amplitude_at(mix[: 2 * T], 440.0) == pytest.approx(5000.0, rel=0.1)
    assert amplitude_at(mix[20 * T :], 1500.0) == pytest.approx(9000.0, rel=0.05)
    assert p[-1].levels == {"alice": 5000, "bob": 9000}
    assert mixer.participants == ["alice", "bob"] and mixer.participant_count == 2
    mixer.remove_input("bob", "TR_b")
    mixer.remove_input("bob", "TR_b")  # idempotent
    _, p = run(mixer, [a], 25)
    assert p[-1].levels == {"alice": 5000, "bob": -1}
    stats = mixer.input_stats()
    assert [(s.identity, s.track_sid, s.enabled) for s in stats] == [("alice", "TR_a", True)]
    assert stats[0].input.late_frames == 0 and stats[0].input.latency_seconds > 0


def test_forward_min_is_the_sliding_minimum() -> None:
    """The limiter's look-ahead minimum by doubling equals the plain sliding minimum."""
    rng = np.random.default_rng(27)
    for n, width in [(1, 1), (10, 10), (97, 97), (300, 97), (1000, 64), (1000, 65), (999, 3)]:
        values = rng.random(n)
        plain = np.lib.stride_tricks.sliding_window_view(values, width).min(axis=1)
        assert np.array_equal(forward_min(values, width), plain), (n, width)
