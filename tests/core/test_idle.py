"""Per-tick work follows who is talking (issue 27.2): an input with nothing to play is O(1).

Virtual time, real ``Mixer`` and ``Input``s.  Besides a talker, a room holds inputs
with nothing to play: one that talked and stopped (drained, as in a DTX pause), one
muted, one that never sent anything.  What must hold: they are never pulled,
concealed or stacked into the mix once idle (counted with a spy on the instances:
this is a unit test of the core's own calls, nothing external is replaced), the mix
is bit-for-bit the talker's alone, their levels are 0 / -1 by state, and a drained
one that talks again is heard at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixer_ext.core.frames import SAMPLE_RATE, TICK_SAMPLES
from mixer_ext.core.input import Input
from mixer_ext.core.mixer import Mixer
from mixer_ext.settings import JitterBufferSize
from mixer_ext.sim.preencoded import encode_tone
from mixer_ext.testing.core import s16_frame, tone
from mixer_ext.testing.spectrum import amplitude_at

T = TICK_SAMPLES


@dataclass(frozen=True)
class Codec:  # the two fields of aiortc's RTCRtpCodecParameters the input reads
    name: str = "opus"
    clockRate: int = SAMPLE_RATE


def feed(inp: Input, k: int, tick: int, freq: float) -> None:
    pts = k * T
    inp.push(s16_frame(tone(freq, 5000.0, pts, T), pts), tick * 0.020 - 0.005)


def spy_pulls(inp: Input) -> list[int]:
    """Count ``pull``/``_conceal`` calls on this one instance."""
    calls = [0, 0]
    pull, conceal = inp.pull, inp._conceal

    def counted_pull(*args: object, **kw: object) -> object:
        calls[0] += 1
        return pull(*args, **kw)  # type: ignore[arg-type]

    def counted_conceal(*args: object, **kw: object) -> object:
        calls[1] += 1
        return conceal(*args, **kw)  # type: ignore[arg-type]

    inp.pull = counted_pull  # type: ignore[method-assign]
    inp._conceal = counted_conceal  # type: ignore[method-assign]
    return calls


def test_idle_inputs_cost_no_pull_no_concealment_and_no_share_of_the_mix() -> None:
    alone = Mixer(JitterBufferSize.MEDIUM)
    solo = alone.add_input("alice", "TR_a")
    room = Mixer(JitterBufferSize.MEDIUM)
    talker = room.add_input("alice", "TR_a")
    drained = room.add_input("bob", "TR_b")
    muted = room.add_input("carol", "TR_c")
    absent = room.add_input("dave", "TR_d")
    room.set_enabled("carol", "TR_c", False)
    opus = encode_tone(2500.0, 0.1).payloads
    spies = {"drained": spy_pulls(drained), "muted": spy_pulls(muted), "absent": spy_pulls(absent)}
    mixes: list[np.ndarray] = []
    solo_mixes: list[np.ndarray] = []
    payloads = []
    for tick in range(150):
        feed(talker, tick, tick, 440.0)
        feed(solo, tick, tick, 440.0)
        if tick < 20:  # bob talks for 0.4 s, then stops (a DTX pause: nothing arrives)
            feed(drained, tick, tick, 1000.0)
        # carol's Opus payloads arrive (the connectors' encoded path), muted
        muted.push_encoded(Codec(), tick, tick * T, opus[tick % len(opus)], tick * 0.020)
        frame, payload = room.tick()
        mixes.append(frame.samples)
        solo_mixes.append(alone.tick()[0].samples)
        if payload is not None:
            payloads.append(payload)
        if tick == 40:
            assert drained.idle and muted.idle and absent.idle
            before = {k: list(v) for k, v in spies.items()}
    # from tick 41 on none of them was pulled or concealed
    assert {k: list(v) for k, v in spies.items()} == before
    assert before["muted"] == [0, 0] and before["absent"] == [0, 0]
    # the mix once bob's fade is over is exactly alice's alone
    assert np.array_equal(np.concatenate(mixes[41:]), np.concatenate(solo_mixes[41:]))
    # levels by state: bob 0 (enabled, silent), carol -1 (muted), dave 0 (no audio yet)
    last = payloads[-1].levels
    assert last == {"alice": last["alice"], "bob": 0, "carol": -1, "dave": 0}
    assert last["alice"] > 4000
    assert payloads[0].levels["bob"] > 4000  # he was metered while he talked

    # bob talks again after the pause: heard at once, his own level back
    out = []
    for tick in range(150, 200):
        feed(talker, tick, tick, 440.0)
        feed(drained, tick, tick, 1000.0)
        out.append(room.tick()[0].samples)
    assert not drained.idle
    heard = np.concatenate(out[10:])[:, 0].astype(np.float64)
    assert amplitude_at(heard, 1000.0) > 4500 and amplitude_at(heard, 440.0) > 4500
