"""Issue 16.9: after a stall longer than ~1 s the clock re-anchors, it does not replay it.

A stall (SIGSTOP, VM steal, a blocked loop) is simulated with a fake monotonic
clock (real time plus an offset) that jumps 5 s ahead: to the clock that is a
loop that did not run for 5 s.  Before the fix the clock ran the 250 missed
ticks back to back (a burst of 5 s of silence-or-stale audio pushed through the
encoder and every output at once); now it goes on from a new anchor and counts
the resync.
This is a unit test of the clock with a fake time source (no real stall).
"""

from __future__ import annotations

import asyncio
import time

from mixer_ext.core.clock import MixerClock
from mixer_ext.core.frames import MixedFrame
from mixer_ext.core.mixer import Mixer
from mixer_ext.core.payload import MetadataPayload
from mixer_ext.settings import JitterBufferSize

STALL = 5.0


class Sink:
    def __init__(self) -> None:
        self.frames: list[MixedFrame] = []

    def on_mix(self, frame: MixedFrame) -> None:
        self.frames.append(frame)

    def on_payload(self, payload: MetadataPayload) -> None:
        pass


async def test_a_stall_is_not_replayed_tick_by_tick() -> None:
    offset = [0.0]
    sink = Sink()
    clock = MixerClock(
        Mixer(JitterBufferSize.SMALL), sink, clock=lambda: time.monotonic() + offset[0]
    )
    clock.start()
    try:
        while len(sink.frames) < 10:  # noqa: ASYNC110 - waiting on the clock's own progress
            await asyncio.sleep(0.01)
        before = len(sink.frames)
        offset[0] += STALL
        await asyncio.sleep(0.2)
        burst = len(sink.frames) - before
    finally:
        await clock.stop()
    # 0.2 s of real time is 10 ticks; replaying the stall would be 250 more
    assert burst <= 30, f"{burst} ticks ran in 0.2 s after a {STALL:.0f} s stall"
    assert clock.resyncs == 1
