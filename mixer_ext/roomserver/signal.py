"""The project's own signaling front-end (``GET /v1/signal``, ``mixer_ext.roomserver.protocol``).

A socket is counted against the server's connection caps, read until a valid ``join``
(refused after ``room_join_timeout`` seconds or its ``room_max_errors_before_join``-th
refused message), admitted by the rooms owner (``Rooms.join``) and handed to a
``session.Session``; then its messages are read until it leaves, breaks or runs out of
its message budget (``room_message_rate`` per second, ``room_message_burst`` at once; the
answer to a pending server offer is free), when it is closed with ``rate-limited``.

A thin adapter: it reaches the server only through ``SignalHost`` (``peer.PeerHost`` and
the settings it reads) and the rooms owner's public methods.  Limits: issue 16.1 and 16.4.

What this protocol does not do (README "Not supported"): a dropped socket is a departure
(no reconnection window: that is the twilio-video.js front-end's), and a participant
publishes at most one audio track.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMsgType, web

from mixer_ext import metrics
from mixer_ext.connectors.base import Reason
from mixer_ext.roomserver import protocol as p
from mixer_ext.roomserver.limits import PreJoinGuard
from mixer_ext.roomserver.names import for_log
from mixer_ext.roomserver.peer import PeerHost
from mixer_ext.roomserver.rooms import Refusal as JoinRefusal
from mixer_ext.roomserver.rooms import Refused
from mixer_ext.roomserver.session import TASK_STOP_TIMEOUT, Session
from mixer_ext.roomserver.tokens import TokenError, verify_token
from mixer_ext.tasks import current_task_in, stop_tasks

log = logging.getLogger(__name__)

#: frames above this many times the cap are cut by aiohttp itself (connection closed)
HARD_LIMIT_FACTOR = 4
#: a joined connection's messages may be this much longer per m-line it has (its
#: subscriptions and its published track: ~1.7 KB each in aiortc's SDP); the socket's own
#: cut-off leaves that room for the largest room the server allows
SDP_BYTES_PER_PARTICIPANT = 4096


class SignalHost(PeerHost, Protocol):
    """What the own protocol's front-end reads from the server, besides ``PeerHost``."""

    secret: str
    max_message_bytes: int
    max_participants: int
    join_timeout: float


class OwnSignaling:
    """Serves ``GET /v1/signal`` into ``host``'s rooms; its socket handlers end in ``stop()``."""

    def __init__(self, host: SignalHost) -> None:
        self.host = host
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def open_sockets(self) -> int:
        """How many signaling sockets are being served now."""
        return len(self._handlers)

    async def stop(self) -> None:
        """Stop the socket handlers still running (their sessions were closed before)."""
        await stop_tasks(list(self._handlers), TASK_STOP_TIMEOUT, log)

    def _reject(self, label: str, err: p.ProtocolError) -> p.ErrorMsg:
        """Count and log a refused message; the error message to send back to its sender."""
        metrics.ROOM_SERVER_REJECTED_MESSAGES.labels(err.code).inc()
        self.host.warn(
            f"message:{err.code}", "room server: %s: message refused (%s): %s", label, err.code, err
        )
        return p.ErrorMsg(code=err.code, message=str(err))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        with current_task_in(self._handlers):
            return await self._handle(request)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.remote or "?"
        refused = self.host.admit_connection(peer)
        if refused is not None:
            return refused
        joined = False
        try:
            ws = web.WebSocketResponse(
                max_msg_size=max(
                    self.host.max_message_bytes * HARD_LIMIT_FACTOR,
                    self.host.max_message_bytes
                    + SDP_BYTES_PER_PARTICIPANT * (self.host.max_participants + 1),
                ),
                heartbeat=20.0,
            )
            await ws.prepare(request)
            session = await self._await_join(ws, peer)
            if session is None:
                await ws.close()
                return ws
            self.host.connections.joined(peer)
            joined = True
            await self._serve_session(ws, session)
            return ws
        finally:
            self.host.connections.closed(peer, joined=joined)

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
                        limit = self.host.max_message_bytes + SDP_BYTES_PER_PARTICIPANT * (
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
                            f"more than {self.host.message_burst} messages at once or "
                            f"{self.host.message_rate:g} per second"
                        )
                        self.host.warn(
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
                    self.host.warn(
                        "websocket-error",
                        "room server: %s: websocket error: %s",
                        session.label,
                        ws_error,
                    )
                    break
        finally:
            await self.host.remove(session, reason, goodbye)

    async def _await_join(self, ws: web.WebSocketResponse, peer: str) -> Session | None:
        """Read messages until a valid ``join``; admit it or refuse it with a reason.

        The socket is refused after ``join_timeout`` seconds without a join, or at
        its ``max_errors_before_join``-th refused message.
        """
        deadline = time.monotonic() + self.host.join_timeout
        label = f"<{peer}>"
        guard = PreJoinGuard(self.host.max_errors_before_join)
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
                message = p.parse_client_message(msg.data, self.host.max_message_bytes)
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
        self.host.warn(
            f"join:{reason}", "room server: %s: join refused (%s): %s", label, reason, message
        )
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(p.encode(p.DisconnectedMsg(reason=reason, message=message)))

    async def _admit(self, ws: web.WebSocketResponse, join: p.Join, peer: str) -> Session | None:
        named = join.room
        # the hosted extension's context names the room by its RM SID
        join = join.model_copy(update={"room": self.host.rooms.resolve(join.room)})
        label = f"{for_log(join.room[:40])}/<{peer}>"
        try:
            # a token for the room's SID admits as one for its unique name
            claims = verify_token(self.host.secret, join.token, named)
            admitted = self.host.rooms.join(
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
        session = Session(self.host, ws, room, participant, join, self.host.new_bucket())
        participant.connection = session
        self.host.admitted(session, admitted.replaced)
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
                    p.participant_info(state)
                    for state in room.participants.values()
                    if state is not participant
                ],
            )
        )
        if join.publish:
            session.start_publishing()
        if join.auto_subscribe:
            self.host.subscribe_to_room(session)
        return session

    def _set_enabled(self, session: Session, enabled: bool) -> None:
        if session.track_sid is None and session.publish_transceiver is not None:
            session.publish_enabled = enabled  # its track is on its way: it starts so
            return
        changed = (
            None
            if session.track_sid is None
            else self.host.rooms.set_track_enabled(
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
