"""Long runs in virtual time: drift, loss and jitter never make latency or memory grow.

Two senders drift by +200 and -200 ppm against the mixer clock, lose 5 % of
their frames at random and are delayed by 10 ms + uniform 0..40 ms of
jitter, into the default (``medium``, 40 ms) jitter buffer.

* ``test_24_hours``: the full 24 h, through the same code with 200 ms ticks
  and 200 ms sender frames (a 20 ms tick costs ~45 us of Python per tick
  here, so 4.32 M of them would take minutes; every time constant of the
  buffer is in samples and scales with the tick).  About 35 s on this machine.
* ``test_20_minutes_at_the_real_tick``: the same scenario at the real 20 ms
  tick and 20 ms frames, where reordering happens too (jitter > frame).
"""

from __future__ import annotations

import gc
import os
import time

import numpy as np
import pytest

from mixer_ext.core.frames import SAMPLE_RATE, TICKS_PER_PAYLOAD, MixedFrame
from mixer_ext.core.mixer import Mixer
from mixer_ext.core.payload import MetadataPayload
from mixer_ext.settings import JitterBufferSize
from mixer_ext.testing.core import Sender, longrun_senders, simulate

pytestmark = pytest.mark.slow


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_scenario(seconds: float, tick: int) -> None:
    mixer = Mixer(JitterBufferSize.MEDIUM, exclude_identity="audio-mixer-v1", tick_samples=tick)
    senders = longrun_senders(tick)
    ticks = round(seconds * SAMPLE_RATE / tick)
    checkpoint = ticks // 24  # "1 h" into the run: after start-up allocations
    state = {"next_pts": 0, "seq": 0, "good": 0, "windows": 0}
    memory: dict[str, int] = {}

    def on_tick(n: int, frame: MixedFrame, payload: MetadataPayload | None) -> None:
        assert frame.pts == state["next_pts"]
        state["next_pts"] += len(frame.samples)
        if payload is not None:
            assert payload.seq == state["seq"]
            assert payload.pts == (n + 1) * tick  # the end of its window (issue 26)
            assert set(payload.levels) == {"fast", "slow"}
            state["seq"] += 1
            state["windows"] += 1
            if payload.levels["fast"] == 8000 and payload.levels["slow"] == 12000:
                state["good"] += 1
        if n == checkpoint:
            gc.collect()
            memory["rss"], memory["objects"] = rss_bytes(), len(gc.get_objects())

    total = simulate(mixer, senders, seconds, on_tick=on_tick)

    # exactly `seconds` of output, every pts in place, every payload in place
    assert total == round(seconds * SAMPLE_RATE)
    assert state["next_pts"] == total
    assert state["seq"] == ticks // TICKS_PER_PAYLOAD
    assert state["good"] >= 0.9 * state["windows"]  # levels are the talkers' own peaks

    drift_samples = 200e-6 * seconds * SAMPLE_RATE
    for st in mixer.input_stats():
        inp = st.input
        # the buffered latency stayed within its bound at every tick of the run
        assert 0 < inp.peak_latency_samples <= inp.latency_bound_samples, st.identity
        assert inp.late_frames == 0
        received = inp.frames_received
        assert 0.93 < received / (received + inp.lost_frames) < 0.97  # ~5 % lost, counted
        net = inp.samples_dropped - inp.samples_inserted
        expected = drift_samples if st.identity == "fast" else -drift_samples
        assert abs(net - expected) < 0.02 * drift_samples + 2400, (st.identity, net, expected)

    gc.collect()
    assert rss_bytes() - memory["rss"] < 4 * 1024 * 1024
    assert len(gc.get_objects()) - memory["objects"] < 200


def test_24_hours() -> None:
    t0 = time.monotonic()
    run_scenario(86_400.0, tick=9600)
    print(f"24 h of virtual time in {time.monotonic() - t0:.1f} s")


def test_20_minutes_at_the_real_tick() -> None:
    t0 = time.monotonic()
    run_scenario(1200.0, tick=960)
    print(f"20 min at the 20 ms tick in {time.monotonic() - t0:.1f} s")


def test_sender_clock_model() -> None:
    """The simulated senders really drift: frames sent per mixer hour differ by 200 ppm."""
    rng = np.random.default_rng(0)
    fast = Sender("f", 1000.0, 1.0, ppm=200)
    slow = Sender("s", 1000.0, 1.0, ppm=-200)
    nf = len(fast.schedule(3600.0, rng)[0])
    ns = len(slow.schedule(3600.0, rng)[0])
    assert nf - 180_000 == 36 and 180_000 - ns == 36
