"""One participant's connection to the embedded room server, on the project's own protocol.

A ``Session`` owns the participant's socket outbox, its one ``RTCPeerConnection`` (its
published track and all its subscriptions) and two tasks: the sender (``room-out:``) and
the negotiator (``room-neg:``), which makes the server's offers one at a time, so there is
never glare.  It reaches the server only through ``peer.PeerHost`` and the rooms owner
(``rooms.Rooms``): room rules, admission and fan-out are theirs; it translates the
owner's roster events into the protocol's messages (``on_roster``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from aiohttp import web
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack

from mixer_ext import metrics
from mixer_ext.connectors.base import Reason
from mixer_ext.roomserver import protocol as p
from mixer_ext.roomserver.consent import keep_consent
from mixer_ext.roomserver.datatracks import DataFanout
from mixer_ext.roomserver.forward import PacketFanout
from mixer_ext.roomserver.limits import LatestWins, TokenBucket
from mixer_ext.roomserver.names import for_log
from mixer_ext.roomserver.peer import Peer, PeerHost
from mixer_ext.roomserver.rooms import (
    Participant,
    ParticipantJoined,
    ParticipantLeft,
    Room,
    RosterEvent,
    TrackDisabled,
    TrackEnabled,
    TrackPublished,
    TrackUnpublished,
)
from mixer_ext.tasks import stop_tasks, wait_bounded

log = logging.getLogger(__name__)

#: a client must answer an offer within this many seconds
ANSWER_TIMEOUT = 15.0
#: messages queued to one client before it counts as gone (it stopped reading)
OUTBOX_SIZE = 256
TASK_STOP_TIMEOUT = 3.0

#: a state update's key in the outbox: (identity, track sid); the value is sent when reached
StateKey = tuple[str, str]


class _Latest:
    """An outbox entry that stands for the latest update of ``key`` (``Session.send_latest``)."""

    __slots__ = ("key",)

    def __init__(self, key: StateKey) -> None:
        self.key = key


def peer_config() -> RTCConfiguration:
    # iceServers=[]: aiortc's default asks a public STUN server; everything here is local
    return RTCConfiguration(iceServers=[])


class Session:
    """One participant's connection: its socket, peer connection, track and subscriptions.

    Owned by ``RoomServer``; its tasks (``room-out:<room>/<id>``,
    ``room-neg:<room>/<id>``) end in ``close()``.
    """

    def __init__(
        self,
        host: PeerHost,
        ws: web.WebSocketResponse,
        room: Room,
        participant: Participant,
        join: p.Join,
        bucket: TokenBucket,
    ) -> None:
        self.host = host
        self.ws = ws
        self.room = room
        self.participant = participant
        self.identity = participant.identity
        self.publish = join.publish
        self.auto_subscribe = join.auto_subscribe
        self.label = f"{for_log(room.name)}/{for_log(self.identity)}"
        #: the role of the token it joined with (``participant`` or ``mixer``)
        self.role = participant.role
        self.closed = False
        self.pc: RTCPeerConnection | None = None
        self.publish_transceiver: RTCRtpTransceiver | None = None
        self.track_sid: str | None = None
        self.fanout: PacketFanout | None = None
        #: the client's last set-enabled (kept from before its track arrives: a client
        #: may mute right after joining)
        self.publish_enabled = True
        #: publisher's track sid -> (transceiver, relayed track, publisher identity)
        self.subscriptions: dict[str, tuple[RTCRtpTransceiver, Any, str]] = {}
        #: what this connection may still send (checked by the server's read loop)
        self.bucket = bucket
        #: bounded (``OUTBOX_SIZE``); full means the client stopped reading: it is removed
        self._outbox: asyncio.Queue[str | _Latest | None] = asyncio.Queue(OUTBOX_SIZE)
        #: state updates waiting in the outbox, one slot per key: the latest value wins
        self._latest: LatestWins[StateKey, str] = LatestWins()
        self._negotiation_needed = asyncio.Event()
        self._answer: asyncio.Future[p.Answer] | None = None
        self._sender = asyncio.create_task(self._send_loop(), name=f"room-out:{self.label}")
        self._negotiator: asyncio.Task[None] | None = None

    # --- outgoing messages -------------------------------------------------------------

    def send(self, message: p.Message) -> None:
        """Queue a message; a client that stopped reading is disconnected, never waited for."""
        if self.closed:
            return
        self._queue(p.encode(message))

    def send_latest(self, key: StateKey, message: p.Message) -> None:
        """Queue a state update that replaces any update of ``key`` not sent yet.

        However many toggles a publisher sends, this client's outbox holds one
        entry per (identity, track), carrying the value put last (issue 16.1).
        """
        if self.closed:
            return
        if self._latest.put(key, p.encode(message)):
            self._queue(_Latest(key))

    def _queue(self, item: str | _Latest) -> None:
        try:
            self._outbox.put_nowait(item)
        except asyncio.QueueFull:
            if isinstance(item, _Latest):
                self._latest.discard(item.key)
            log.warning("room server: %s: outbox full, client stopped reading", self.label)
            self.host.schedule_removal(self, Reason.CONNECTION_LOST)

    def on_roster(self, event: RosterEvent) -> None:
        """The owner's roster events, as the project's protocol says them (audio tracks
        only: its clients, the mixer among them, neither receive nor mix data tracks)."""
        track = getattr(event, "track", None)
        if track is not None and track.kind != "audio":
            return
        if isinstance(event, ParticipantJoined):
            self.send(p.ParticipantJoinedMsg(identity=event.participant.identity))
        elif isinstance(event, ParticipantLeft):
            self.send(
                p.ParticipantLeftMsg(identity=event.participant.identity, reason=event.reason)
            )
        elif isinstance(event, TrackPublished):
            info = p.TrackInfo(sid=event.track.sid, enabled=event.track.enabled)
            self.send(p.TrackPublishedMsg(identity=event.participant.identity, track=info))
        elif isinstance(event, TrackUnpublished):
            self.send(
                p.TrackUnpublishedMsg(
                    identity=event.participant.identity, track_sid=event.track.sid
                )
            )
        elif isinstance(event, TrackEnabled | TrackDisabled):
            identity, sid = event.participant.identity, event.track.sid
            update = p.TrackEnabledMsg(
                identity=identity, track_sid=sid, enabled=event.track.enabled
            )
            self.send_latest((identity, sid), update)  # one outbox slot per track

    async def _send_loop(self) -> None:
        while True:
            item = await self._outbox.get()
            if item is None:
                return
            text = self._latest.pop(item.key) if isinstance(item, _Latest) else item
            if text is None:
                continue
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return

    # --- media ---------------------------------------------------------------------------

    def _ensure_pc(self) -> RTCPeerConnection:
        if self.pc is None:
            self.pc = RTCPeerConnection(peer_config())
            self.pc.on("track", self._on_track)
            self.pc.on("connectionstatechange", self._on_connection_state)
            self._negotiator = asyncio.create_task(
                self._negotiate_loop(), name=f"room-neg:{self.label}"
            )
        return self.pc

    def start_publishing(self) -> None:
        """Offer the m-line the client sends on; it comes first, before any subscription."""
        pc = self._ensure_pc()
        self.publish_transceiver = pc.addTransceiver("audio", direction="recvonly")
        self._negotiation_needed.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio" or self.fanout is not None or self.closed:
            return
        self.track_sid = "TR_" + secrets.token_hex(6)
        receiver = (
            next((t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track), None)
            if self.pc is not None
            else None
        )
        if receiver is None:
            return
        # forwarded as received: Opus is never decoded or re-encoded (mixer_ext.room.forward)
        self.fanout = PacketFanout(receiver, f"{self.label}/{self.track_sid}")
        self.fanout.enabled = self.publish_enabled  # muted: nothing is forwarded
        log.info("room server: %s published %s", self.label, self.track_sid)
        self.host.rooms.publish_track(
            self.room, self.participant, self.track_sid, enabled=self.publish_enabled
        )

    def _on_connection_state(self) -> None:
        state = None if self.pc is None else self.pc.connectionState
        if state == "connected" and self.pc is not None:
            keep_consent(self.pc)  # a late answer is an answer (RFC 7675), not a departure
        if state in ("failed", "closed") and not self.closed:  # closed under it: gone too
            log.warning("room server: %s: media connection %s", self.label, state)
            self.host.schedule_removal(self, Reason.CONNECTION_LOST)

    def fanout_for(self, track_sid: str) -> PacketFanout | None:
        return self.fanout if track_sid == self.track_sid else None

    def data_fanout_for(self, track_sid: str) -> DataFanout | None:
        return None  # the own protocol publishes no data tracks

    def subscribe(self, publisher: Peer, track_sid: str) -> bool:
        """Receive ``publisher``'s track ``track_sid`` on this participant's peer connection."""
        fanout = publisher.fanout_for(track_sid)
        if fanout is None or self.closed:
            return False
        if track_sid in self.subscriptions:
            return True
        pc = self._ensure_pc()
        relayed = fanout.subscribe()
        transceiver = pc.addTransceiver(relayed, direction="sendonly")
        self.subscriptions[track_sid] = (transceiver, relayed, publisher.participant.identity)
        self._negotiation_needed.set()
        return True

    def unsubscribe(self, track_sid: str) -> None:
        entry = self.subscriptions.pop(track_sid, None)
        if entry is None:
            return
        transceiver, relayed, _ = entry
        transceiver.sender.replaceTrack(None)
        relayed.stop()
        transceiver.direction = "inactive"
        self._negotiation_needed.set()

    async def _negotiate_loop(self) -> None:
        """Offer, wait for the answer, apply it; one negotiation at a time, never glare."""
        try:
            while not self.closed:
                await self._negotiation_needed.wait()
                self._negotiation_needed.clear()
                pc = self.pc
                if pc is None or self.closed:
                    return
                offer = await pc.createOffer()
                await pc.setLocalDescription(offer)
                tracks = {
                    t.mid: p.SubscribedTrack(
                        identity=ident, track_sid=sid, enabled=self.host.rooms.enabled(ident, sid)
                    )
                    for sid, (t, _, ident) in self.subscriptions.items()
                    if t.mid is not None
                }
                publish_mid = self.publish_transceiver.mid if self.publish_transceiver else None
                self._answer = asyncio.get_running_loop().create_future()
                log.debug("room server: %s: offer (%d subscriptions)", self.label, len(tracks))
                self.send(
                    p.Offer(sdp=pc.localDescription.sdp, tracks=tracks, publish_mid=publish_mid)
                )
                try:
                    answer = await asyncio.wait_for(self._answer, ANSWER_TIMEOUT)
                except TimeoutError:
                    log.warning("room server: %s: no answer to offer, disconnecting", self.label)
                    self.host.schedule_removal(self, Reason.CONNECTION_LOST)
                    return
                finally:
                    self._answer = None
                try:
                    await pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
                except Exception as exc:  # a bad SDP from the client: its problem only
                    log.warning("room server: %s: answer refused: %s", self.label, exc)
                    metrics.ROOM_SERVER_REJECTED_MESSAGES.labels("bad-sdp").inc()
                    self.host.schedule_removal(self, Reason.PROTOCOL_ERROR)
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("room server: %s: negotiation failed", self.label)
            self.host.schedule_removal(self, Reason.CONNECTION_LOST)

    @property
    def awaiting_answer(self) -> bool:
        """An offer of the server's is waiting for this client's answer."""
        return self._answer is not None and not self._answer.done()

    def on_answer(self, answer: p.Answer) -> bool:
        """Hand ``answer`` to the pending negotiation; False when none is pending."""
        if self.closed:
            return True  # an answer racing with teardown: nothing to do, nothing wrong
        if self._answer is None or self._answer.done():
            return False
        self._answer.set_result(answer)
        return True

    # --- teardown ------------------------------------------------------------------------

    async def close(self, reason: str | None, message: str = "") -> None:
        """Stop everything this session owns; tell the client why when ``reason`` is given."""
        if self.closed:
            return
        self.closed = True
        if reason is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._outbox.put_nowait(p.encode(p.DisconnectedMsg(reason=reason, message=message)))
        with contextlib.suppress(asyncio.QueueFull):
            self._outbox.put_nowait(None)
        if self._sender is not None:  # let the sender flush the goodbye first
            await wait_bounded(self._sender, TASK_STOP_TIMEOUT)
        await stop_tasks([self._sender, self._negotiator], TASK_STOP_TIMEOUT, log)
        for _, relayed, _ in self.subscriptions.values():
            relayed.stop()
        self.subscriptions.clear()
        if self.fanout is not None:
            await self.fanout.stop()
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pc.close(), TASK_STOP_TIMEOUT)
        with contextlib.suppress(Exception):
            await self.ws.close()
