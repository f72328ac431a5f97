"""twilio-video.js clients in the embedded room server's rooms (``GET /signaling``).

A ``TwilioSession`` is a participant of the room server like the project's own
``session.Session``: the server's roster, admission, fan-out and removal code treat both
the same (``send`` / ``subscribe`` / ``unsubscribe`` / ``close`` and the
``room``, ``identity``, ``track_sid``, ``fanout``, ``auto_subscribe`` attributes),
so the REST participant list, the SDK's ``room.participants`` and the mixer bot see
everyone whatever protocol they speak.  The project's room events (``protocol``
messages) are translated into v2 room signaling here.

Media: one aiortc ``RTCPeerConnection`` per client.  The client offers first
(its published audio, plus the recvonly video m-line every offer carries, answered
inactive); the server answers in ``connected``.  For each subscription the
server adds a sendonly transceiver and offers (revision + 1); it never answers a
client offer while its own is pending (the SDK rolls its offer back and re-offers
after answering: the server is the impolite side, so there is no glare).  ICE
candidates trickle in ``update`` messages and go to ``addIceCandidate``.

Tasks per client: ``twilio-out:<room>/<identity>`` writes the connection's output
and its heartbeats; ``twilio-neg:<room>/<identity>`` makes the server's offers.
Both end in ``close()``.

Why one module of ~830 lines: it is the I/O half of one client's life (socket, peer
connection, negotiation, room events), whose states hang together; the wire formats are
sans-I/O and apart (``connection``, ``signaling``, ``sdp``, ``access_token``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

from mixer_ext import metrics
from mixer_ext.connectors.base import Reason
from mixer_ext.errors import ConfigError
from mixer_ext.roomserver import protocol as p
from mixer_ext.roomserver.forward import PacketFanout
from mixer_ext.roomserver.limits import ROLE_PARTICIPANT, PreJoinGuard, identity_refusal
from mixer_ext.roomserver.state import Admission, Room, TrackState
from mixer_ext.roomserver.tokens import check_name
from mixer_ext.roomserver.twilio import connection as tc
from mixer_ext.roomserver.twilio import errors as e
from mixer_ext.roomserver.twilio import signaling as s
from mixer_ext.roomserver.twilio.access_token import (
    TwilioTokenError,
    parse_account_sid,
    parse_api_keys,
    verify_access_token,
)
from mixer_ext.roomserver.twilio.callbacks import StatusCallbacks
from mixer_ext.roomserver.twilio.rest_routes import REMOVED, RoomLedger, VideoRest
from mixer_ext.roomserver.twilio.sdp import align_offer
from mixer_ext.roomserver.twilio.sids import PARTICIPANT, TRACK, new_sid
from mixer_ext.tasks import stop_tasks

if TYPE_CHECKING:
    from mixer_ext.roomserver.app import RoomServer

log = logging.getLogger(__name__)

SIGNALING_PATH = "/signaling"
#: texts queued to one client before it counts as gone (it stopped reading)
OUTBOX_SIZE = 512
#: a client must answer the server's offer within this many seconds
ANSWER_TIMEOUT = 15.0
#: the ``connect`` must follow the hello within this many seconds
CONNECT_TIMEOUT = 20.0
TASK_STOP_TIMEOUT = 3.0
MAX_MESSAGE_BYTES = 256 * 1024
#: seconds between two refreshes of the room records (status callbacks follow them)
LEDGER_PERIOD = 0.5

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


class TwilioGateway:
    """Serves twilio-video.js signaling into ``server``'s rooms.

    Tokens: twilio access tokens for ``account_sid`` signed with one of ``api_keys``
    ({``SK…``: secret}).  SIDs: each room gets an ``RM`` SID, each participant (of either
    protocol) a ``PA`` SID, stable for as long as it stays.
    """

    def __init__(
        self,
        server: RoomServer,
        *,
        account_sid: str,
        api_keys: Mapping[str, str],
        auth_token: str | None = None,
    ) -> None:
        self.server = server
        self.account_sid = account_sid
        self.api_keys = dict(api_keys)
        self.auth_token = auth_token
        self._participant_sids: dict[tuple[str, str], str] = {}
        self._handlers: set[asyncio.Task[Any]] = set()
        self.callbacks = StatusCallbacks(auth_token)
        self.ledger = RoomLedger(self)
        self._ledger_task: asyncio.Task[None] | None = None

    @classmethod
    def from_environment(
        cls, server: RoomServer, environ: Mapping[str, str] | None = None
    ) -> TwilioGateway | None:
        """The gateway configured from ``MIXER_ACCOUNT_SID``, ``MIXER_API_KEYS`` and
        ``MIXER_AUTH_TOKEN``; None when neither of the first two is set (the server then
        serves only its own protocol).  A malformed value is a one-line ConfigError."""
        env = os.environ if environ is None else environ
        sid, keys = env.get("MIXER_ACCOUNT_SID", ""), env.get("MIXER_API_KEYS", "")
        if not sid and not keys:
            return None
        if not sid or not keys:
            raise ConfigError(
                "twilio-video.js rooms need both MIXER_ACCOUNT_SID and MIXER_API_KEYS"
            )
        return cls(
            server,
            account_sid=parse_account_sid(sid),
            api_keys=parse_api_keys(keys),
            auth_token=env.get("MIXER_AUTH_TOKEN") or None,
        )

    def add_routes(self, app: web.Application) -> None:
        """``/signaling`` and the Video REST subset under ``/v1/Rooms``."""
        app.router.add_get(SIGNALING_PATH, self.handle)
        VideoRest(self, self.ledger).add_routes(app)

    async def start(self) -> None:
        """Start keeping the room records (and their status callbacks) in step."""
        if self._ledger_task is None:
            self._ledger_task = asyncio.create_task(self._keep_ledger(), name="twilio-ledger")

    async def _keep_ledger(self) -> None:
        while True:
            await asyncio.sleep(LEDGER_PERIOD)
            try:
                self.ledger.refresh()
            except Exception:  # one bad record must not stop the others' callbacks
                log.exception("room server: room records refresh failed")

    def room_sid(self, room: Room) -> str:
        return self.ledger.for_live(room).sid

    def room_name(self, key: str) -> str:
        """The unique name of the in-progress room with SID ``key`` (else ``key`` itself)."""
        record = self.ledger.rooms.get(key)
        if record is not None and record.status == "in-progress":
            return record.unique_name
        return key

    def participant_sid(self, room: str, identity: str, *, fresh: bool = False) -> str:
        """The ``PA`` SID of ``identity`` in ``room``; ``fresh`` for a new connection."""
        key = (room, identity)
        if fresh or key not in self._participant_sids:
            self._participant_sids[key] = new_sid(PARTICIPANT)
        return self._participant_sids[key]

    async def stop(self) -> None:
        if self._ledger_task is not None:
            await stop_tasks([self._ledger_task], TASK_STOP_TIMEOUT, log)
        self.ledger.refresh()  # the last events (room-ended...) still go out
        await asyncio.sleep(0)
        await self.callbacks.stop()
        await stop_tasks(list(self._handlers), TASK_STOP_TIMEOUT, log)

    # --- one WebSocket ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            return await self._handle(request)
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.remote or "?"
        refused = self.server.admit_connection(peer)  # the room server's caps, shared
        if refused is not None:
            return refused
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES)
        conn = tc.TcmpServer(time.monotonic())
        session: TwilioSession | None = None
        reason: str = Reason.CONNECTION_LOST
        try:
            await ws.prepare(request)
            session = await self._await_connect(ws, conn, peer)
            if session is None:
                return ws
            self.server.connections.joined(peer)
            reason = await session.run()
        finally:
            self.server.connections.closed(peer, joined=session is not None)
            if session is not None:
                await self.server._remove(session, reason)  # type: ignore[arg-type]
                await session.close(None)  # (a no-op when the room server closed it)
                await session.wait_closed()
            elif not ws.closed:
                await _flush(ws, conn)
                await ws.close()
        return ws

    async def _await_connect(
        self, ws: web.WebSocketResponse, conn: tc.TcmpServer, peer: str
    ) -> TwilioSession | None:
        """Hello, the ICE-server request, then ``connect``: admit it or refuse it with a code."""
        deadline = time.monotonic() + CONNECT_TIMEOUT
        label = f"twilio <{peer}>"
        guard = PreJoinGuard(self.server.max_errors_before_join)
        while True:
            await _flush(ws, conn)
            try:
                msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("room server: %s: no connect in time", label)
                return None
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return None
            now = time.monotonic()
            for event in conn.receive(msg.data, now):
                if isinstance(event, tc.Closed):
                    return None
                body = event.body
                if body is None:
                    continue
                try:
                    message = s.parse_client_body(body)
                    if not isinstance(message, s.IceRequest | s.Connect | s.Disconnect):
                        raise s.SignalingError("connect first")
                except s.SignalingError as exc:
                    self.server.warn("twilio-refused", "room server: %s: refused: %s", label, exc)
                    if guard.error():  # MIXER_ROOM_MAX_ERRORS_BEFORE_JOIN
                        await self._refuse(ws, conn, label, exc.error)
                        return None
                    conn.send(s.error(exc.error), now)
                    continue
                if isinstance(message, s.IceRequest):
                    conn.send(s.iced([]), now)  # loopback/LAN: no STUN/TURN needed
                elif isinstance(message, s.Connect):
                    return await self._admit(ws, conn, message, peer)
                else:
                    return None

    async def _refuse(
        self, ws: web.WebSocketResponse, conn: tc.TcmpServer, label: str, err: e.TwilioVideoError
    ) -> None:
        log.warning("room server: %s: connect refused (%d): %s", label, err.code, err.message)
        conn.send(s.error(err), time.monotonic())
        conn.bye()
        await _flush(ws, conn)
        await ws.close()

    async def _admit(
        self, ws: web.WebSocketResponse, conn: tc.TcmpServer, connect: s.Connect, peer: str
    ) -> TwilioSession | None:
        server = self.server
        name = connect.name or ""
        label = f"twilio {name[:40]}/<{peer}>"
        try:
            check_name("room", name)
        except ValueError:
            await self._refuse(ws, conn, label, e.ROOM_NAME_INVALID.with_detail(name[:40]))
            return None
        names: tuple[str, ...] = (name,)
        if name in self.server.rooms:
            names = (name, self.room_sid(self.server.rooms[name]))
        try:
            claims = verify_access_token(
                connect.token, account_sid=self.account_sid, api_keys=self.api_keys, room=names
            )
            check_name("identity", claims.identity)
        except TwilioTokenError as exc:
            await self._refuse(ws, conn, label, exc.error)
            return None
        except ValueError as exc:
            await self._refuse(
                ws, conn, label, e.PARTICIPANT_IDENTITY_INVALID.with_detail(str(exc))
            )
            return None
        identity = claims.identity
        refused: e.TwilioVideoError | None = None
        replaced: Any = None
        session: TwilioSession | None = None
        others: list[Any] = []
        async with server._lock:  # decisions and the roster only: no await in here
            # a Twilio access token has no mixer role: it never takes a mixer's identity
            holder = server.sessions.get((name, identity))
            refusal = identity_refusal(
                identity,
                ROLE_PARTICIPANT,
                reserved=server.mixer_identities,
                holder_role=getattr(holder, "role", None),
            )
            now = time.monotonic()
            room = server.rooms.get(name)
            if refusal is not None:
                refused = e.PARTICIPANT_IDENTITY_INVALID.with_detail(refusal)
            elif room is not None and room.admission(identity) is Admission.FULL:
                refused = e.ROOM_MAX_PARTICIPANTS_EXCEEDED
            else:
                if room is None:
                    room = Room(
                        name,
                        now=now,
                        max_participants=server.max_participants,
                        max_participant_duration=server.max_participant_duration,
                        empty_timeout=server.empty_timeout,
                    )
                    server.rooms[name] = room
                    log.info("room server: room %s created (twilio-video.js)", name)
                if holder is not None and server._detach(holder, Reason.DUPLICATE_IDENTITY):
                    replaced = holder
                others = server._room_sessions(name)
                room.add(identity, now)
                session = TwilioSession(self, ws, conn, room, identity, connect)
                server.sessions[(name, identity)] = session  # type: ignore[assignment]
        if session is None:
            await self._refuse(ws, conn, label, refused or e.SIGNALING_INVALID_MESSAGE)
            return None
        if replaced is not None:  # torn down outside the lock: a slow close holds no join
            log.info("room server: %s: replaced by a new connection", replaced.label)
            server._schedule_removal(replaced, Reason.DUPLICATE_IDENTITY)
        log.info(
            "room server: %s joined from %s (twilio-video.js, subscribe=%s%s)",
            session.label,
            peer,
            connect.automatic_subscription,
            f", declined {','.join(connect.declined)}" if connect.declined else "",
        )
        try:
            await session.start(others)
        except Exception as exc:
            log.warning("room server: %s: cannot answer the offer: %s", session.label, exc)
            session.fail(e.SERVER_REMOTE_DESCRIPTION_FAILED)
            return session
        for other in others:
            other.send(p.ParticipantJoinedMsg(identity=identity))
        if connect.automatic_subscription:
            for other in others:
                session.subscribe(other)  # type: ignore[arg-type]
        return session


async def _flush(ws: web.WebSocketResponse, conn: tc.TcmpServer) -> None:
    for text in conn.data_to_send():
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(text)


class TwilioSession:
    """One twilio-video.js client in a room (see the module docstring)."""

    def __init__(
        self,
        gateway: TwilioGateway,
        ws: web.WebSocketResponse,
        conn: tc.TcmpServer,
        room: Room,
        identity: str,
        connect: s.Connect,
    ) -> None:
        self.gateway = gateway
        self.server = gateway.server
        self.ws = ws
        self.conn = conn
        self.room = room
        #: what this connection may still send (issue 16.1): over it, it is closed
        self.bucket = gateway.server.new_bucket()
        self.identity = identity
        self.label = f"{room.name}/{identity}"
        self.auto_subscribe = connect.automatic_subscription
        self.publish = True
        self.closed = False
        self.sid = gateway.participant_sid(room.name, identity, fresh=True)
        self.session_id = new_sid("SS")
        self._connect = connect
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc_id = connect.peer_connections[0].id if connect.peer_connections else "pc"
        self.track_sid: str | None = None
        self.track_name: str | None = None
        self._initial_enabled = True
        self.fanout: PacketFanout | None = None
        #: the client's audio track id -> its MT SID (only the first audio track carries media)
        self._published: dict[str, str] = {}
        self._published_errors: dict[str, e.TwilioVideoError] = {}
        self._published_revision = 0
        self._local_revision = -1
        #: publisher's track sid -> (transceiver, relayed track, publisher identity)
        #: (the transceiver is None until the server offers it: ``_add_transceivers``)
        self.subscriptions: dict[str, tuple[RTCRtpTransceiver | None, Any, str]] = {}
        self._subscribed_revision = 0
        #: the others as the SDK sees them, by identity
        self._remotes: dict[str, s.RemoteParticipant] = {}
        self._revision = 0
        self._lock = asyncio.Lock()
        self._answer: asyncio.Future[str] | None = None
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
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_connection_state)

    # --- start -------------------------------------------------------------------------------

    async def start(self, others: list[Any]) -> None:
        """Answer the client's offer and send ``connected`` with the room as it is."""
        for other in others:
            self._remotes[other.identity] = self._remote_for(other)
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
        self._send(
            s.connected(
                session=self.session_id,
                room_sid=self.gateway.room_sid(self.room),
                room_name=self.room.name,
                participant_sid=self.sid,
                identity=self.identity,
                participants=list(self._remotes.values()),
                peer_connections=answer_state,
                published=self._published_state(),
                subscribed=self._subscribed_state(),
            )
        )
        self._sender = asyncio.create_task(self._send_loop(), name=f"twilio-out:{self.label}")
        self._negotiator = asyncio.create_task(
            self._negotiate_loop(), name=f"twilio-neg:{self.label}"
        )

    def _remote_for(self, other: Any) -> s.RemoteParticipant:
        sid = getattr(other, "sid", None) or self.gateway.participant_sid(
            self.room.name, other.identity
        )
        remote = s.RemoteParticipant(sid=sid, identity=other.identity, revision=1)
        state = self.room.participants.get(other.identity)
        if state is not None:
            for track in state.tracks.values():
                remote.tracks.append(
                    s.RemoteTrack(
                        sid=track.sid,
                        name=getattr(other, "track_name", None) or track.sid,
                        enabled=track.enabled,
                    )
                )
        return remote

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
                            published=self._published_state(),
                        )
                    )
        if isinstance(update, s.Sync):
            self._send(
                s.room_state(
                    "synced",
                    participants=list(self._remotes.values()),
                    published=self._published_state(),
                    subscribed=self._subscribed_state(),
                )
            )

    def _apply_local_participant(self, state: s.LocalParticipant, *, announce: bool) -> None:
        """Publish, refuse (video) and enable/disable tracks as the client's state says."""
        if state.revision <= self._local_revision:
            return
        self._local_revision = state.revision
        changed = False
        for track in state.tracks:
            if track.kind != "audio":
                if track.id not in self._published_errors:
                    self._published_errors[track.id] = e.TRACK_KIND_NOT_SUPPORTED
                    changed = True
                continue
            if track.id not in self._published and not self._published:
                self._published[track.id] = self.track_sid or new_sid(TRACK)
                self.track_sid = self._published[track.id]
                self.track_name = track.name
                changed = True
            if self._published.get(track.id) == self.track_sid and self.track_sid is not None:
                participant = self.room.participants.get(self.identity)
                if participant is None:
                    continue
                known = participant.tracks.get(self.track_sid)
                if known is None:
                    # the media may not be flowing yet; _on_track announces it
                    self._initial_enabled = track.enabled
                elif known.enabled != track.enabled and announce:
                    if self.fanout is not None:  # muted: nothing is forwarded
                        self.fanout.enabled = track.enabled
                    self.server._set_enabled(self, track.enabled)  # type: ignore[arg-type]
        if changed:
            self._published_revision += 1
            if announce:
                self._send(s.room_state("update", published=self._published_state()))

    # --- media -------------------------------------------------------------------------------

    async def _answer_offer(self, desc: s.Description) -> str:
        if desc.sdp is None:
            raise ValueError("offer without an SDP")
        if self._client_sdp is None:
            self._client_sdp = desc.sdp
        await self.pc.setRemoteDescription(RTCSessionDescription(desc.sdp, "offer"))
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind != "audio":
                # audio rooms: a camera or screen m-line is answered inactive, so the browser
                # sends no video and nothing here decodes it; its publication alone fails
                # (53125 in ``published``), the m-line stays for later re-offers
                transceiver.direction = "inactive"
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
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
        if track.kind != "audio" or self.fanout is not None or self.closed:
            return
        if self.track_sid is None:
            self.track_sid = new_sid(TRACK)
        receiver = next(
            (t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track), None
        )
        if receiver is None:
            return
        # forwarded as received: Opus is never decoded or re-encoded here (room.forward)
        self.fanout = PacketFanout(receiver, f"{self.label}/{self.track_sid}")
        self.fanout.enabled = self._initial_enabled
        state = self.room.participants.get(self.identity)
        if state is not None:
            state.tracks[self.track_sid] = TrackState(
                sid=self.track_sid, enabled=self._initial_enabled
            )
        self.server._on_published(self)  # type: ignore[arg-type]

    def _on_connection_state(self) -> None:
        if self.pc.connectionState == "connected":
            self._media_up.set()
        if self.pc.connectionState == "failed" and not self.closed:
            log.warning("room server: %s: media connection failed", self.label)
            self.fail(e.MEDIA_CONNECTION_FAILED)

    def subscribe(self, publisher: Any) -> None:
        """Receive ``publisher``'s track (a session of either protocol)."""
        if publisher.fanout is None or publisher.track_sid is None or self.closed:
            return
        if publisher.track_sid in self.subscriptions:
            return
        relayed = publisher.fanout.subscribe()
        # its transceiver is added only as the server makes its offer (``_add_transceivers``)
        self.subscriptions[publisher.track_sid] = (None, relayed, publisher.identity)
        self._negotiation_needed.set()

    def _add_transceivers(self) -> None:
        """A sendonly transceiver for each subscription not yet offered, just before the offer.

        Added any earlier, an un-offered transceiver breaks the answer to a client's offer in
        between (the SDK re-offers as soon as its camera is refused): aiortc 1.16 then derives
        its direction from an offer it was never in (``None is not in list``, 53403 to the
        SDK), and may even give the client's new audio m-line to it.
        """
        for sid, (transceiver, relayed, identity) in list(self.subscriptions.items()):
            if transceiver is None:
                transceiver = self.pc.addTransceiver(relayed, direction="sendonly")
                self.subscriptions[sid] = (transceiver, relayed, identity)

    def unsubscribe(self, track_sid: str) -> None:
        entry = self.subscriptions.pop(track_sid, None)
        if entry is None:
            return
        transceiver, relayed, _ = entry
        relayed.stop()
        if transceiver is None:  # never offered: nothing to renegotiate
            return
        transceiver.sender.replaceTrack(None)
        transceiver.direction = "inactive"
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
                try:
                    answer_sdp = await asyncio.wait_for(self._answer, ANSWER_TIMEOUT)
                except TimeoutError:
                    log.warning("room server: %s: no answer to offer", self.label)
                    self.fail(e.SERVER_DESCRIPTION_FAILED)
                    return
                async with self._lock:
                    self._answer = None
                    try:
                        await self.pc.setRemoteDescription(
                            RTCSessionDescription(answer_sdp, "answer")
                        )
                    except Exception as exc:
                        log.warning("room server: %s: answer refused: %s", self.label, exc)
                        self.fail(e.SERVER_REMOTE_DESCRIPTION_FAILED)
                        return
                    self._subscribed_revision += 1
                    self._send(s.room_state("update", subscribed=self._subscribed_state()))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("room server: %s: negotiation failed", self.label)
            self.fail(e.SERVER_DESCRIPTION_FAILED)

    def _local_desc_rev(self) -> int:
        revs = [pc.description.revision for pc in self._connect.peer_connections if pc.description]
        return max(revs, default=0)

    # --- state as the SDK sees it ------------------------------------------------------------

    def _published_state(self) -> tuple[int, list[s.PublishedTrack]]:
        tracks = [s.PublishedTrack(tid, sid) for tid, sid in self._published.items()]
        tracks += [s.PublishedTrack(tid, None, err) for tid, err in self._published_errors.items()]
        return (max(1, self._published_revision), tracks)

    def _subscribed_state(self) -> tuple[int, list[tuple[str, str]]]:
        tracks = [
            (sid, relayed.id)
            for sid, (transceiver, relayed, _) in self.subscriptions.items()
            if relayed.readyState == "live" and transceiver is not None
        ]
        return (self._subscribed_revision + 1, tracks)

    def _bump(self, remote: s.RemoteParticipant) -> None:
        remote.revision += 1
        self._send(s.room_state("update", participants=[remote]))

    def send_latest(self, key: tuple[str, str], message: p._Message) -> None:
        """A state update (``Session.send_latest``): each carries the participant's whole
        state with a revision, and the publisher's rate limit bounds how many there are."""
        self.send(message)

    def send(self, message: p._Message) -> None:
        """The room server's events (project protocol) translated for the SDK."""
        if self.closed:
            return
        if isinstance(message, p.ParticipantJoinedMsg):
            other = self.server.sessions.get((self.room.name, message.identity))
            remote = (
                self._remote_for(other)
                if other is not None
                else s.RemoteParticipant(
                    self.gateway.participant_sid(self.room.name, message.identity),
                    message.identity,
                )
            )
            self._remotes[message.identity] = remote
            self._send(s.room_state("update", participants=[remote]))
        elif isinstance(message, p.ParticipantLeftMsg):
            gone = self._remotes.pop(message.identity, None)
            if gone is not None:
                gone.state = "disconnected"
                gone.tracks = []
                self._bump(gone)
        elif isinstance(message, p.TrackPublishedMsg):
            found = self._remotes.get(message.identity)
            if found is not None and all(t.sid != message.track.sid for t in found.tracks):
                other = self.server.sessions.get((self.room.name, message.identity))
                name = getattr(other, "track_name", None) or message.track.sid
                found.tracks.append(
                    s.RemoteTrack(sid=message.track.sid, name=name, enabled=message.track.enabled)
                )
                self._bump(found)
        elif isinstance(message, p.TrackUnpublishedMsg):
            found = self._remotes.get(message.identity)
            if found is not None:
                found.tracks = [t for t in found.tracks if t.sid != message.track_sid]
                self._bump(found)
        elif isinstance(message, p.TrackEnabledMsg):
            found = self._remotes.get(message.identity)
            if found is not None:
                for t in found.tracks:
                    if t.sid == message.track_sid:
                        t.enabled = message.enabled
                self._bump(found)

    def _send(self, body: dict[str, Any]) -> None:
        if self.closed:
            return
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
        self.conn.bye()
        await stop_tasks([self._negotiator, self._sender], TASK_STOP_TIMEOUT, log)
        await _flush(self.ws, self.conn)  # the reason reaches the client before the socket ends
        if not self._ended.done():
            self._ended.set_result(reason or Reason.LEFT)
        for _, relayed, _ in self.subscriptions.values():
            relayed.stop()
        self.subscriptions.clear()
        if self.fanout is not None:
            await self.fanout.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), TASK_STOP_TIMEOUT)
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()
