"""The embedded room server: WebSocket signaling, aiortc media, REST and a speaker page.

One aiohttp application on one port serves

* ``GET /v1/signal``: the signaling WebSocket (``mixer_ext.roomserver.protocol``);
* ``GET /v1/rooms/{name}``, ``GET /v1/rooms/{name}/participants``: JSON for
  operators (404 for a room that does not exist); they need, as
  ``Authorization: Bearer``, a token for that room (any role) or
  ``MIXER_ROOM_ADMIN_TOKEN`` (else 401);
* ``POST /v1/rooms/{name}/end``: ends a room, everyone leaves with
  ``room-ended``; needs ``Authorization: Bearer <MIXER_ROOM_ADMIN_TOKEN>``
  (the signing secret is not accepted: 401; no admin token set: 403);
* ``POST /v1/token``: hands out a token, only in open mode (``MIXER_ROOM_OPEN``);
* ``GET /``: the speaker page (``mixer_ext/roomserver/static/``); ``GET /healthz``.

Media: one ``RTCPeerConnection`` per participant carries its published track
and all its subscriptions.  The server always makes the offers, one at a time
per participant (``session.Session``), so there is never glare.  A
published track's encoded Opus is forwarded by a ``PacketFanout`` to a bounded
``ForwardedTrack`` per subscriber (``mixer_ext.roomserver.forward``).

Rooms, participants, tracks and admission belong to the rooms owner
(``mixer_ext.roomserver.rooms.Rooms``); this server is one of its listeners (it tells the
other connections what changed and keeps the gauges) and one of its front-ends.  The room
rules (maximum participant duration, lapsed reconnections, the empty-room timeout) are
the owner's ``tick``, run by one housekeeping task every ``HOUSEKEEPING_PERIOD`` seconds.

Limits (``mixer_ext.roomserver.limits``, issue 16.1 and 16.4): sockets not joined
yet and sockets per address are capped before the WebSocket handshake (503); an
unjoined socket is closed after ``room_join_timeout`` seconds or its
``room_max_errors_before_join``-th refused message; a joined connection spends a
token per message (``room_message_rate`` per second, ``room_message_burst`` at
once; the answer to a pending server offer is free) and is closed with
``rate-limited`` when it runs dry, never its receivers;
track state updates wait in each receiver's outbox one per (identity, track),
the latest value winning.  Warnings about refused messages and connections are
rate-limited per kind (``LogThrottle``), so a flood never becomes a log flood.

Why one module (for now): the aiohttp app, its lifecycle, the project's own
signaling front-end, the operator REST and the CLI; LAYOUT.md splits it into ``server``,
``signal``, ``rest`` and ``cli``, which now needs no new owner (the roster is ``rooms``').
The per-connection state machine is in ``session``, the wire format in ``protocol``, the
media in ``forward``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any, cast

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import ValidationError

from mixer_ext import eventloop, metrics
from mixer_ext.connectors.base import Reason
from mixer_ext.errors import ConfigError
from mixer_ext.iceservers import IceServers
from mixer_ext.redact import add_secret
from mixer_ext.roomserver import protocol as p
from mixer_ext.roomserver.limits import (
    ConnectionLimits,
    LogThrottle,
    PreJoinGuard,
    Refusal,
    TokenBucket,
)
from mixer_ext.roomserver.names import for_log
from mixer_ext.roomserver.peer import Peer
from mixer_ext.roomserver.rooms import (
    Participant,
    ParticipantJoined,
    ParticipantLeft,
    Refused,
    Room,
    RoomCreated,
    RoomEnded,
    Rooms,
    RosterEvent,
    TrackPublished,
    TrackUnpublished,
)
from mixer_ext.roomserver.rooms import (
    Refusal as JoinRefusal,
)
from mixer_ext.roomserver.session import TASK_STOP_TIMEOUT, Session
from mixer_ext.roomserver.subscribe_rules import SubscribeRule
from mixer_ext.roomserver.tokens import (
    TokenError,
    mint_token,
    secret_from,
    verify_token,
)
from mixer_ext.roomserver.twilio.gateway import TwilioGateway
from mixer_ext.settings import Settings
from mixer_ext.tasks import stop_tasks

log = logging.getLogger(__name__)

DEFAULT_PORT = 7880
STATIC_DIR = Path(__file__).resolve().parent / "static"
HOUSEKEEPING_PERIOD = 0.25
#: frames above this many times the cap are cut by aiohttp itself (connection closed)
HARD_LIMIT_FACTOR = 4
#: a joined connection's messages may be this much longer per m-line it has (its
#: subscriptions and its published track: ~1.7 KB each in aiortc's SDP); the socket's own
#: cut-off leaves that room for the largest room the server allows
SDP_BYTES_PER_PARTICIPANT = 4096
#: warnings of one kind (a refusal code) written per ``LOG_PERIOD`` seconds; the rest counted
LOG_LINES_PER_KIND = 5
LOG_PERIOD = 10.0


class RoomServer:
    """The embedded room server, usable in-process (tests) or via ``mixer-ext room-server``.

    Limits default to the settings (``room_max_participants``,
    ``room_max_participant_duration`` seconds, ``room_empty_timeout`` seconds,
    ``room_max_message_bytes``, ``room_open``); keyword arguments override
    them.  ``port=0`` picks a free port; ``.port`` is the bound one after
    ``start()``.
    """

    def __init__(
        self,
        settings: Settings,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        max_participants: int | None = None,
        max_participant_duration: float | None = None,
        empty_timeout: float | None = None,
        max_message_bytes: int | None = None,
        open_mode: bool | None = None,
    ) -> None:
        self.secret = secret_from(settings, "the room server")
        #: STUN/TURN handed to the project's own clients (``/v1/config``)
        self.ice = IceServers.from_settings(settings)
        self.host = host
        self.port = port
        self.max_participants = max_participants or settings.room_max_participants
        self.max_participant_duration = float(
            max_participant_duration or settings.room_max_participant_duration
        )
        self.empty_timeout = (
            settings.room_empty_timeout if empty_timeout is None else float(empty_timeout)
        )
        self.max_message_bytes = max_message_bytes or settings.room_max_message_bytes
        self.open_mode = settings.room_open if open_mode is None else open_mode
        #: identities only a mixer-role token may take (MIXER_ROOM_MIXER_IDENTITIES)
        self.mixer_identities = settings.mixer_identities
        #: the operator credential (MIXER_ROOM_ADMIN_TOKEN); None: no one ends rooms over REST
        self._admin_token = (
            settings.room_admin_token.get_secret_value() if settings.room_admin_token else None
        )
        for credential in (self.secret, self._admin_token):  # never in a log line, whoever logs
            if credential:
                add_secret(credential)
        self.join_timeout = settings.room_join_timeout
        self.max_errors_before_join = settings.room_max_errors_before_join
        self.message_rate = settings.room_message_rate
        self.message_burst = settings.room_message_burst
        #: sockets per address and sockets not joined yet (shared with the twilio gateway)
        self.connections = ConnectionLimits(
            max_pending=settings.room_max_pending_connections,
            max_per_address=settings.room_max_connections_per_address,
        )
        self._log_throttle = LogThrottle(LOG_LINES_PER_KIND, LOG_PERIOD)
        #: the one owner of rooms, participants, tracks and admission (sans-I/O)
        self.rooms = Rooms(
            max_participants=self.max_participants,
            max_participant_duration=self.max_participant_duration,
            empty_timeout=self.empty_timeout,
            mixer_identities=self.mixer_identities,
        )
        self.rooms.attach(self)  # the fan-out to the other connections, and the metrics
        self._removals: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._housekeeper: asyncio.Task[None] | None = None
        #: twilio-video.js apps' signaling + Video REST, when MIXER_ACCOUNT_SID/API_KEYS are set
        self.twilio: TwilioGateway | None = TwilioGateway.from_environment(self, settings=settings)

    @property
    def sessions(self) -> dict[tuple[str, str], Peer]:
        """Every participant's connection, by (room, identity), whatever its protocol."""
        return {
            (room.name, identity): cast(Peer, participant.connection)
            for room in self.rooms.values()
            for identity, participant in room.participants.items()
            if participant.connection is not None
        }

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(p.SIGNAL_PATH, self._signal)
        app.router.add_get("/v1/rooms/{name}", self._get_room)
        app.router.add_get("/v1/rooms/{name}/participants", self._get_participants)
        app.router.add_post("/v1/rooms/{name}/end", self._end_room)
        app.router.add_post("/v1/token", self._token)
        app.router.add_get("/v1/config", self._config)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/", self._index)
        app.router.add_get("/favicon.ico", self._no_content)
        app.router.add_static("/static/", STATIC_DIR)
        if self.twilio is not None:  # twilio-video.js signaling and the Video REST subset
            self.twilio.add_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        self._housekeeper = asyncio.create_task(self._housekeeping(), name="room-housekeeping")
        if self.twilio is not None:
            await self.twilio.start()
        log.info(
            "room server: listening on %s:%d (signaling %s, open mode %s)",
            self.host,
            self.port,
            p.SIGNAL_PATH,
            "on" if self.open_mode else "off",
        )

    async def stop(self) -> None:
        """Disconnect everyone (``server-shutdown``), stop every task, release the port."""
        await stop_tasks([self._housekeeper], TASK_STOP_TIMEOUT, log)
        for room in list(self.rooms.values()):
            await self.end_room(room, Reason.SERVER_SHUTDOWN)
        if self.twilio is not None:
            await self.twilio.stop()
        for task in list(self._removals):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, TASK_STOP_TIMEOUT)
        if self._runner is not None:
            await self._runner.cleanup()
        await stop_tasks(list(self._handlers), TASK_STOP_TIMEOUT, log)
        log.info("room server: stopped")

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_PERIOD)
            try:
                self._check_rooms(time.monotonic())
            except Exception:  # one bad room must not stop the limits of all the others
                log.exception("room server: housekeeping failed")

    def _check_rooms(self, now: float) -> None:
        """End overstayed participants, lapsed reconnections and rooms empty for too long."""
        due = self.rooms.tick(now)
        for room, participant, reason in due.removals:
            peer = cast(Peer | None, participant.connection)
            log.info(
                "room server: %s/%s: %s", for_log(room.name), for_log(participant.identity), reason
            )
            if peer is not None and not peer.closed:
                self.schedule_removal(peer, reason)
            else:  # no connection to close (its window ran out): it just leaves
                self.rooms.leave(room, participant, reason, now)

    # --- the roster's effects ---------------------------------------------------------------

    def on_roster(self, event: RosterEvent) -> None:
        """Tell every other connection in the room; subscribe the auto-subscribers; metrics."""
        if isinstance(event, RoomCreated | RoomEnded):
            metrics.ROOM_SERVER_ROOMS.set(len(self.rooms))
            if isinstance(event, RoomCreated):
                log.info("room server: room %s created", for_log(event.room.name))
            else:
                log.info("room server: room %s ended (%s)", for_log(event.room.name), event.reason)
            return
        if isinstance(event, ParticipantJoined | ParticipantLeft):
            metrics.ROOM_SERVER_PARTICIPANTS.set(self.rooms.count_participants())
        subject = event.participant
        for other in list(event.room.participants.values()):
            peer = cast(Peer | None, other.connection)
            if other is subject or peer is None or peer.closed:
                continue
            if isinstance(event, TrackUnpublished):
                peer.unsubscribe(event.track.sid)
                self.rooms.unsubscribed(other, event.track.sid)
            peer.on_roster(event)
            if isinstance(event, TrackPublished) and self.rooms.wants(other, subject, event.track):
                self._subscribe(other, subject, event.track.sid)

    def _subscribe(self, subscriber: Participant, publisher: Participant, track_sid: str) -> None:
        peer = cast(Peer | None, subscriber.connection)
        source = cast(Peer | None, publisher.connection)
        if peer is None or source is None or track_sid in subscriber.subscriptions:
            return
        if peer.subscribe(source, track_sid):
            self.rooms.subscribed(subscriber, track_sid)

    def set_subscribe_rules(
        self, room: Room, participant: Participant, rules: tuple[SubscribeRule, ...]
    ) -> bool:
        """Apply Subscribe Rules to a participant now (False: it is not in ``room``)."""
        change = self.rooms.set_subscribe_rules(room, participant, rules)
        if change is None:
            return False
        peer = cast(Peer | None, participant.connection)
        for sid in change.unsubscribe:
            if peer is not None:
                peer.unsubscribe(sid)
            self.rooms.unsubscribed(participant, sid)
        for publisher, sid in change.subscribe:
            self._subscribe(participant, publisher, sid)
        log.info(
            "room server: %s: subscribe rules set (+%d -%d tracks)",
            for_log(participant.identity),
            len(change.subscribe),
            len(change.unsubscribe),
        )
        return True

    def subscribe_to_room(self, peer: Peer) -> None:
        """``peer`` receives every track published in its room so far."""
        for other in list(peer.room.participants.values()):
            if other is not peer.participant:
                for sid in list(other.tracks):
                    self._subscribe(peer.participant, other, sid)

    def admitted(self, peer: Peer, replaced: Participant | None) -> None:
        """A front-end admitted ``peer``; the connection it replaced is closed."""
        old = None if replaced is None else cast(Peer | None, replaced.connection)
        if old is not None:  # torn down in a task: a slow close holds no join
            log.info("room server: %s: replaced by a new connection", old.label)
            self.schedule_removal(old, Reason.DUPLICATE_IDENTITY)

    def schedule_removal(self, peer: Peer, reason: str) -> None:
        """Remove ``peer`` from a context that must not await (callbacks, loops)."""
        if peer.closed:
            return
        task = asyncio.create_task(self.remove(peer, reason), name=f"room-rm:{peer.label}")
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def remove(self, peer: Peer, reason: str, message: str = "") -> None:
        """``peer`` leaves its room (if it still holds its seat), then is closed with ``reason``."""
        if peer.closed:
            return
        self.rooms.leave(peer.room, peer.participant, reason, time.monotonic())
        log.info("room server: %s left: %s", peer.label, reason)
        told = None if reason in (Reason.LEFT, Reason.CONNECTION_LOST) else reason
        await peer.close(told, message)

    async def end_room(self, room: Room, reason: str) -> int:
        """Everyone in ``room`` leaves with ``reason`` and is disconnected; the room ends."""
        events = self.rooms.end_room(room, reason, time.monotonic())
        peers = [
            cast(Peer, e.participant.connection)
            for e in events
            if isinstance(e, ParticipantLeft) and e.participant.connection is not None
        ]
        for peer in peers:
            log.info("room server: %s left: %s", peer.label, reason)
        await asyncio.gather(*(peer.close(reason) for peer in peers if not peer.closed))
        return len(peers)

    # --- signaling -------------------------------------------------------------------------

    def warn(self, kind: str, fmt: str, *args: object) -> None:
        """A warning of ``kind``, at most ``LOG_LINES_PER_KIND`` per ``LOG_PERIOD`` seconds.

        The lines held back are counted and the next line of that kind says how many.
        """
        allowed, suppressed = self._log_throttle.allow(kind, time.monotonic())
        if not allowed:
            return
        if suppressed:
            fmt += " (%d more like this not logged)"
            args = (*args, suppressed)
        log.warning(fmt, *args)

    def _reject(self, label: str, err: p.ProtocolError) -> p.ErrorMsg:
        """Count and log a refused message; the error message to send back to its sender."""
        metrics.ROOM_SERVER_REJECTED_MESSAGES.labels(err.code).inc()
        self.warn(
            f"message:{err.code}", "room server: %s: message refused (%s): %s", label, err.code, err
        )
        return p.ErrorMsg(code=err.code, message=str(err))

    async def _signal(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            return await self._signal_inner(request)
        finally:
            if task is not None:
                self._handlers.discard(task)

    def admit_connection(self, peer: str) -> web.Response | None:
        """Count a new signaling socket from ``peer``; a 503 answer when over a cap.

        Every socket counted here must end with ``connections.closed(peer, ...)``.
        """
        refusal = self.connections.open(peer)
        if refusal is None:
            return None
        metrics.ROOM_SERVER_REFUSED_JOINS.labels(refusal.value).inc()
        if refusal is Refusal.TOO_MANY_FROM_ADDRESS:
            limit = f"{self.connections.max_per_address} per address"
            limit += " (MIXER_ROOM_MAX_CONNECTIONS_PER_ADDRESS)"
        else:
            limit = f"{self.connections.max_pending} not joined yet"
            limit += " (MIXER_ROOM_MAX_PENDING_CONNECTIONS)"
        self.warn(
            f"connection:{refusal.value}",
            "room server: <%s>: connection refused (%s): limit %s",
            peer,
            refusal.value,
            limit,
        )
        return web.json_response(
            {"error": f"too many connections ({refusal.value}): limit {limit}"},
            status=503,
            headers={"Retry-After": "1"},
        )

    async def _signal_inner(self, request: web.Request) -> web.StreamResponse:
        peer = request.remote or "?"
        refused = self.admit_connection(peer)
        if refused is not None:
            return refused
        joined = False
        try:
            ws = web.WebSocketResponse(
                max_msg_size=max(
                    self.max_message_bytes * HARD_LIMIT_FACTOR,
                    self.max_message_bytes
                    + SDP_BYTES_PER_PARTICIPANT * (self.max_participants + 1),
                ),
                heartbeat=20.0,
            )
            await ws.prepare(request)
            session = await self._await_join(ws, peer)
            if session is None:
                await ws.close()
                return ws
            self.connections.joined(peer)
            joined = True
            await self._serve_session(ws, session)
            return ws
        finally:
            self.connections.closed(peer, joined=joined)

    async def _serve_session(self, ws: web.WebSocketResponse, session: Session) -> None:
        """Read a joined session's messages until it leaves, breaks or runs out of tokens."""
        reason: str = Reason.CONNECTION_LOST
        goodbye = ""
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT or msg.type == WSMsgType.BINARY:
                    message: p.ClientMessage | p.ProtocolError
                    try:
                        # an answer holds one m-line per subscription (and the publish one):
                        # a mixer in a room of 50 answers with ~90 KB
                        limit = self.max_message_bytes + SDP_BYTES_PER_PARTICIPANT * (
                            len(session.subscriptions) + 1
                        )
                        message = p.parse_client_message(msg.data, limit)
                    except p.ProtocolError as exc:
                        message = exc
                    # the answer to the server's own pending offer is solicited: it costs
                    # nothing (a join storm re-offers every participant many times)
                    solicited = isinstance(message, p.Answer) and session.awaiting_answer
                    if not solicited and not session.bucket.take(time.monotonic()):
                        metrics.ROOM_SERVER_REJECTED_MESSAGES.labels(Reason.RATE_LIMITED).inc()
                        goodbye = (
                            f"more than {self.message_burst} messages at once or "
                            f"{self.message_rate:g} per second"
                        )
                        self.warn(
                            "rate-limited",
                            "room server: %s: disconnected: %s",
                            session.label,
                            goodbye,
                        )
                        reason = Reason.RATE_LIMITED
                        break
                    if isinstance(message, p.ProtocolError):
                        session.send(self._reject(session.label, message))
                        continue
                    if isinstance(message, p.Leave):
                        reason = Reason.LEFT
                        break
                    if isinstance(message, p.Answer):
                        if not session.on_answer(message):
                            problem = p.ProtocolError("unexpected", "answer without pending offer")
                            session.send(self._reject(session.label, problem))
                    elif isinstance(message, p.SetEnabled):
                        self._set_enabled(session, message.enabled)
                    else:
                        problem = p.ProtocolError("unexpected", "already joined")
                        session.send(self._reject(session.label, problem))
                elif msg.type == WSMsgType.ERROR:
                    ws_error = ws.exception()
                    if getattr(ws_error, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
                        metrics.ROOM_SERVER_REJECTED_MESSAGES.labels("oversized").inc()
                    self.warn(
                        "websocket-error",
                        "room server: %s: websocket error: %s",
                        session.label,
                        ws_error,
                    )
                    break
        finally:
            await self.remove(session, reason, goodbye)

    async def _await_join(self, ws: web.WebSocketResponse, peer: str) -> Session | None:
        """Read messages until a valid ``join``; admit it or refuse it with a reason.

        The socket is refused after ``join_timeout`` seconds without a join, or at
        its ``max_errors_before_join``-th refused message.
        """
        deadline = time.monotonic() + self.join_timeout
        label = f"<{peer}>"
        guard = PreJoinGuard(self.max_errors_before_join)
        while True:
            try:
                msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                await self._refuse(ws, label, Reason.PROTOCOL_ERROR, "no join message in time")
                return None
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                error = ws.exception()
                if getattr(error, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
                    metrics.ROOM_SERVER_REJECTED_MESSAGES.labels("oversized").inc()
                return None
            try:
                message = p.parse_client_message(msg.data, self.max_message_bytes)
                if not isinstance(message, p.Join):
                    raise p.ProtocolError("unexpected", f"{message.type!r} before join")
            except p.ProtocolError as exc:
                reply = self._reject(label, exc)
                if guard.error():
                    why = f"{guard.errors} refused messages before join (last: {exc})"
                    await self._refuse(ws, label, Reason.PROTOCOL_ERROR, why)
                    return None
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(p.encode(reply))
                continue
            return await self._admit(ws, message, peer)

    async def _refuse(
        self, ws: web.WebSocketResponse, label: str, reason: str, message: str
    ) -> None:
        metrics.ROOM_SERVER_REFUSED_JOINS.labels(reason).inc()
        self.warn(
            f"join:{reason}", "room server: %s: join refused (%s): %s", label, reason, message
        )
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(p.encode(p.DisconnectedMsg(reason=reason, message=message)))

    async def _admit(self, ws: web.WebSocketResponse, join: p.Join, peer: str) -> Session | None:
        named = join.room
        # the hosted extension's context names the room by its RM SID
        join = join.model_copy(update={"room": self.rooms.resolve(join.room)})
        label = f"{for_log(join.room[:40])}/<{peer}>"
        try:
            # a token for the room's SID admits as one for its unique name
            claims = verify_token(self.secret, join.token, named)
            admitted = self.rooms.join(
                join.room,
                claims.identity,
                time.monotonic(),
                role=claims.role,
                auto_subscribe=join.auto_subscribe,
            )
        except (TokenError, ValueError) as exc:
            await self._refuse(ws, label, Reason.UNAUTHORIZED, str(exc))
            return None
        except Refused as exc:
            if exc.refusal is JoinRefusal.ROOM_FULL:
                label = f"{for_log(join.room)}/{for_log(claims.identity)}"
                await self._refuse(ws, label, Reason.ROOM_FULL, str(exc))
            else:
                await self._refuse(ws, label, Reason.UNAUTHORIZED, str(exc))
            return None
        room, participant = admitted.room, admitted.participant
        session = Session(self, ws, room, participant, join, self.new_bucket())
        participant.connection = session
        self.admitted(session, admitted.replaced)
        log.info(
            "room server: %s joined from %s (publish=%s, subscribe=%s)",
            session.label,
            peer,
            join.publish,
            join.auto_subscribe,
        )
        session.send(
            p.Joined(
                room=room.name,
                identity=participant.identity,
                participants=[
                    _participant_info(state)
                    for state in room.participants.values()
                    if state is not participant
                ],
            )
        )
        if join.publish:
            session.start_publishing()
        if join.auto_subscribe:
            self.subscribe_to_room(session)
        return session

    def new_bucket(self) -> TokenBucket:
        """The message budget of one joined connection."""
        return TokenBucket(self.message_rate, self.message_burst, now=time.monotonic())

    def _set_enabled(self, session: Session, enabled: bool) -> None:
        if session.track_sid is None and session.publish_transceiver is not None:
            session.publish_enabled = enabled  # its track is on its way: it starts so
            return
        changed = (
            None
            if session.track_sid is None
            else self.rooms.set_track_enabled(
                session.room, session.participant, session.track_sid, enabled
            )
        )
        if changed is None:
            session.send(p.ErrorMsg(code="unexpected", message="no published track to enable"))
            return
        session.publish_enabled = enabled
        if session.fanout is not None:  # muted: forward nothing (subscribers keep their timeline)
            session.fanout.enabled = enabled
        if changed:
            log.info(
                "room server: %s track %s", session.label, "enabled" if enabled else "disabled"
            )

    # --- REST ----------------------------------------------------------------------------

    @staticmethod
    def _bearer(request: web.Request) -> str | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None

    def _is_admin(self, bearer: str | None) -> bool:
        """``bearer`` is ``MIXER_ROOM_ADMIN_TOKEN`` (compared in constant time)."""
        if bearer is None or self._admin_token is None:
            return False
        return hmac.compare_digest(bearer.encode(), self._admin_token.encode())

    def _check_read(self, request: web.Request) -> None:
        """A REST read of a room needs a token for that room or the admin token (else 401)."""
        name = request.match_info["name"]
        bearer = self._bearer(request)
        if self._is_admin(bearer):
            return
        try:
            verify_token(self.secret, bearer, name)
        except TokenError as exc:
            raise web.HTTPUnauthorized(
                text=json.dumps(
                    {
                        "error": "needs Authorization: Bearer <a token for this room "
                        f"or MIXER_ROOM_ADMIN_TOKEN> ({exc})"
                    }
                ),
                content_type="application/json",
                headers={"WWW-Authenticate": 'Bearer realm="mixer-ext room server"'},
            ) from None

    def _room_or_404(self, request: web.Request) -> Room:
        room = self.rooms.get(request.match_info["name"])
        if room is None:
            raise web.HTTPNotFound(
                text='{"error": "no such room"}', content_type="application/json"
            )
        return room

    async def _get_room(self, request: web.Request) -> web.Response:
        self._check_read(request)
        room = self._room_or_404(request)
        return web.json_response(
            {
                "name": room.name,
                "created_at": room.created_iso(),
                "num_participants": len(room.participants),
                "max_participants": room.max_participants,
                "max_participant_duration": room.max_participant_duration,
                "empty_timeout": room.empty_timeout,
            }
        )

    async def _get_participants(self, request: web.Request) -> web.Response:
        self._check_read(request)
        room = self._room_or_404(request)
        return web.json_response(
            [_participant_info(s).model_dump() for s in room.participants.values()]
        )

    async def _end_room(self, request: web.Request) -> web.Response:
        if self._admin_token is None:
            return web.json_response(
                {"error": "ending a room needs MIXER_ROOM_ADMIN_TOKEN set on the room server"},
                status=403,
            )
        if not self._is_admin(self._bearer(request)):
            return web.json_response(
                {"error": "needs Authorization: Bearer <MIXER_ROOM_ADMIN_TOKEN>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="mixer-ext room server"'},
            )
        room = self._room_or_404(request)
        log.info("room server: room %s ended by an operator", for_log(room.name))
        gone = await self.end_room(room, Reason.ROOM_ENDED)
        return web.json_response({"ended": room.name, "disconnected": gone})

    async def _token(self, request: web.Request) -> web.Response:
        if not self.open_mode:
            return web.json_response(
                {"error": "this server hands out no tokens (not in open mode)"}, status=403
            )
        try:
            body = await request.json()
            room, identity = str(body["room"]), str(body["identity"])
            if identity in self.mixer_identities:
                return web.json_response(
                    {"error": f"identity {identity[:40]!r} is reserved for the mixer"}, status=403
                )
            token = mint_token(self.secret, room, identity, ttl=6 * 3600)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        log.info("room server: open mode: token handed out for %s/%s", room, identity)
        return web.json_response({"token": token})

    async def _config(self, request: web.Request) -> web.Response:
        """What a client needs before it joins; ``iceServers`` (RTCIceServer dicts) carry TURN
        credentials only for ``?room=`` with a valid ``Authorization: Bearer`` room token."""
        identity = None
        scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
        room = request.query.get("room", "")
        if scheme.lower() == "bearer" and bearer and room:
            try:
                identity = verify_token(self.secret, bearer.strip(), room).identity
            except TokenError:
                identity = None
        return web.json_response(
            {
                "open": self.open_mode,
                "protocol": p.PROTOCOL_VERSION,
                "iceServers": self.ice.for_client(identity, time.time()),
            }
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "rooms": len(self.rooms)})

    async def _no_content(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html")


def _participant_info(state: Participant) -> p.ParticipantInfo:
    return p.ParticipantInfo(
        identity=state.identity,
        joined_at=state.joined_iso(),
        tracks=[p.TrackInfo(sid=t.sid, enabled=t.enabled) for t in state.tracks.values()],
    )


# --- CLI: mixer-ext room-server -----------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 7880)")
    parser.add_argument("--max-participants", type=int, help="override MIXER_ROOM_MAX_PARTICIPANTS")
    parser.add_argument(
        "--max-participant-duration",
        type=float,
        help="seconds; override MIXER_ROOM_MAX_PARTICIPANT_DURATION",
    )
    parser.add_argument(
        "--empty-timeout", type=float, help="seconds; override MIXER_ROOM_EMPTY_TIMEOUT"
    )
    parser.add_argument(
        "--open",
        action="store_true",
        default=None,
        help="hand out tokens to anyone (trusted demos only); same as MIXER_ROOM_OPEN=true",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port: {args.port} is not a port number")
    if args.max_participants is not None and args.max_participants < 1:
        raise ConfigError("--max-participants: must be at least 1")
    if args.max_participant_duration is not None and not 0 < args.max_participant_duration <= 86400:
        raise ConfigError("--max-participant-duration: must be in (0, 86400] seconds")
    if args.empty_timeout is not None and args.empty_timeout < 0:
        raise ConfigError("--empty-timeout: must be >= 0 seconds")
    try:
        server = RoomServer(
            settings,
            args.host,
            args.port,
            max_participants=args.max_participants,
            max_participant_duration=args.max_participant_duration,
            empty_timeout=args.empty_timeout,
            open_mode=args.open,
        )
    except ValidationError as exc:  # pragma: no cover - settings already validated
        raise ConfigError(str(exc).splitlines()[0]) from None
    return eventloop.run(_serve(server), settings.event_loop)


async def _serve(server: RoomServer) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {server.host}:{server.port}: {exc.strerror}") from None
    print(f"room server listening on {server.url}", flush=True)
    await stop.wait()
    await server.stop()
    return 0
