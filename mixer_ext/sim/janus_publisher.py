"""A minimal Janus VideoRoom publisher: a sine tone under a display name.

For tests and benchmarks: it plays the part of a person in a Janus room.
``JanusPublisher(url, room, display, freq)``: ``join()`` enters the room as a
publisher, ``publish()`` sends an aiortc audio track carrying a tone of
``freq`` Hz (Opus), ``unpublish()`` stops sending but stays in the room,
``leave()`` leaves and closes everything.  ``feed_id`` is the publisher id
Janus assigned (needed for ``moderate``); ``audio_mid`` the mid of its audio.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from mixer_ext.connectors.janus import FeedId, is_feed_id, parse_room_id
from mixer_ext.connectors.janus_session import JanusSession
from mixer_ext.sim.tracks import ToneTrack
from mixer_ext.tasks import stop_tasks


class JanusPublisher:
    """One publisher in a VideoRoom (its own Janus session)."""

    def __init__(
        self,
        url: str,
        room: str | int,
        display: str,
        freq: float,
        *,
        api_secret: str | None = None,
        token: str | None = None,
        track: MediaStreamTrack | None = None,
    ) -> None:
        """``track``: what to send (default a ``ToneTrack`` of ``freq``; e.g. pre-encoded)."""
        self.room = parse_room_id(str(room))
        self.track = track
        self.display = display
        self.freq = freq
        self.session = JanusSession(url, api_secret=api_secret, token=token, name=f"pub-{display}")
        self.handle: int | None = None
        self.feed_id: FeedId | None = None
        self.audio_mid: str | None = None
        self._pc: RTCPeerConnection | None = None
        self._drain: asyncio.Task[None] | None = None

    async def join(self) -> FeedId:
        await self.session.open()
        self.handle = await self.session.attach("janus.plugin.videoroom")
        data, _ = await self.session.message(
            self.handle,
            {"request": "join", "ptype": "publisher", "room": self.room, "display": self.display},
        )
        feed = data.get("id")
        if not is_feed_id(feed):
            raise RuntimeError(f"janus: join answered without a feed id: {data}")
        self.feed_id = feed
        # events for this handle are of no interest; keep the queue drained
        self._drain = asyncio.create_task(self._drain_events(), name=f"pub-{self.display}-events")
        return feed

    async def publish(self) -> None:
        if self.handle is None:
            raise RuntimeError("janus publisher: join() first")
        if self._pc is not None:
            await self._pc.close()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pc = pc
        track = self.track if self.track is not None else ToneTrack(self.freq)
        pc.addTransceiver(track, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        local = pc.localDescription
        data, jsep = await self.session.message(
            self.handle,
            {"request": "publish", "audio": True, "video": False, "display": self.display},
            {"type": local.type, "sdp": local.sdp},
        )
        if jsep is None:
            raise RuntimeError(f"janus publish without answer: {data}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type=jsep["type"]))
        for t in pc.getTransceivers():
            if t.kind == "audio":
                self.audio_mid = t.mid

    async def unpublish(self) -> None:
        if self.handle is None:
            raise RuntimeError("janus publisher: join() first")
        await self.session.message(self.handle, {"request": "unpublish"})
        if self._pc is not None:
            await self._pc.close()
            self._pc = None

    async def leave(self) -> None:
        if self.handle is not None and not self.session.closed.is_set():
            with contextlib.suppress(Exception):
                await self.session.message(self.handle, {"request": "leave"}, within=5)
        if self._pc is not None:
            await self._pc.close()
            self._pc = None
        await self.session.close()
        if self._drain is not None:
            await stop_tasks([self._drain])
            self._drain = None

    async def _drain_events(self) -> None:
        while await self.session.next_event() is not None:
            pass
