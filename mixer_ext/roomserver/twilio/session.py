"""One twilio-video.js client in a room: the I/O half of its life (``TwilioSession``).

A ``TwilioSession`` is a ``peer.Peer`` like the project's own ``session.Session``:
admission, the roster and its events belong to the rooms owner (``rooms.Rooms``), removal
and fan-out to the server (``peer.PeerHost``); what the gateway gives it is ``SessionHost``.

Media: one aiortc ``RTCPeerConnection`` per client.  The client offers first (its
published audio, plus its camera or the recvonly video m-line every offer carries: video
m-lines are always answered inactive, the publication fails alone with 53125); the server
answers in ``connected``.  For each subscription the server adds a transceiver just
before its own offer (revision + 1); it never answers a client offer while its own is
pending (the SDK rolls its offer back and re-offers after answering: the server is the
impolite side, so there is no glare).  ICE candidates trickle in ``update`` messages and
go to ``addIceCandidate``; an ICE restart offer re-keys ICE in place
(``roomserver.icerestart``).

Reconnection: a socket that ends without ``bye`` puts the participant in the owner's
``reconnecting`` state; its peer connection and media stay, and the old socket's handler
waits (``await_resume``) until the SDK's ``sync`` on a new socket hands the session over
(``resume``, called by the gateway) or the owner's window runs out.

Data channels: a client's data track arrives on a channel it opens (label = its track id)
and is forwarded (``roomserver.datatracks``) on channels the server opens to each
subscriber; the media signaling the SDK asks for (``active_speaker``, ``network_quality``)
goes over channels the server opens with its first offer, each labelled with its name.

Tasks per client: ``twilio-in:<room>/<identity>`` reads the socket (in ``run``);
``twilio-out:<room>/<identity>`` writes the connection's output and its heartbeats (one
per socket); ``twilio-neg:<room>/<identity>`` makes the server's offers.  They end in
``close()``.

Why one module: it is the I/O half of one client's life (socket, peer connection,
negotiation, reconnection, its data and media signaling channels), whose states hang
together (a ``sync`` carries an offer; a track's media is matched to a receiver only once
an answer is applied; a closed peer connection ends the socket).  What is sans-I/O is
apart: the SDK's view of the room and the reconciliation of the client's tracks
(``roomview``), the wire formats (``connection``, ``signaling``, ``sdp``), what knows
aiortc's internals (``icerestart``); the front-end that admits it is ``gateway``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, Protocol

from aiohttp import WSMsgType, web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.sdp import candidate_from_sdp

from mixer_ext import metrics
from mixer_ext.connectors.base import Reason
from mixer_ext.roomserver.consent import keep_consent
from mixer_ext.roomserver.datatracks import ChannelOptions, ChannelSink, DataFanout
from mixer_ext.roomserver.forward import PacketFanout, tap_audio_levels
from mixer_ext.roomserver.icerestart import is_ice_restart, restart_ice
from mixer_ext.roomserver.limits import TokenBucket
from mixer_ext.roomserver.names import for_log
from mixer_ext.roomserver.netquality import NetworkQuality
from mixer_ext.roomserver.netquality import message as network_quality_message
from mixer_ext.roomserver.peer import Peer, PeerHost
from mixer_ext.roomserver.recording_rules import RoomRecorder
from mixer_ext.roomserver.rooms import (
    Participant,
    Room,
    RosterEvent,
)
from mixer_ext.roomserver.speakers import DominantSpeaker
from mixer_ext.roomserver.twilio import connection as tc
from mixer_ext.roomserver.twilio import errors as e
from mixer_ext.roomserver.twilio import signaling as s
from mixer_ext.roomserver.twilio.rest_routes import REMOVED
from mixer_ext.roomserver.twilio.roomview import LocalTracks, RemoteView
from mixer_ext.roomserver.twilio.sdp import align_offer
from mixer_ext.roomserver.twilio.sids import new_sid
from mixer_ext.tasks import stop_tasks

log = logging.getLogger(__name__)

#: texts queued to one client before it counts as gone (it stopped reading)
OUTBOX_SIZE = 512
#: a client must answer the server's offer within this many seconds
ANSWER_TIMEOUT = 15.0
TASK_STOP_TIMEOUT = 3.0
#: RTP clock of Opus: aiortc reports jitter in its units
OPUS_CLOCK = 48_000

#: why the room server removed someone -> what the SDK is told
_REASON_ERRORS: dict[str, e.TwilioVideoError] = {
    Reason.DUPLICATE_IDENTITY: e.PARTICIPANT_DUPLICATE_IDENTITY,
    Reason.ROOM_FULL: e.ROOM_MAX_PARTICIPANTS_EXCEEDED,
    Reason.MAX_PARTICIPANT_DURATION: e.PARTICIPANT_SESSION_LENGTH_EXCEEDED,
    Reason.PROTOCOL_ERROR: e.SIGNALING_INVALID_MESSAGE,
    Reason.RATE_LIMITED: e.SIGNALING_INVALID_MESSAGE,
    Reason.SERVER_SHUTDOWN: e.SIGNALING_SERVER_BUSY,
    Reason.UNAUTHORIZED: e.ACCESS_TOKEN_INVALID,
}


class SessionHost(Protocol):
    """What a session needs from the gateway that admitted it."""

    server: PeerHost
    #: sessions by their ``SS`` id (a ``sync`` on a new socket finds its session there)
    sessions: dict[str, TwilioSession]
    recorder: RoomRecorder
    data_message_rate: float
    data_message_burst: int

    def speakers_of(self, room: Room) -> DominantSpeaker: ...


async def flush(ws: web.WebSocketResponse, conn: tc.TcmpServer) -> None:
    """Write what ``conn`` has to send (a socket already gone is no error)."""
    for text in conn.data_to_send():
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(text)


class TwilioSession:
    """One twilio-video.js client in a room (see the module docstring)."""

    def __init__(
        self,
        gateway: SessionHost,
        ws: web.WebSocketResponse,
        conn: tc.TcmpServer,
        room: Room,
        participant: Participant,
        connect: s.Connect,
    ) -> None:
        self.gateway = gateway
        self.server = gateway.server
        self.ws = ws
        self.conn = conn
        self.room = room
        self.participant = participant
        #: what this connection may still send (issue 16.1): over it, it is closed
        self.bucket = gateway.server.new_bucket()
        self.identity = participant.identity
        self.label = f"{for_log(room.name)}/{for_log(self.identity)}"
        self.auto_subscribe = connect.automatic_subscription
        self.publish = True
        self.closed = False
        #: ``connected`` went out: roster events reach the SDK from then on
        self._started = False
        self.sid = participant.sid
        self.session_id = new_sid("SS")
        self._connect = connect
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc_id = connect.peer_connections[0].id if connect.peer_connections else "pc"
        #: the client's audio tracks as its state says, by MediaStreamTrack id
        self._local_audio: dict[str, s.LocalTrack] = {}
        #: MT SID -> the forwarding of its media, once a receiver carries it (``_match_media``)
        self._fanouts: dict[str, PacketFanout] = {}
        #: MT SID -> the receiver carrying it
        self._carriers: dict[str, RTCRtpReceiver] = {}
        #: receivers aiortc made for the client's sending m-lines, by the msid track id
        self._receivers: dict[RTCRtpReceiver, str] = {}
        #: the client's tracks -> their MT SIDs (or errors), as its state says (``roomview``)
        self.local = LocalTracks()
        #: the client's data tracks and the forwarding of each by SID (published in the
        #: room once the client's channel for it opened: ``_on_datachannel``)
        self._local_data: dict[str, s.LocalTrack] = {}
        self._data_fanouts: dict[str, DataFanout] = {}
        #: the client's data channels by label (its track id)
        self._data_channels: dict[str, Any] = {}
        self._data_bucket = TokenBucket(
            gateway.data_message_rate, gateway.data_message_burst, now=time.monotonic()
        )
        self._data_warned = 0.0
        #: publisher's data track sid -> (its forwarding, this client's channel to it)
        self.data_subscriptions: dict[str, tuple[DataFanout, ChannelSink]] = {}
        #: the media signaling channels the SDK asked for, by name (their label too)
        self._msp: dict[str, ChannelSink] = {}
        for name in connect.media_signaling:
            sink = self._msp[name] = ChannelSink(ChannelOptions())
            sink.id = name
        #: what the server sees of this client's links, and what the SDK asked to be told
        #: (its ``networkQuality`` local and remote verbosity, from its last inputs message)
        self.network = NetworkQuality.new()
        self._nq_verbosity = (1, 0)
        self._nq_asked = False
        #: publisher's track sid -> (transceiver, relayed track, publisher identity)
        #: (the transceiver is None until the server offers it: ``_add_transceivers``)
        self.subscriptions: dict[str, tuple[RTCRtpTransceiver | None, Any, str]] = {}
        self._subscribed_revision = 0
        #: the others as the SDK sees them
        self.view = RemoteView()
        self._lock = asyncio.Lock()
        self._answer: asyncio.Future[str] | None = None
        #: set once the negotiator took the answer to the server's offer (``_answer`` None)
        self._answer_applied = asyncio.Event()
        #: the client's first offer: the numbering the server's re-offers keep (``sdp``)
        self._client_sdp: str | None = None
        self._pending_revision = 0
        self._negotiation_needed = asyncio.Event()
        #: set once DTLS is up: aiortc fixes a receiver's payload types when it starts then
        self._media_up = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._closed = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._negotiator: asyncio.Task[None] | None = None
        #: its socket dropped; the seat, the peer connection and the media wait for ``sync``
        self.reconnecting = False
        self._resumed: asyncio.Future[None] | None = None
        self._awaiting_resume = asyncio.Event()
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)

    # --- start -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Answer the client's offer and send ``connected`` with the room as it is then."""
        self._apply_local_participant(self._connect.participant, announce=False)
        answer_state: list[dict[str, Any]] = []
        for pc_state in self._connect.peer_connections[:1]:
            if pc_state.description is not None and pc_state.description.type == "offer":
                sdp = await self._answer_offer(pc_state.description)
                answer_state.append(
                    s.description(self.pc_id, "answer", pc_state.description.revision, sdp)
                )
            if pc_state.ice is not None:
                await self._add_candidates(pc_state.ice)
        self.view.seed(self.room, self.participant)
        self._started = True
        self.gateway.sessions[self.session_id] = self
        self._send(
            s.connected(
                session=self.session_id,
                room_sid=self.room.sid,
                room_name=self.room.name,
                participant_sid=self.sid,
                identity=self.identity,
                participants=self.view.participants(),
                peer_connections=answer_state,
                published=self.local.published_state(),
                subscribed=self._subscribed_state(),
                recording=self.gateway.recorder.recording_state(self.room),
                media_signaling=tuple(self._msp),
            )
        )
        if self._msp:  # their channels come with the server's first offer
            self._negotiation_needed.set()
            dominant = self.gateway.speakers_of(self.room).dominant
            if "active_speaker" in self._msp and dominant is not None:
                self.media_signal("active_speaker", s.active_speaker(dominant))
        self._sender = asyncio.create_task(self._send_loop(), name=f"twilio-out:{self.label}")
        self._negotiator = asyncio.create_task(
            self._negotiate_loop(), name=f"twilio-neg:{self.label}"
        )

    # --- the read loop -----------------------------------------------------------------------

    async def run(self) -> str:
        """Read the client until it leaves or breaks; the reason for the room server."""
        reader = asyncio.create_task(self._read_loop(), name=f"twilio-in:{self.label}")
        try:
            await asyncio.wait({reader, self._ended}, return_when=asyncio.FIRST_COMPLETED)
            if self._ended.done():
                return self._ended.result()
            return reader.result()
        finally:
            await stop_tasks([reader], TASK_STOP_TIMEOUT, log)

    async def _read_loop(self) -> str:
        async for msg in self.ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
            now = time.monotonic()
            events = self.conn.receive(msg.data, now)
            messages: list[s.ClientMessage | tc.Closed] = []
            for event in events:
                if isinstance(event, tc.Closed):
                    messages.append(event)
                    break
                if event.body is None:
                    continue
                try:
                    messages.append(s.parse_client_body(event.body))
                except s.SignalingError as exc:
                    self.server.warn(
                        "twilio-message", "room server: %s: message refused: %s", self.label, exc
                    )
            # the answer to the server's own pending offer is solicited: it costs nothing
            solicited = any(self._answers_pending_offer(m) for m in messages)
            if not solicited and not self.bucket.take(now):
                metrics.ROOM_SERVER_REJECTED_MESSAGES.labels(Reason.RATE_LIMITED).inc()
                self.server.warn(
                    "rate-limited",
                    "room server: %s: disconnected: more than %d messages at once or %g/s",
                    self.label,
                    self.server.message_burst,
                    self.server.message_rate,
                )
                return Reason.RATE_LIMITED
            for message in messages:
                if isinstance(message, tc.Closed):
                    self._wakeup.set()
                    return Reason.LEFT if message.reason == "bye" else Reason.CONNECTION_LOST
                if isinstance(message, s.Disconnect):
                    return Reason.LEFT
                if isinstance(message, s.Update | s.Sync):
                    await self._on_update(message)
            self._wakeup.set()
        return Reason.CONNECTION_LOST

    def _answers_pending_offer(self, message: object) -> bool:
        """``message`` carries the answer to the offer of the server's that is pending."""
        if self._answer is None or self._answer.done() or not isinstance(message, s.Update):
            return False
        return any(
            pc.id == self.pc_id
            and pc.description is not None
            and pc.description.type == "answer"
            and pc.description.revision == self._pending_revision
            for pc in message.peer_connections
        )

    async def _on_update(self, update: s.Update | s.Sync) -> None:
        if update.participant is not None:
            self._apply_local_participant(update.participant, announce=True)
        for pc_state in update.peer_connections:
            if pc_state.id != self.pc_id:
                continue
            if pc_state.ice is not None:
                await self._add_candidates(pc_state.ice)
            desc = pc_state.description
            if desc is None:
                continue
            if desc.type == "answer" and desc.sdp is not None:
                pending = self._answer
                expected = desc.revision == self._pending_revision
                if pending is not None and not pending.done() and expected:
                    pending.set_result(desc.sdp)
            elif desc.type == "offer" and desc.sdp is not None:
                pending = self._answer
                if pending is not None and pending.done():
                    # the SDK answered our offer and re-offers at once (after glare, or
                    # for a data track's m=application): the answer is applied first, else
                    # the re-offer would be dropped as if ours were still pending
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._answer_applied.wait(), ANSWER_TIMEOUT)
                async with self._lock:
                    if self._answer is not None:
                        continue  # our offer is pending: the SDK rolls back and re-offers
                    try:
                        sdp = await self._answer_offer(desc)
                    except Exception as exc:
                        log.warning("room server: %s: offer refused: %s", self.label, exc)
                        self.fail(e.SERVER_REMOTE_DESCRIPTION_FAILED)
                        return
                    self._pending_revision = desc.revision
                    self._send(
                        s.room_state(
                            "update",
                            peer_connections=[
                                s.description(self.pc_id, "answer", desc.revision, sdp)
                            ],
                            published=self.local.published_state(),
                        )
                    )
        if isinstance(update, s.Sync):
            # the SDK closes every peer connection a ``synced`` leaves out; the server's
            # offer that the dropped socket may have lost goes out again with it
            ours: dict[str, Any] = {"id": self.pc_id}
            offered = self._answer is not None and not self._answer.done()
            if offered and self.pc.signalingState == "have-local-offer":
                ours = s.description(
                    self.pc_id, "offer", self._pending_revision, self.pc.localDescription.sdp
                )
            self._send(
                s.room_state(
                    "synced",
                    participants=self.view.participants(),
                    peer_connections=[ours],
                    published=self.local.published_state(),
                    subscribed=self._subscribed_state(),
                    recording=self.gateway.recorder.recording_state(self.room),
                )
            )

    def _apply_local_participant(self, state: s.LocalParticipant, *, announce: bool) -> None:
        """Publish, unpublish, refuse (video) and enable/disable tracks as the client's state
        says (``roomview.LocalTracks``); its media is matched to a receiver as it flows
        (``_match_media``)."""
        done = self.local.apply(state)
        if done is None:
            return
        for sid in done.unpublished:
            self._unpublish(sid)
        for sid in done.unpublished_data:
            self._unpublish_data(sid)
        self._local_data = done.data
        for tid in done.data:
            self._publish_data(tid)
        self._local_audio = done.audio
        for tid, track in done.audio.items():
            sid = self.local.published[tid]
            fanout = self._fanouts.get(sid)
            if fanout is not None:  # muted: nothing is forwarded
                fanout.enabled = track.enabled
            if sid in self.participant.tracks and self.server.rooms.set_track_enabled(
                self.room, self.participant, sid, track.enabled
            ):
                log.info(
                    "room server: %s track %s %s",
                    self.label,
                    sid,
                    "enabled" if track.enabled else "disabled",
                )
        self._match_media()
        if done.changed and announce:
            self._send(s.room_state("update", published=self.local.published_state()))

    def _unpublish(self, sid: str) -> None:
        """The client stopped publishing ``sid``: the others, REST and the mixer are told."""
        self._carriers.pop(sid, None)
        fanout = self._fanouts.pop(sid, None)
        if fanout is not None:
            fanout.end()
        if self.server.rooms.unpublish_track(self.room, self.participant, sid) is not None:
            log.info("room server: %s unpublished %s", self.label, sid)

    # --- data tracks (``datatracks``) ----------------------------------------------------------

    def _on_datachannel(self, channel: Any) -> None:
        """The client opened a data track's channel (its label is the track's id)."""
        if self.closed:
            return
        self._data_channels[str(channel.label)] = channel
        channel.on("close", lambda: self._data_channels.pop(str(channel.label), None))
        self._publish_data(str(channel.label))

    def _publish_data(self, tid: str) -> None:
        """Publish data track ``tid`` once both the client's state and its channel have it;
        its messages go to the subscribers from then on."""
        sid = self.local.data.get(tid)
        channel = self._data_channels.get(tid)
        if sid is None or channel is None or sid in self._data_fanouts:
            return
        fanout = DataFanout(f"{self.label}/{sid}", self._data_bucket)
        fanout.options = ChannelOptions(
            ordered=bool(channel.ordered),
            max_packet_life_time=channel.maxPacketLifeTime,
            max_retransmits=channel.maxRetransmits,
        )
        self._data_fanouts[sid] = fanout

        def on_message(message: str | bytes) -> None:
            now = time.monotonic()
            if fanout.accept(message, now):
                return
            metrics.ROOM_SERVER_REJECTED_MESSAGES.labels("data-rate-limited").inc()
            if now - self._data_warned > 10.0:
                self._data_warned = now
                self.server.warn(
                    "data-rate-limited",
                    "room server: %s: data messages dropped: over %g/s (burst %d) or 64 KiB",
                    self.label,
                    self.gateway.data_message_rate,
                    self.gateway.data_message_burst,
                )

        channel.on("message", on_message)
        local = self._local_data.get(tid)
        name = local.name if local is not None and local.name else sid
        log.info("room server: %s published data track %s (%s)", self.label, sid, for_log(name))
        self.server.rooms.publish_track(self.room, self.participant, sid, name=name, kind="data")

    def _unpublish_data(self, sid: str) -> None:
        fanout = self._data_fanouts.pop(sid, None)
        if fanout is not None:
            fanout.sinks.clear()
        if self.server.rooms.unpublish_track(self.room, self.participant, sid) is not None:
            log.info("room server: %s unpublished data track %s", self.label, sid)

    def data_fanout_for(self, track_sid: str) -> DataFanout | None:
        return self._data_fanouts.get(track_sid)

    def _subscribe_data(self, publisher: Peer, track_sid: str) -> bool:
        fanout = publisher.data_fanout_for(track_sid)
        if fanout is None or self.closed:
            return False
        if track_sid not in self.data_subscriptions:
            sink = ChannelSink(fanout.options)
            fanout.sinks[self.sid] = sink
            # its channel is made only as the server makes its offer (``_add_transceivers``)
            self.data_subscriptions[track_sid] = (fanout, sink)
            self._negotiation_needed.set()
        return True

    def _match_media(self) -> None:
        """Bind each published audio track without media to a receiver that carries media
        from the client and no other track.

        The SDK reuses transceivers (``publishTrack`` after ``unpublishTrack`` takes the old
        one, or one it receives a subscription on) and ``replaceTrack``s into them, so the
        SDP's msid need not name the track: a receiver whose msid names it is taken first,
        else the receivers in m-line order go to the tracks in the order the client lists
        them.  A receiver counts as carrying media while its m-line is negotiated to receive.
        """
        if self.closed:
            return
        live = {
            t.receiver
            for t in self.pc.getTransceivers()
            if t.kind == "audio"
            and t.receiver in self._receivers
            and t.currentDirection in ("recvonly", "sendrecv")
        }
        for sid, receiver in list(self._carriers.items()):
            if receiver not in live:  # its m-line stopped receiving: the track waits for one
                self._carriers.pop(sid)
        free = [
            t.receiver
            for t in self.pc.getTransceivers()
            if t.receiver in live and t.receiver not in self._carriers.values()
        ]
        waiting = [
            (tid, self.local.published[tid])
            for tid in self._local_audio
            if self.local.published[tid] not in self._carriers
        ]
        for tid, sid in waiting:
            if not free:
                return
            named = next((r for r in free if self._receivers[r] == tid), None)
            receiver = named or free[0]
            free.remove(receiver)
            self._carry(tid, sid, receiver)

    def _carry(self, tid: str, sid: str, receiver: RTCRtpReceiver) -> None:
        self._carriers[sid] = receiver
        track = self._local_audio[tid]
        old = self._fanouts.pop(sid, None)
        if old is not None:
            old.end()
        # forwarded as received: Opus is never decoded or re-encoded here (room.forward)
        fanout = PacketFanout(receiver, f"{self.label}/{sid}")
        fanout.enabled = track.enabled
        # the dominant speaker, from the levels in the RTP headers (nothing decoded)
        speakers, me = self.gateway.speakers_of(self.room), self.sid
        tap_audio_levels(receiver, lambda level: speakers.level(me, level))
        self._fanouts[sid] = fanout
        if sid in self.participant.tracks:
            return  # its media moved to another m-line: the subscribers keep the old relay
        log.info("room server: %s published %s (%s)", self.label, sid, for_log(track.name))
        self.server.rooms.publish_track(
            self.room, self.participant, sid, name=track.name or sid, enabled=track.enabled
        )

    # --- media -------------------------------------------------------------------------------

    async def _answer_offer(self, desc: s.Description) -> str:
        if desc.sdp is None:
            raise ValueError("offer without an SDP")
        if self._client_sdp is None:
            self._client_sdp = desc.sdp
        if is_ice_restart(self.pc, desc.sdp):
            # the browser's media path broke (a new network): re-key ICE in place, DTLS stays
            log.info("room server: %s: ICE restart", self.label)
            await restart_ice(self.pc, desc.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(desc.sdp, "offer"))
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind != "audio":
                # audio rooms: a camera or screen m-line is answered inactive, so the browser
                # sends no video and nothing here decodes it; its publication alone fails
                # (53125 in ``published``), the m-line stays for later re-offers
                transceiver.direction = "inactive"
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        self._match_media()
        return str(self.pc.localDescription.sdp)

    async def _add_candidates(self, ice: s.IceCandidates) -> None:
        for raw in ice.candidates:
            text = str(raw.get("candidate", ""))
            if not text:
                continue
            try:
                candidate = candidate_from_sdp(text.split(":", 1)[1] if ":" in text else text)
                candidate.sdpMid = raw.get("sdpMid")
                candidate.sdpMLineIndex = raw.get("sdpMLineIndex")
                await self.pc.addIceCandidate(candidate)
            except Exception as exc:  # a bad candidate hurts only this client
                log.debug("room server: %s: candidate ignored: %s", self.label, exc)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio" or self.closed:
            return
        receiver = next(
            (t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track), None
        )
        if receiver is not None:
            self._receivers[receiver] = track.id
        # matched once the answer is applied (``_answer_offer``): its direction is known then

    def _on_connection_state(self) -> None:
        if self.pc.connectionState == "connected":
            self._media_up.set()
            keep_consent(self.pc)  # a late answer is an answer (RFC 7675), not a departure
        # closed under it (aiortc gave up, the loop starved it...) is as final as failed: a
        # departure at once, never a ghost the others keep renegotiating with
        state = self.pc.connectionState
        if state in ("failed", "closed") and not self.closed:
            log.warning("room server: %s: media connection %s", self.label, state)
            self.fail(e.MEDIA_CONNECTION_FAILED)

    def fanout_for(self, track_sid: str) -> PacketFanout | None:
        return self._fanouts.get(track_sid)

    def subscribe(self, publisher: Peer, track_sid: str) -> bool:
        """Receive ``publisher``'s track ``track_sid`` (a peer of either protocol)."""
        track = publisher.participant.tracks.get(track_sid)
        if track is not None and track.kind == "data":
            return self._subscribe_data(publisher, track_sid)
        fanout = publisher.fanout_for(track_sid)
        if fanout is None or self.closed:
            return False
        if track_sid in self.subscriptions:
            return True
        relayed = fanout.subscribe()
        # its transceiver is added only as the server makes its offer (``_add_transceivers``)
        self.subscriptions[track_sid] = (None, relayed, publisher.participant.identity)
        self._negotiation_needed.set()
        return True

    def _add_transceivers(self) -> None:
        """A transceiver for each subscription not yet offered, just before the offer.

        ``sendrecv``, though the server only sends on it: the SDK recycles the transceivers it
        only receives on when it publishes a new track (``replaceTrack`` + ``sendrecv``), and
        aiortc answers such an offer with its transceiver's direction and'ed in, so a
        ``sendonly`` one would never receive the client's new track.  The client answers the
        server's offer ``recvonly`` while it has nothing to send there.

        Added any earlier, an un-offered transceiver breaks the answer to a client's offer in
        between (the SDK re-offers as soon as its camera is refused): aiortc 1.16 then derives
        its direction from an offer it was never in (``None is not in list``, 53403 to the
        SDK), and may even give the client's new audio m-line to it.
        """
        for sid, (transceiver, relayed, identity) in list(self.subscriptions.items()):
            if transceiver is None:
                transceiver = self.pc.addTransceiver(relayed, direction="sendrecv")
                self.subscriptions[sid] = (transceiver, relayed, identity)
        for sink in [sink for _, sink in self.data_subscriptions.values()] + list(
            self._msp.values()
        ):
            if sink.channel is None:
                options = sink.options
                channel = self.pc.createDataChannel(
                    sink.id,
                    ordered=options.ordered,
                    maxPacketLifeTime=options.max_packet_life_time,
                    maxRetransmits=options.max_retransmits,
                )
                sink.open(channel)
                if sink is self._msp.get("network_quality"):
                    channel.on("message", self._on_network_quality_inputs)

    def unsubscribe(self, track_sid: str) -> None:
        data = self.data_subscriptions.pop(track_sid, None)
        if data is not None:
            fanout, sink = data
            fanout.sinks.pop(self.sid, None)
            offered = sink.channel is not None
            sink.stop()
            if offered:
                self._subscribed_revision += 1
                self._send(s.room_state("update", subscribed=self._subscribed_state()))
            return
        entry = self.subscriptions.pop(track_sid, None)
        if entry is None:
            return
        transceiver, relayed, _ = entry
        relayed.stop()
        if transceiver is None:  # never offered: nothing to renegotiate
            return
        transceiver.sender.replaceTrack(None)
        # not inactive: the client may be sending a track of its own on this m-line
        transceiver.direction = "recvonly"
        self._subscribed_revision += 1
        self._send(s.room_state("update", subscribed=self._subscribed_state()))
        self._negotiation_needed.set()

    async def _negotiate_loop(self) -> None:
        """The server's offers, one at a time; each carries the subscriptions it brings."""
        try:
            while not self.closed:
                await self._negotiation_needed.wait()
                # aiortc's createOffer resets every transceiver's codecs to its own defaults
                # until the answer; a receiver started (DTLS up) in that window would keep
                # aiortc's payload types and drop the client's packets: offer only after
                try:
                    await asyncio.wait_for(self._media_up.wait(), ANSWER_TIMEOUT)
                except TimeoutError:
                    log.warning("room server: %s: media never connected", self.label)
                    self.fail(e.MEDIA_CONNECTION_FAILED)
                    return
                self._negotiation_needed.clear()
                async with self._lock:
                    self._add_transceivers()
                    offer = await self.pc.createOffer()
                    sdp = offer.sdp
                    if self._client_sdp is not None:
                        sdp = align_offer(sdp, self._client_sdp)
                    await self.pc.setLocalDescription(RTCSessionDescription(sdp, "offer"))
                    self._pending_revision = max(self._pending_revision, self._local_desc_rev()) + 1
                    self._answer = asyncio.get_running_loop().create_future()
                    self._answer_applied.clear()
                    self._send(
                        s.room_state(
                            "update",
                            peer_connections=[
                                s.description(
                                    self.pc_id,
                                    "offer",
                                    self._pending_revision,
                                    self.pc.localDescription.sdp,
                                )
                            ],
                        )
                    )
                answer_sdp = await self._await_answer(self._answer)
                if answer_sdp is None:
                    log.warning("room server: %s: no answer to offer", self.label)
                    self.fail(e.SERVER_DESCRIPTION_FAILED)
                    return
                async with self._lock:
                    self._answer = None
                    self._answer_applied.set()  # a waiting re-offer goes next (the lock)
                    try:
                        await self.pc.setRemoteDescription(
                            RTCSessionDescription(answer_sdp, "answer")
                        )
                    except Exception as exc:
                        log.warning("room server: %s: answer refused: %s", self.label, exc)
                        self.fail(e.SERVER_REMOTE_DESCRIPTION_FAILED)
                        return
                    self._match_media()
                    self._subscribed_revision += 1
                    self._send(s.room_state("update", subscribed=self._subscribed_state()))
        except asyncio.CancelledError:
            raise
        except Exception:
            if self.pc.connectionState == "closed":  # ended under it: a departure, no bug
                log.info("room server: %s: negotiation ended: connection closed", self.label)
                self.fail(e.MEDIA_CONNECTION_FAILED)
                return
            log.exception("room server: %s: negotiation failed", self.label)
            self.fail(e.SERVER_DESCRIPTION_FAILED)

    async def _await_answer(self, answer: asyncio.Future[str]) -> str | None:
        """The client's answer, None after ``ANSWER_TIMEOUT``; the clock restarts while its
        signaling is reconnecting (``synced`` carries the offer again)."""
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(answer), max(0.01, min(1.0, left)))
            if self.reconnecting:
                deadline = time.monotonic() + ANSWER_TIMEOUT
            elif time.monotonic() >= deadline:
                return None

    def _local_desc_rev(self) -> int:
        revs = [pc.description.revision for pc in self._connect.peer_connections if pc.description]
        return max(revs, default=0)

    # --- state as the SDK sees it ------------------------------------------------------------

    def _subscribed_state(self) -> tuple[int, list[tuple[str, str]]]:
        tracks = [
            (sid, relayed.id)
            for sid, (transceiver, relayed, _) in self.subscriptions.items()
            if relayed.readyState == "live" and transceiver is not None
        ]
        tracks += [
            (sid, sink.id)
            for sid, (_, sink) in self.data_subscriptions.items()
            if sink.channel is not None
        ]
        return (self._subscribed_revision + 1, tracks)

    def on_roster(self, event: RosterEvent) -> None:
        """The owner's roster events, as v2 room signaling (each participant update carries
        its whole state with a revision; the publisher's rate limit bounds how many)."""
        if self.closed or not self._started:
            return  # before ``connected``: it carries the room as it is then
        remote = self.view.on_roster(event)
        if remote is not None:
            self._send(s.room_state("update", participants=[remote]))

    # --- network quality (``netquality``) -------------------------------------------------

    @property
    def wants_network_quality(self) -> bool:
        return "network_quality" in self._msp

    def _on_network_quality_inputs(self, data: str | bytes) -> None:
        """The SDK's inputs (its own stats, ignored: the server measures) ask for the next
        report, at the verbosity they name."""
        if not isinstance(data, str) or len(data) > 64 * 1024:
            return
        try:
            body = json.loads(data)
        except ValueError:
            return
        if not isinstance(body, dict) or body.get("type") != "network_quality":
            return

        def verbosity(value: Any, default: int) -> int:
            return min(3, max(0, value)) if isinstance(value, int) else default

        self._nq_verbosity = (
            verbosity(body.get("reportLevel"), 1),
            verbosity(body.get("remoteReportLevel"), 0),
        )
        self._nq_asked = True

    async def measure_network(self) -> None:
        """Feed ``network`` from aiortc's RTP stats of this client's media."""
        received = lost = 0
        jitter: float | None = None
        for receiver in list(self._carriers.values()):
            for stat in (await receiver.getStats()).values():
                if getattr(stat, "type", "") == "inbound-rtp":
                    received += int(stat.packetsReceived)
                    lost += max(0, int(stat.packetsLost))
                    jitter = max(jitter or 0.0, float(stat.jitter) / OPUS_CLOCK)
        if jitter is not None:
            self.network.send.sample(received, lost, jitter)
        received = lost = 0
        jitter, rtt = None, None
        for transceiver, _, _ in list(self.subscriptions.values()):
            if transceiver is None:
                continue
            for stat in (await transceiver.sender.getStats()).values():
                if getattr(stat, "type", "") == "remote-inbound-rtp":
                    received += max(0, int(stat.packetsReceived))
                    lost += max(0, int(stat.packetsLost))
                    jitter = max(jitter or 0.0, float(stat.jitter) / OPUS_CLOCK)
                    if stat.roundTripTime is not None:
                        rtt = max(rtt or 0.0, float(stat.roundTripTime))
        if jitter is not None:
            self.network.recv.sample(received, lost, jitter, rtt)

    def report_network_quality(self, room: list[TwilioSession]) -> None:
        """Answer the SDK's last inputs: its level and the others' (remote verbosity)."""
        if not self._nq_asked or not self.wants_network_quality:
            return
        local_v, remote_v = self._nq_verbosity
        local = self.network.report(local_v)
        remotes: list[tuple[str, Any]] = []
        if remote_v >= 1:
            for other in room:
                report = other.network.report(remote_v)
                if other is not self and report is not None:
                    remotes.append((other.sid, report))
        if local is None and not remotes:
            return  # nothing measured yet: the SDK asks again
        self._nq_asked = False
        self.media_signal("network_quality", network_quality_message(local, remotes))

    def media_signal(self, name: str, message: dict[str, Any]) -> None:
        """A message on media signaling channel ``name``, if the SDK asked for it."""
        sink = self._msp.get(name)
        if sink is not None and not self.closed:
            sink.deliver(json.dumps(message))

    def recording_changed(self, is_recording: bool, revision: int) -> None:
        self._send(s.room_state("update", recording=(is_recording, revision)))

    def _send(self, body: dict[str, Any]) -> None:
        if self.closed or self.reconnecting:
            return  # (reconnecting: ``synced`` brings the client up to date)
        self.conn.send(body, time.monotonic())
        if tc.pending(self.conn) > OUTBOX_SIZE:
            log.warning("room server: %s: outbox full, client stopped reading", self.label)
            self.fail(e.MEDIA_CONNECTION_FAILED)
        self._wakeup.set()

    async def _send_loop(self) -> None:
        """Write what the connection has to send, and its heartbeats when due."""
        while True:
            now = time.monotonic()
            for event in self.conn.tick(now):
                if isinstance(event, tc.Closed) and not self._ended.done():
                    self._ended.set_result(Reason.CONNECTION_LOST)
            for text in self.conn.data_to_send():
                try:
                    await self.ws.send_str(text)
                except (ConnectionError, RuntimeError):
                    return
            if self.conn.state is tc.State.CLOSED:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wakeup.wait(), max(0.01, self.conn.next_deadline() - time.monotonic())
                )

    # --- reconnection (issue 21.4) ------------------------------------------------------------

    async def await_resume(self) -> bool:
        """The socket dropped: keep the seat, the peer connection and the media for the
        owner's reconnection window (``participantReconnecting`` to the others, REST
        ``reconnecting``).  True once a new socket took over (``resume``); False when the
        session ends instead (the window ran out and the owner removed it, or it failed)."""
        rooms = self.server.rooms
        if self.closed or (self._ended.done() and self._ended.result() != Reason.CONNECTION_LOST):
            return False
        if not rooms.participant_reconnecting(self.room, self.participant, time.monotonic()):
            return False
        log.info(
            "room server: %s: signaling lost, reconnecting (window %g s)",
            self.label,
            rooms.reconnect_window,
        )
        self.reconnecting = True
        self._ended = asyncio.get_running_loop().create_future()  # fail() while waiting
        resumed = self._resumed = asyncio.get_running_loop().create_future()
        self._awaiting_resume.set()
        closed = asyncio.create_task(self._closed.wait(), name=f"twilio-wait:{self.label}")
        try:
            await asyncio.wait({resumed, closed, self._ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await stop_tasks([closed], TASK_STOP_TIMEOUT, log)
        return resumed.done() and not self.closed

    async def resume(self, ws: web.WebSocketResponse, conn: tc.TcmpServer, sync: s.Sync) -> bool:
        """Carry on over ``ws``: the state the client missed goes out in ``synced``.  A
        ``sync`` before the server noticed the old socket's end supersedes it."""
        if not self.reconnecting:
            log.info("room server: %s: a sync supersedes the socket still open", self.label)
            if not self._ended.done():
                self._ended.set_result(Reason.CONNECTION_LOST)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._awaiting_resume.wait(), TASK_STOP_TIMEOUT)
        if not self.reconnecting or self.closed or self._resumed is None:
            return False
        await stop_tasks([t for t in (self._sender,) if t is not None], TASK_STOP_TIMEOUT, log)
        self.ws, self.conn = ws, conn
        self._ended = asyncio.get_running_loop().create_future()
        self.reconnecting = False
        self._awaiting_resume.clear()
        self.server.rooms.participant_reconnected(self.room, self.participant, time.monotonic())
        if not self._resumed.done():
            self._resumed.set_result(None)  # the old socket's handler lets go
        self._sender = asyncio.create_task(self._send_loop(), name=f"twilio-out:{self.label}")
        await self._on_update(sync)  # its state, an offer it makes, then ``synced``
        self._wakeup.set()
        return True

    # --- teardown ----------------------------------------------------------------------------

    def fail(self, err: e.TwilioVideoError) -> None:
        """End this client with ``err`` (from a callback or loop: never awaits)."""
        if self.closed or self._ended.done():
            return
        log.info("room server: %s: ending with %d", self.label, err.code)
        self.conn.send(s.error(err), time.monotonic())
        self._ended.set_result(Reason.PROTOCOL_ERROR)

    async def close(self, reason: str | None, message: str = "") -> None:
        """Tell the SDK why (``reason`` from the room server), stop everything, close."""
        if self.closed:
            return
        if reason == Reason.ROOM_ENDED:
            self.conn.send(s.disconnected_completed(), time.monotonic())
        elif reason == REMOVED:
            self.conn.send(s.disconnected_removed(), time.monotonic())
        elif reason in _REASON_ERRORS:
            self.conn.send(s.error(_REASON_ERRORS[reason]), time.monotonic())
        self.closed = True
        self.gateway.sessions.pop(self.session_id, None)
        self.conn.bye()
        await stop_tasks([self._negotiator, self._sender], TASK_STOP_TIMEOUT, log)
        await flush(self.ws, self.conn)  # the reason reaches the client before the socket ends
        if not self._ended.done():
            self._ended.set_result(reason or Reason.LEFT)
        for _, relayed, _ in self.subscriptions.values():
            relayed.stop()
        self.subscriptions.clear()
        for data_fanout, sink in self.data_subscriptions.values():
            data_fanout.sinks.pop(self.sid, None)
            sink.stop()
        self.data_subscriptions.clear()
        for sink in self._msp.values():
            sink.stop()
        for data_fanout in self._data_fanouts.values():
            data_fanout.sinks.clear()
        for fanout in self._fanouts.values():
            await fanout.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), TASK_STOP_TIMEOUT)
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()
