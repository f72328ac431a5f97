"""Audio tracks of the embedded room: fan-out of a published track, and muting.

``TrackFanout`` reads one published (remote) track for as long as it lives,
whatever the number of subscribers, so aiortc's unbounded receive queue never
grows, and copies each frame to every ``RelayedTrack``.  A relayed track holds
at most ``RELAY_QUEUE_FRAMES`` frames and drops the oldest when its sender
falls behind: for live audio late is worse than lost.

``MutingTrack`` wraps a participant's own track and sends silence of the same
format while disabled, so the receiver's timeline keeps going.

"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from mixer_ext.core.frames import SAMPLE_RATE, TICK_SAMPLES
from mixer_ext.tasks import stop_tasks

log = logging.getLogger(__name__)

#: 200 ms of 20 ms frames: how far a subscriber may fall behind before frames drop
RELAY_QUEUE_FRAMES = 10
AUDIO_PTIME = TICK_SAMPLES / SAMPLE_RATE
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


class RelayedTrack(MediaStreamTrack):
    """One subscriber's copy of a published track (bounded, drops the oldest)."""

    kind = "audio"

    def __init__(self, fanout: TrackFanout) -> None:
        super().__init__()
        self._fanout: TrackFanout | None = fanout
        self._queue: asyncio.Queue[av.AudioFrame | None] = asyncio.Queue(RELAY_QUEUE_FRAMES)
        self.dropped = 0

    def _push(self, frame: av.AudioFrame | None) -> None:
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self.dropped += 1
        self._queue.put_nowait(frame)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            if self._fanout is not None:
                self._fanout.unsubscribe(self)
                self._fanout = None
            # wake a pending recv() so the sender's loop ends instead of waiting forever
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)


class TrackFanout:
    """Reads ``source`` until it ends and copies every frame to each subscriber.

    Owns one task (named ``relay:<label>``); ``stop()`` cancels and awaits it
    and ends every subscriber's track.
    """

    def __init__(self, source: MediaStreamTrack, label: str) -> None:
        self.source = source
        self.label = label
        self._subscribers: set[RelayedTrack] = set()
        self.frames = 0
        self._task = asyncio.create_task(self._run(), name=f"relay:{label}")

    def subscribe(self) -> RelayedTrack:
        track = RelayedTrack(self)
        self._subscribers.add(track)
        return track

    def unsubscribe(self, track: RelayedTrack) -> None:
        self._subscribers.discard(track)

    async def _run(self) -> None:
        try:
            while True:
                frame = await self.source.recv()
                if not isinstance(frame, av.AudioFrame):
                    continue
                self.frames += 1
                for sub in list(self._subscribers):
                    sub._push(frame)
        except MediaStreamError:
            log.info("room media: published track ended: %s", self.label)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("room media: relay %s failed", self.label)
        finally:
            for sub in list(self._subscribers):
                sub.stop()

    async def stop(self) -> None:
        await stop_tasks([self._task], logger=log)
        for sub in list(self._subscribers):
            sub.stop()


class MutingTrack(MediaStreamTrack):
    """Passes ``source`` through, or silence of the same shape while ``enabled`` is False."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.source = source
        self.enabled = True

    async def recv(self) -> av.AudioFrame:
        frame = await self.source.recv()
        if not isinstance(frame, av.AudioFrame):
            raise MediaStreamError("not an audio frame")
        if self.enabled:
            return frame
        silent = av.AudioFrame.from_ndarray(
            np.zeros_like(frame.to_ndarray()), format=frame.format.name, layout=frame.layout.name
        )
        silent.sample_rate = frame.sample_rate
        silent.pts = frame.pts
        silent.time_base = frame.time_base
        return silent

    def stop(self) -> None:
        super().stop()
        self.source.stop()
