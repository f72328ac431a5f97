"""The embedded room server: one aiohttp application, its lifecycle and the roster's effects.

One port serves the project's own signaling (``signal.OwnSignaling``, ``GET /v1/signal``),
the operator REST and the speaker page (``rest.OperatorRest``) and, when configured, the
twilio-video.js front-end and the Video REST subset (``twilio.gateway.TwilioGateway``).
``cli`` runs it as ``mixer-ext room-server``.

Media: one ``RTCPeerConnection`` per participant carries its published tracks and all its
subscriptions; a published track's encoded Opus is forwarded by a ``PacketFanout`` to a
bounded ``ForwardedTrack`` per subscriber (``mixer_ext.roomserver.forward``).

Rooms, participants, tracks and admission belong to the rooms owner
(``mixer_ext.roomserver.rooms.Rooms``); this server is one of its listeners (it tells the
other connections what changed, subscribes the auto-subscribers and keeps the gauges) and
the ``peer.PeerHost`` its front-ends use.  The room rules (maximum participant duration,
lapsed reconnections, the empty-room timeout) are the owner's ``tick``, run by one
housekeeping task every ``HOUSEKEEPING_PERIOD`` seconds.

Limits (``mixer_ext.roomserver.limits``, issue 16.1 and 16.4): sockets not joined yet and
sockets per address are capped before the WebSocket handshake (503), for every front-end
(``admit_connection``); track state updates wait in each receiver's outbox one per
(identity, track), the latest value winning.  Warnings about refused messages and
connections are rate-limited per kind (``warn``), so a flood never becomes a log flood.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import cast

from aiohttp import web

from mixer_ext import metrics
from mixer_ext.connectors.base import Reason
from mixer_ext.iceservers import IceServers
from mixer_ext.redact import add_secret
from mixer_ext.roomserver import protocol as p
from mixer_ext.roomserver.limits import (
    ConnectionLimits,
    LogThrottle,
    Refusal,
    TokenBucket,
)
from mixer_ext.roomserver.names import for_log
from mixer_ext.roomserver.peer import Peer
from mixer_ext.roomserver.rest import OperatorRest
from mixer_ext.roomserver.rooms import (
    Participant,
    ParticipantJoined,
    ParticipantLeft,
    Room,
    RoomCreated,
    RoomEnded,
    Rooms,
    RosterEvent,
    TrackPublished,
    TrackUnpublished,
)
from mixer_ext.roomserver.session import TASK_STOP_TIMEOUT
from mixer_ext.roomserver.signal import OwnSignaling
from mixer_ext.roomserver.subscribe_rules import SubscribeRule
from mixer_ext.roomserver.tokens import secret_from
from mixer_ext.roomserver.twilio.gateway import TwilioGateway
from mixer_ext.settings import Settings
from mixer_ext.tasks import stop_tasks

log = logging.getLogger(__name__)

DEFAULT_PORT = 7880
HOUSEKEEPING_PERIOD = 0.25
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
        admin_token = (
            settings.room_admin_token.get_secret_value() if settings.room_admin_token else None
        )
        for credential in (self.secret, admin_token):  # never in a log line, whoever logs
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
        #: the front-ends: the own protocol, the operator REST (and the speaker page)
        self.signal = OwnSignaling(self)
        self.rest = OperatorRest(
            self,
            secret=self.secret,
            admin_token=admin_token,
            open_mode=self.open_mode,
            mixer_identities=self.mixer_identities,
            ice=self.ice,
        )
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
        app.router.add_get(p.SIGNAL_PATH, self.signal.handle)
        self.rest.add_routes(app)
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
        await self.signal.stop()
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

    # --- what every front-end shares ---------------------------------------------------------

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

    def new_bucket(self) -> TokenBucket:
        """The message budget of one joined connection."""
        return TokenBucket(self.message_rate, self.message_burst, now=time.monotonic())
