"""The clock runner on a real asyncio loop: ticks on schedule, readers never stall it."""

from __future__ import annotations

import asyncio
import time

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from mixer_ext import metrics
from mixer_ext.core.clock import MixerClock
from mixer_ext.core.frames import TICK_SAMPLES, MixedFrame
from mixer_ext.core.mixer import Mixer
from mixer_ext.core.payload import MetadataPayload
from mixer_ext.settings import JitterBufferSize
from mixer_ext.testing.core import s16_frame, tone

T = TICK_SAMPLES


class Sink:
    def __init__(self) -> None:
        self.frames: list[MixedFrame] = []
        self.payloads: list[MetadataPayload] = []

    def on_mix(self, frame: MixedFrame) -> None:
        self.frames.append(frame)

    def on_payload(self, payload: MetadataPayload) -> None:
        self.payloads.append(payload)


class GoesSilentTrack(MediaStreamTrack):
    """Like aiortc's remote track when its sender mutes: frames on time, then recv() blocks."""

    kind = "audio"

    def __init__(self, frames: int, end_with_error: bool = False) -> None:
        super().__init__()
        self.frames = frames
        self.end_with_error = end_with_error
        self.calls = 0
        self._t0: float | None = None

    async def recv(self) -> av.AudioFrame:
        self.calls += 1
        k = self.calls - 1
        if k >= self.frames:
            if self.end_with_error:
                raise MediaStreamError
            await asyncio.Event().wait()  # silent forever
        if self._t0 is None:
            self._t0 = time.monotonic()
        await asyncio.sleep(max(0.0, self._t0 + k * 0.020 - time.monotonic()))
        return s16_frame(tone(440.0, 8000.0, k * T, T), k * T)


async def test_ticks_continue_while_a_track_is_silent_and_nothing_spins() -> None:
    mixer = Mixer(JitterBufferSize.SMALL, exclude_identity="bot")
    sink = Sink()
    clock = MixerClock(mixer, sink)
    silent = GoesSilentTrack(frames=10)
    ended = GoesSilentTrack(frames=5, end_with_error=True)
    mixer.add_participant("alice")
    clock.attach_track("alice", "TR_a", silent)
    clock.attach_track("bob", "TR_b", ended)
    task = clock.start()
    assert task.get_name() == "mixer-clock"
    readers = {t.get_name() for t in asyncio.all_tasks()}
    assert {"mixer-input:alice:TR_a", "mixer-input:bob:TR_b"} <= readers
    t0 = time.monotonic()
    cpu0 = time.process_time()
    await asyncio.sleep(1.2)
    elapsed = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    # every due tick ran (catching up if the machine is slow): none lost, none extra
    assert abs(len(sink.frames) - elapsed / 0.020) <= 3
    assert [f.pts for f in sink.frames] == [i * T for i in range(len(sink.frames))]
    assert len(sink.payloads) == len(sink.frames) // 25
    # nothing spins on the silent or the ended track
    assert silent.calls == 11 and ended.calls == 6
    assert cpu < elapsed * 0.5
    # alice's tone was mixed, then silence after her track went quiet
    audio = np.concatenate([f.samples for f in sink.frames])
    assert np.abs(audio[: 20 * T]).max() > 4000
    assert not audio[-10 * T :].any()
    assert sink.payloads[0].levels["alice"] > 7000 and sink.payloads[-1].levels["alice"] == 0
    await clock.detach_track("bob", "TR_b")
    assert mixer.input_count == 1
    await clock.stop()
    assert task.done()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("mixer-")]


async def test_a_late_loop_catches_up_without_losing_samples() -> None:
    now = [1000.0]
    mixer = Mixer(JitterBufferSize.MEDIUM)
    sink = Sink()
    clock = MixerClock(mixer, sink, clock=lambda: now[0])
    before = metrics.TICK_LATENESS.collect()[0].samples
    count0 = next(s.value for s in before if s.name.endswith("_count"))
    clock.start()
    await asyncio.sleep(0.1)
    assert len(sink.frames) == 1  # tick 0 only: the fake clock has not moved
    now[0] += 1.0  # the loop was blocked for a second
    await asyncio.sleep(0.1)
    assert len(sink.frames) == 51
    assert [f.pts for f in sink.frames] == [i * T for i in range(51)]
    assert len(sink.payloads) == 2
    assert clock.max_lateness == pytest.approx(0.98)  # tick 1 was due at +20 ms
    after = metrics.TICK_LATENESS.collect()[0].samples
    count1 = next(s.value for s in after if s.name.endswith("_count"))
    assert count1 - count0 == 51
    await clock.stop()


class BrokenSink(Sink):
    def on_mix(self, frame: MixedFrame) -> None:
        super().on_mix(frame)
        if frame.pts == 5 * T:
            raise RuntimeError("encoder bug")


async def test_a_failing_sink_or_a_replaced_track_does_not_stop_the_clock() -> None:
    mixer = Mixer(JitterBufferSize.SMALL)
    sink = BrokenSink()
    clock = MixerClock(mixer, sink)
    first = GoesSilentTrack(frames=0)
    clock.attach_track("alice", "TR_a", first)
    clock.start()
    await asyncio.sleep(0.1)
    clock.attach_track("alice", "TR_a", GoesSilentTrack(frames=0))  # replaced: old reader ends
    await asyncio.sleep(0.2)
    assert clock.sink_errors == 1
    assert [f.pts for f in sink.frames] == [i * T for i in range(len(sink.frames))]
    assert len(sink.frames) >= 10
    await clock.stop()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("mixer-")]


async def test_a_participant_who_leaves_takes_its_readers_along() -> None:
    """Leaving must not leave a reader blocked on a silent track behind (one per leave, forever)."""
    mixer = Mixer(JitterBufferSize.SMALL, exclude_identity="bot")
    clock = MixerClock(mixer, Sink())
    clock.attach_track("alice", "TR_a1", GoesSilentTrack(frames=3))
    clock.attach_track("alice", "TR_a2", GoesSilentTrack(frames=3))
    clock.attach_track("bob", "TR_b", GoesSilentTrack(frames=3))
    task = clock.start()
    try:
        await asyncio.sleep(0.2)  # every reader is now blocked in recv()

        def readers() -> set[str]:
            return {
                t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("mixer-input:")
            }

        assert readers() == {"mixer-input:alice:TR_a1", "mixer-input:alice:TR_a2",
                             "mixer-input:bob:TR_b"}  # fmt: skip
        await clock.remove_participant("alice")
        assert readers() == {"mixer-input:bob:TR_b"}
        assert list(mixer.participants) == ["bob"]
        await clock.remove_participant("alice")  # idempotent
    finally:
        await clock.stop()
    assert task.done()
