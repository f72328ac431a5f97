"""Clients of the embedded room server: ``RoomClient`` and the mixer's ``EmbeddedRoomConnector``.

``RoomClient`` joins a room over the signaling WebSocket
(``mixer_ext.roomserver.protocol``) with one aiortc peer connection, optionally
publishes one audio track (mute/unmute with ``set_enabled``) and, unless told
not to, receives everyone else's audio.  The talker, the tests and the
benchmarks use it directly; the mixer uses it through
``EmbeddedRoomConnector``, which only subscribes and never publishes.

Ownership: ``connect()`` starts one task (``room-client:<room>/<identity>``)
reading signaling; ``disconnect()`` (or the server) ends it, closes the peer
connection and ends ``events()`` with ``Disconnected(reason)``.  Events are
queued in a bounded queue (``EVENT_QUEUE_SIZE``); when the consumer is slow
the reader waits, which holds back signaling but never loses an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

import aiohttp
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack

from mixer_ext.connectors.base import (
    Disconnected,
    ParticipantJoined,
    ParticipantLeft,
    Reason,
    RoomConnectError,
    RoomConnector,
    RoomEvent,
    TrackEnabledChanged,
    TrackSubscribed,
    TrackUnsubscribed,
)
from mixer_ext.connectors.rtptap import EncodedFeed, tap_feed
from mixer_ext.roomserver import protocol as p
from mixer_ext.sim.tracks import MutingTrack
from mixer_ext.tasks import stop_tasks, wait_bounded

log = logging.getLogger(__name__)

EVENT_QUEUE_SIZE = 1000
CONNECT_TIMEOUT = 10.0
STOP_TIMEOUT = 3.0


def signal_url(url: str) -> str:
    """``ws://host:port`` (as in MIXER_ROOM_URL) -> the signaling endpoint's URL."""
    base = url.rstrip("/")
    if base.endswith(p.SIGNAL_PATH):
        return base
    return base + p.SIGNAL_PATH


class RoomClient:
    """One participant of the embedded room server.

    ``publish``: an audio track to send (wrapped so ``set_enabled(False)``
    sends silence and tells the others); ``None`` to only listen.
    ``auto_subscribe``: receive the others' audio (``TrackSubscribed`` events).
    ``publish_codec``: send with this codec (``"PCMU"``, ``"PCMA"``) instead of Opus.
    ``tap``: give each received track's encoded payloads in ``TrackSubscribed.source``
    (``mixer_ext.connectors.rtptap``) instead of decoded frames from ``track.recv()``.
    """

    def __init__(
        self,
        url: str,
        room: str,
        identity: str,
        token: str,
        *,
        publish: MediaStreamTrack | None = None,
        auto_subscribe: bool = True,
        publish_codec: str | None = None,
        tap: bool = False,
        ice_servers: Sequence[RTCIceServer] = (),
    ) -> None:
        self.url = signal_url(url)
        self.ice_servers = list(ice_servers)
        self.tap = tap
        self._feeds: dict[str, EncodedFeed] = {}  # mid -> feed (tap only)
        self.room = room
        self.identity = identity
        self._token = token
        self._publish = MutingTrack(publish) if publish is not None else None
        self.auto_subscribe = auto_subscribe
        self.publish_codec = publish_codec
        self.label = f"{room}/{identity}"
        if publish_codec is not None:
            wanted = f"audio/{publish_codec}".lower()
            caps = RTCRtpSender.getCapabilities("audio").codecs
            self._codecs = [c for c in caps if c.mimeType.lower() == wanted]
            if not self._codecs:
                raise ValueError(f"codec {publish_codec!r} is not available")
        self._pc: RTCPeerConnection | None = None
        #: participants present, from the roster and the events since
        self.participants: set[str] = set()
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._events: asyncio.Queue[RoomEvent] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._reader: asyncio.Task[None] | None = None
        self._announced: dict[str, tuple[str, str]] = {}  # mid -> (identity, track_sid)
        self._by_sid: dict[str, str] = {}  # track_sid -> mid
        self._enabled: dict[str, bool] = {}  # track_sid -> enabled
        self._done = False
        self._leaving = False
        self.disconnect_reason: str | None = None
        self.errors: list[p.ErrorMsg] = []

    @property
    def pc(self) -> RTCPeerConnection:
        """The peer connection (made in ``connect()``, inside the running event loop)."""
        if self._pc is None:
            raise RuntimeError("not connected")
        return self._pc

    def _make_pc(self) -> RTCPeerConnection:
        # no servers: host candidates only (aiortc's default would ask a public STUN server)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        pc.on("connectionstatechange", self._on_connection_state)
        if self._publish is not None:
            # The server puts the publish m-line first in its first offer, and aiortc binds
            # the first audio m-line to a transceiver made beforehand: so codec preferences
            # apply (aiortc fixes a transceiver's codecs when it applies the remote offer).
            pub = pc.addTransceiver(self._publish, direction="sendonly")
            if self.publish_codec is not None:
                pub.setCodecPreferences(self._codecs)
        return pc

    # --- lifecycle -----------------------------------------------------------------------

    async def connect(self) -> None:
        """Join; raises ``RoomConnectError`` (with the server's reason) when refused."""
        self._pc = self._make_pc()
        self._http = aiohttp.ClientSession()
        try:
            self._ws = await self._http.ws_connect(
                self.url, timeout=aiohttp.ClientWSTimeout(ws_close=CONNECT_TIMEOUT), heartbeat=20
            )
            await self._ws.send_str(
                p.encode(
                    p.Join(
                        room=self.room,
                        token=self._token,
                        publish=self._publish is not None,
                        auto_subscribe=self.auto_subscribe,
                    )
                )
            )
            first = await self._ws.receive(timeout=CONNECT_TIMEOUT)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await self._release()
            raise RoomConnectError(
                f"cannot reach the room server at {self.url}: {exc.__class__.__name__}",
                reason=Reason.CONNECTION_LOST,
            ) from None
        message = self._parse(first)
        if isinstance(message, p.DisconnectedMsg):
            await self._release()
            raise RoomConnectError(
                f"room server refused {self.label}: {message.reason}: {message.message}",
                reason=message.reason,
            )
        if not isinstance(message, p.Joined):
            await self._release()
            raise RoomConnectError(
                f"room server sent no 'joined' to {self.label}", reason=Reason.PROTOCOL_ERROR
            )
        log.info("room client: %s joined (%d others)", self.label, len(message.participants))
        for info in message.participants:
            self.participants.add(info.identity)
            self._events.put_nowait(ParticipantJoined(info.identity))
            for t in info.tracks:
                self._enabled[t.sid] = t.enabled
        self._reader = asyncio.create_task(self._read_loop(), name=f"room-client:{self.label}")

    def _parse(self, msg: aiohttp.WSMessage) -> p.Message | None:
        if msg.type != aiohttp.WSMsgType.TEXT:
            return None
        try:
            return p.parse_server_message(msg.data)
        except p.ProtocolError as exc:
            log.warning("room client: %s: server message refused: %s", self.label, exc)
            return None

    async def events(self) -> AsyncIterator[RoomEvent]:
        """Room events in order; ends right after ``Disconnected``."""
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, Disconnected):
                return

    async def set_enabled(self, enabled: bool) -> None:
        """Mute (``False``: silence is sent and the others are told) or unmute."""
        if self._publish is None:
            raise RuntimeError("this client publishes no track")
        self._publish.enabled = enabled
        await self.send_raw(p.encode(p.SetEnabled(enabled=enabled)))

    async def send_raw(self, text: str) -> None:
        """Send one signaling text frame as is (tests use it to send bad messages)."""
        if self._ws is None or self._ws.closed:
            raise RoomConnectError("not connected", reason=Reason.CONNECTION_LOST)
        await self._ws.send_str(text)

    async def disconnect(self) -> None:
        """Leave (``left``) and release everything.  Idempotent."""
        if self._ws is not None and not self._ws.closed and not self._done:
            self._leaving = True
            with contextlib.suppress(Exception):
                await self._ws.send_str(p.encode(p.Leave()))
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._reader is not None and not await wait_bounded(self._reader, STOP_TIMEOUT):
            await stop_tasks([self._reader], STOP_TIMEOUT, log)
        await self._finish(Reason.LEFT)

    async def wait_closed(self) -> str:
        """Wait until the server or ``disconnect()`` ended the session; return the reason."""
        if self._reader is not None:
            await asyncio.wait({self._reader})  # never raises the reader's end; ours propagates
        return self.disconnect_reason or Reason.CONNECTION_LOST

    # --- signaling -------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        if self._ws is None:
            raise RoomConnectError("not connected", reason=Reason.CONNECTION_LOST)
        reason: str = Reason.LEFT if self._leaving else Reason.CONNECTION_LOST
        try:
            async for msg in self._ws:
                message = self._parse(msg)
                if message is None:
                    continue
                if isinstance(message, p.DisconnectedMsg):
                    log.info(
                        "room client: %s disconnected by the server: %s",
                        self.label,
                        message.reason,
                    )
                    reason = message.reason
                    break
                await self._handle(message)
            else:
                reason = Reason.LEFT if self._leaving else Reason.CONNECTION_LOST
        except asyncio.CancelledError:
            reason = Reason.LEFT
            raise
        except Exception:
            log.exception("room client: %s: signaling failed", self.label)
            reason = Reason.CONNECTION_LOST
        finally:
            await self._finish(reason)

    async def _handle(self, message: p.Message) -> None:
        if isinstance(message, p.Offer):
            await self._on_offer(message)
        elif isinstance(message, p.ParticipantJoinedMsg):
            self.participants.add(message.identity)
            await self._events.put(ParticipantJoined(message.identity))
        elif isinstance(message, p.ParticipantLeftMsg):
            self.participants.discard(message.identity)
            await self._events.put(ParticipantLeft(message.identity, message.reason))
        elif isinstance(message, p.TrackPublishedMsg):
            self._enabled[message.track.sid] = message.track.enabled
        elif isinstance(message, p.TrackUnpublishedMsg):
            mid = self._by_sid.pop(message.track_sid, None)
            if mid is not None:
                self._announced.pop(mid, None)
                feed = self._feeds.pop(mid, None)
                if feed is not None:
                    feed.close()
                self._end_remote_track(mid)
                await self._events.put(TrackUnsubscribed(message.identity, message.track_sid))
        elif isinstance(message, p.TrackEnabledMsg):
            self._enabled[message.track_sid] = message.enabled
            if message.track_sid in self._by_sid:
                await self._events.put(
                    TrackEnabledChanged(message.identity, message.track_sid, message.enabled)
                )
        elif isinstance(message, p.ErrorMsg):
            log.warning(
                "room client: %s: server refused a message: %s", self.label, message.message
            )
            self.errors.append(message)

    async def _on_offer(self, offer: p.Offer) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
        transceivers = {t.mid: t for t in self.pc.getTransceivers()}
        if self.tap:  # before the answer: the new m-line's first packets must not miss it
            for mid in offer.tracks:
                t = transceivers.get(mid)
                if mid not in self._announced and mid not in self._feeds and t is not None:
                    self._feeds[mid] = tap_feed(t.receiver)
        if offer.publish_mid is not None and self._publish is not None:
            t = transceivers.get(offer.publish_mid)
            if t is not None and t.sender.track is None:
                t.direction = "sendonly"
                t.sender.replaceTrack(self._publish)
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        if self._ws is None:
            raise RoomConnectError("not connected", reason=Reason.CONNECTION_LOST)
        await self._ws.send_str(p.encode(p.Answer(sdp=self.pc.localDescription.sdp)))
        for mid, sub in offer.tracks.items():
            if mid in self._announced:
                continue
            t = transceivers.get(mid)
            if t is None or t.receiver.track is None:
                log.warning("room client: %s: offer names unknown m-line %s", self.label, mid)
                continue
            self._announced[mid] = (sub.identity, sub.track_sid)
            self._by_sid[sub.track_sid] = mid
            enabled = self._enabled.get(sub.track_sid, sub.enabled)
            feed = self._feeds.get(mid)
            await self._events.put(
                TrackSubscribed(sub.identity, sub.track_sid, t.receiver.track, enabled, feed)
            )

    def _end_remote_track(self, mid: str) -> None:
        """End the received track of ``mid`` so a consumer blocked in ``recv()`` wakes up.

        The server turns the m-line inactive; aiortc would leave the track's
        ``recv()`` waiting forever.  Ending it makes ``recv()`` raise
        ``MediaStreamError``, as for any track that ended.
        """
        for t in self.pc.getTransceivers():
            track = t.receiver.track if t.mid == mid else None
            if track is None:
                continue
            queue = getattr(track, "_queue", None)  # aiortc's RemoteStreamTrack
            if isinstance(queue, asyncio.Queue):
                queue.put_nowait(None)
            else:
                track.stop()

    def _on_connection_state(self) -> None:
        if self.pc.connectionState == "failed" and self._ws is not None and not self._done:
            log.warning("room client: %s: media connection failed", self.label)
            task = asyncio.ensure_future(self._ws.close())
            task.add_done_callback(lambda _: None)

    async def _finish(self, reason: str) -> None:
        if self._done:
            return
        self._done = True
        self.disconnect_reason = reason
        await self._release()
        # never block here (the consumer may be gone); make room so the last event arrives
        if self._events.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._events.get_nowait()
        self._events.put_nowait(Disconnected(reason))

    async def _release(self) -> None:
        if self._pc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pc.close(), STOP_TIMEOUT)
        if self._publish is not None:
            self._publish.stop()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.close()


class EmbeddedRoomConnector(RoomConnector):
    """The mixer's connector for the embedded room server: subscribes only, never publishes.

    Others see the bot as a participant; the mixer itself leaves its own
    identity out of the mix and the payloads.  Received audio comes as encoded payloads
    (``TrackSubscribed.source``): no decoder thread, no reader task per track.
    """

    def __init__(
        self,
        url: str,
        room: str,
        identity: str,
        token: str,
        *,
        tap: bool = True,
        ice_servers: Sequence[RTCIceServer] = (),
    ) -> None:
        super().__init__(room, identity)
        self._client = RoomClient(
            url,
            room,
            identity,
            token,
            publish=None,
            auto_subscribe=True,
            tap=tap,
            ice_servers=ice_servers,
        )

    async def connect(self) -> None:
        await self._client.connect()

    def events(self) -> AsyncIterator[RoomEvent]:
        return self._client.events()

    async def disconnect(self) -> None:
        await self._client.disconnect()
