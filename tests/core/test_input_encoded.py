"""The input's encoded path (issue 13.1): RTP payloads in, decoded in the tick, real libopus.

No network here: the packets are real Opus payloads (``encode_tone``, libopus) with the
sequence numbers and timestamps an RTP receiver hands over, one per 20 ms tick, each
stamped with its arrival on the mixer timeline; the tick decodes and pulls.  Checked
by spectrum and level, and by the counters the metrics export.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from mixer_ext.core.frames import SAMPLE_RATE, TICK_SAMPLES
from mixer_ext.core.input import PLC_MAX_FRAMES, Input
from mixer_ext.core.mixer import Mixer
from mixer_ext.settings import JitterBufferSize
from mixer_ext.sim.preencoded import encode_tone
from mixer_ext.testing.spectrum import peak_hz


@dataclass(frozen=True)
class Codec:  # the two fields of aiortc's RTCRtpCodecParameters the input reads
    name: str = "opus"
    clockRate: int = SAMPLE_RATE


OPUS = Codec()
TONE = 440.0


def run(
    inp: Input,
    payloads: list[bytes],
    ticks: int,
    *,
    seq0: int = 1000,
    ts0: int = 123_456,
    skip: frozenset[int] = frozenset(),
    order: list[int] | None = None,
    pull_every: int = 1,
) -> np.ndarray:
    """Packet k (seq0 + k, ts0 + 960 k) arrives at tick k; returns every pulled sample (mono)."""
    out: list[np.ndarray] = []
    sequence = order if order is not None else list(range(ticks))
    for tick, k in enumerate(sequence):
        if k not in skip:
            seq = (seq0 + k) & 0xFFFF
            ts = (ts0 + k * TICK_SAMPLES) & 0xFFFFFFFF
            inp.push_encoded(OPUS, seq, ts, payloads[k % len(payloads)], tick * 0.020)
        if (tick + 1) % pull_every == 0:
            for _ in range(pull_every):
                inp.decode_pending()
                out.append(inp.pull().astype(np.float64).mean(axis=1))
    return np.concatenate(out)


def test_opus_payloads_decode_in_the_tick_to_the_tone_mono_decoder() -> None:
    loop = encode_tone(TONE, 0.3, channels=1)
    inp = Input(JitterBufferSize.MEDIUM)
    x = run(inp, loop.payloads, 100)
    steady = x[SAMPLE_RATE // 2 :]
    assert abs(peak_hz(steady) - TONE) < 3
    assert 0.25 * 32767 < np.abs(steady).max() < 0.35 * 32767
    assert inp.decoded_channels == 1, "a mono sender gets a mono decoder"
    assert (inp.lost_frames, inp.late_frames, inp.plc_frames, inp.malformed_frames) == (0, 0, 0, 0)
    assert inp.frames_received == 100


def test_a_mono_sender_is_buffered_mono_and_upmixed_only_in_the_mix() -> None:
    """Issue 13.1: the jitter buffer holds one channel; the mix hears it in both ears."""
    loop = encode_tone(TONE, 0.3, channels=1)
    inp = Input(JitterBufferSize.MEDIUM)
    mono = run(inp, loop.payloads, 30)
    assert inp.channels == 1 and inp._ring.shape[1] == 1  # half the buffer work
    assert inp.pull().shape == (TICK_SAMPLES, 1)
    mixer = Mixer(JitterBufferSize.MEDIUM)
    mixer.add_participant("alice")
    mixed = mixer.add_input("alice", "MT1")
    ticks = []
    for k in range(60):
        mixed.push_encoded(OPUS, 1000 + k, 960 * k, loop.payloads[k % len(loop.payloads)], k * 0.02)
        frame, _ = mixer.tick()
        ticks.append(frame.samples)
    assert mixed.channels == 1
    out = np.concatenate(ticks)[SAMPLE_RATE // 2 :].astype(np.int32)
    assert np.array_equal(out[:, 0], out[:, 1]), "a mono participant is the same in both ears"
    assert abs(peak_hz(out[:, 0].astype(np.float64)) - TONE) < 3
    assert 0.25 * 32767 < np.abs(out).max() < 0.35 * 32767  # at its own level, not halved
    assert abs(np.abs(mono[SAMPLE_RATE // 2 :]).max() - np.abs(out[:, 0]).max()) < 0.02 * 32767


def test_a_stereo_sender_gets_a_stereo_decoder() -> None:
    loop = encode_tone(TONE, 0.3, channels=2)
    inp = Input(JitterBufferSize.MEDIUM)
    x = run(inp, loop.payloads, 60)
    assert inp.decoded_channels == 2 and inp.channels == 2
    assert abs(peak_hz(x[SAMPLE_RATE // 2 :]) - TONE) < 3


def test_dtx_payloads_are_never_decoded_and_cost_no_samples() -> None:
    loop = encode_tone(TONE, 0.3)
    assert len(loop.silence) <= 3
    inp = Input(JitterBufferSize.MEDIUM)
    x = run(inp, [loop.silence], 50)
    assert inp.dtx_frames == 50
    assert inp.frames_received == 0 and inp._opus is None, "DTX frames reached the decoder"
    assert not x.any()
    assert inp.lost_frames == 0


def test_one_lost_packet_is_concealed_by_the_decoder_not_faded() -> None:
    loop = encode_tone(TONE, 0.3)
    inp = Input(JitterBufferSize.MEDIUM)
    x = run(inp, loop.payloads, 100, skip=frozenset({60}))
    assert inp.plc_frames == 1 and inp.lost_frames == 1
    assert inp.concealed_ticks == 0, "the buffer's fade ran: PLC should have filled the hole"
    # no dropout anywhere once playing: every tick keeps most of the tone's level
    ticks = x[SAMPLE_RATE // 2 :].reshape(-1, TICK_SAMPLES)
    rms = np.sqrt((ticks**2).mean(axis=1))
    assert rms.min() > 0.5 * np.median(rms), rms.round()


def test_a_long_loss_gets_plc_then_the_fade() -> None:
    loop = encode_tone(TONE, 0.3)
    inp = Input(JitterBufferSize.MEDIUM)
    run(inp, loop.payloads, 100, skip=frozenset(range(50, 55)))
    assert inp.plc_frames == PLC_MAX_FRAMES
    assert inp.lost_frames == 5  # 3 by PLC, the other 2 seen by the buffer
    assert inp.concealed_ticks >= 1


def test_reordered_packets_decode_in_sequence_order() -> None:
    loop = encode_tone(TONE, 0.3)
    inp = Input(JitterBufferSize.MEDIUM)
    order = list(range(100))
    order[40], order[41] = order[41], order[40]  # 41 arrives before 40, in the same tick pair
    x = run(inp, loop.payloads, 100, order=order, pull_every=2)
    assert (inp.late_frames, inp.concealed_ticks) == (0, 0)
    assert abs(peak_hz(x[SAMPLE_RATE // 2 :]) - TONE) < 3


def test_sequence_and_timestamp_wraps_are_continuous() -> None:
    loop = encode_tone(TONE, 0.3)
    inp = Input(JitterBufferSize.MEDIUM)
    run(inp, loop.payloads, 100, seq0=0xFFFF - 40, ts0=(1 << 32) - 40 * TICK_SAMPLES)
    assert (inp.lost_frames, inp.late_frames, inp.resyncs, inp.plc_frames) == (0, 0, 0, 0)
    assert inp.frames_received == 100


def test_malformed_payloads_are_counted_and_the_stream_goes_on() -> None:
    loop = encode_tone(TONE, 0.3)
    inp = Input(JitterBufferSize.MEDIUM)
    bad = bytes([0xFF]) + b"\xff" * 40  # code 3 with 63 frames of 20 ms: libopus refuses it
    payloads = [*loop.payloads]
    x = run(inp, payloads, 40)
    for k in range(40, 50):
        inp.push_encoded(OPUS, 1000 + k, 123_456 + k * TICK_SAMPLES, bad, k * 0.020)
        inp.decode_pending()
        inp.pull()
    assert inp.malformed_frames == 10
    assert abs(peak_hz(x[SAMPLE_RATE // 4 :]) - TONE) < 3


@pytest.mark.parametrize("enabled", [True, False])
def test_the_mixer_decodes_an_enabled_input_and_drops_a_muted_ones_payloads(enabled: bool) -> None:
    loop = encode_tone(TONE, 0.3)
    mixer = Mixer(JitterBufferSize.MEDIUM)
    inp = mixer.add_input("alice", "MT1")
    mixer.set_enabled("alice", "MT1", enabled)
    mixed: list[np.ndarray] = []
    for k in range(60):
        inp.push_encoded(OPUS, k, k * TICK_SAMPLES, loop.payloads[k % len(loop.payloads)], None)
        frame, _ = mixer.tick()
        mixed.append(frame.samples[:, 0].astype(np.float64))
    x = np.concatenate(mixed)[SAMPLE_RATE // 2 :]
    if enabled:
        assert abs(peak_hz(x) - TONE) < 3 and inp.frames_received == 60
    else:
        assert not x.any()
        assert inp.frames_received == 0 and inp.skipped_frames >= 59
