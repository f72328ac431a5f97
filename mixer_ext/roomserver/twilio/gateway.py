"""twilio-video.js clients in the embedded room server's rooms: the front-end (``GET /signaling``).

``TwilioGateway`` takes a socket through the TCMP hello and the ICE-server request to
``connect`` (admitted by the rooms owner, ``rooms.Rooms.join``, then handed to a
``session.TwilioSession``) or ``sync`` (a client back on a new socket: its session carries
on, ``_resume``), and serves the Video REST subset (``rest_routes``), recordings and
compositions (``media_routes``) on the same app.  It keeps the room ledger
(``ledger.RoomLedger``) and the recorder (``recording_rules``) attached to the owner,
and one task: ``twilio-speakers`` decides each room's dominant speaker every 0.2 s
(``roomserver.speakers``) and measures and reports network quality every second
(``roomserver.netquality``); it ends in ``stop()``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import WSMsgType, web

from mixer_ext.connectors.base import Reason
from mixer_ext.errors import ConfigError
from mixer_ext.iceservers import IceServers
from mixer_ext.roomserver.compose.runners import runner_from_settings
from mixer_ext.roomserver.limits import ROLE_PARTICIPANT, PreJoinGuard
from mixer_ext.roomserver.mediadb import FILENAME as MEDIA_DB_FILENAME
from mixer_ext.roomserver.mediadb import MediaDb
from mixer_ext.roomserver.names import check_room_name, for_log
from mixer_ext.roomserver.peer import PeerHost
from mixer_ext.roomserver.recording_rules import RoomRecorder
from mixer_ext.roomserver.recordings import MediaService, RoomRef
from mixer_ext.roomserver.rooms import Refusal, Refused, Room
from mixer_ext.roomserver.speakers import TICK, DominantSpeaker
from mixer_ext.roomserver.storage import LocalMediaStore, MediaUrlSigner
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
from mixer_ext.roomserver.twilio.ledger import RoomLedger
from mixer_ext.roomserver.twilio.media_routes import MediaRoutes
from mixer_ext.roomserver.twilio.rest_routes import VideoRest
from mixer_ext.roomserver.twilio.session import TASK_STOP_TIMEOUT, TwilioSession, flush
from mixer_ext.settings import Settings
from mixer_ext.tasks import current_task_in, stop_tasks

log = logging.getLogger(__name__)

SIGNALING_PATH = "/signaling"
#: the ``connect`` must follow the hello within this many seconds
CONNECT_TIMEOUT = 20.0
MAX_MESSAGE_BYTES = 256 * 1024
#: network quality is measured and reported every this many dominant-speaker ticks (1 s)
NETWORK_QUALITY_TICKS = 5


class TwilioGateway:
    """Serves twilio-video.js signaling into ``server``'s rooms.

    Tokens: twilio access tokens for ``account_sid`` signed with one of ``api_keys``
    ({``SK…``: secret}).  SIDs: the rooms owner gives each room an ``RM`` SID and each
    participant (of either protocol) a ``PA`` SID, stable for as long as it stays.
    """

    def __init__(
        self,
        server: PeerHost,
        *,
        account_sid: str,
        api_keys: Mapping[str, str],
        auth_token: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.server = server
        self.account_sid = account_sid
        self.api_keys = dict(api_keys)
        self.auth_token = auth_token
        self._handlers: set[asyncio.Task[Any]] = set()
        #: sessions by their ``SS`` id, for a ``sync`` on a new socket (``_resume``)
        self.sessions: dict[str, TwilioSession] = {}
        self.callbacks = StatusCallbacks(auth_token)
        settings = settings if settings is not None else Settings()
        #: each participant's data-track messages (all its data tracks together)
        self.data_message_rate = settings.room_data_message_rate
        #: STUN/TURN for the ``iced`` answer (TURN credentials per token identity)
        self.ice = IceServers.from_settings(settings)
        self.data_message_burst = settings.room_data_message_burst
        #: room and participant records (and their status callbacks), kept by roster events
        self.ledger = RoomLedger(
            account_sid,
            self.callbacks,
            record_by_default=settings.record_participants_on_connect,
        )
        server.rooms.attach(self.ledger)
        #: recordings, compositions and hooks (issue 23); the recorder follows the roster too
        self.media = MediaService(
            LocalMediaStore(
                settings.recordings_dir,
                min_free_bytes=settings.recordings_min_free_mb << 20,
                retention_seconds=settings.recordings_retention_days * 86400,
            ),
            runner_from_settings(settings),
            account_sid=account_sid,
            send=self.callbacks.send,
            next_sequence=self.callbacks.next_sequence,
            db=MediaDb(settings.recordings_dir / MEDIA_DB_FILENAME),
        )
        #: signs the temporary ``…/Media`` URLs (a secret of this process: they last 10 min)
        self.media_urls = MediaUrlSigner(secrets.token_bytes(32))
        self.recorder = RoomRecorder(self.media, self._recording_ref)
        self.recorder.on_change = self._recording_changed
        server.rooms.attach(self.recorder)
        #: each room's dominant speaker, by room SID, fed from RTP audio levels
        self.speakers: dict[str, DominantSpeaker] = {}
        self._speaker_task: asyncio.Task[None] | None = None

    @classmethod
    def from_environment(
        cls,
        server: PeerHost,
        environ: Mapping[str, str] | None = None,
        settings: Settings | None = None,
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
            settings=settings,
        )

    def _recording_changed(self, room: Room, is_recording: bool, revision: int) -> None:
        """Tell every twilio-video.js client in ``room`` (``recordingStarted``/``Stopped``)."""
        for participant in list(room.participants.values()):
            peer = participant.connection
            if isinstance(peer, TwilioSession):
                peer.recording_changed(is_recording, revision)

    def _recording_ref(self, room: Room) -> tuple[RoomRef, bool]:
        """The room as the recorder needs it, and whether it records from the start."""
        record = self.ledger.for_live(room)
        ref = RoomRef(
            sid=room.sid,
            name=room.name,
            started=room.created_at,
            status_callback=record.status_callback,
            status_callback_method=record.status_callback_method,
            room_type=record.type,
        )
        return ref, record.record_participants_on_connect

    def add_routes(self, app: web.Application) -> None:
        """``/signaling`` and the Video REST subset under ``/v1/Rooms``."""
        app.router.add_get(SIGNALING_PATH, self.handle)
        rest = VideoRest(self.server, self.ledger, self.authenticate)
        rest.add_routes(app)
        MediaRoutes(
            self.media,
            self.media_urls,
            self.authenticate,
            recorder=self.recorder,
            find_room=self.server.rooms.by_sid,
        ).add_routes(app)
        rest.add_fallback(app)

    def _ice_servers(self, token: str) -> list[dict[str, Any]]:
        """The ``iced`` answer: STUN for anyone, TURN for a valid access token's identity."""
        try:
            identity: str | None = verify_access_token(
                token, account_sid=self.account_sid, api_keys=self.api_keys, room=None
            ).identity
        except TwilioTokenError:
            identity = None  # the connect that follows is refused with the token's error
        return self.ice.for_client(identity, time.time())

    def authenticate(self, user: str, password: str) -> bool:
        """HTTP Basic for the Video REST: the account SID and auth token, or an API key."""
        expected = self.auth_token if user == self.account_sid else self.api_keys.get(user)
        return bool(expected) and hmac.compare_digest(password.encode(), str(expected).encode())

    async def start(self) -> None:
        """The media retention sweep; the room records follow the roster events."""
        self.media.start()
        self._speaker_task = asyncio.create_task(self._speaker_loop(), name="twilio-speakers")

    def speakers_of(self, room: Room) -> DominantSpeaker:
        found = self.speakers.get(room.sid)
        if found is None:
            found = self.speakers[room.sid] = DominantSpeaker()
        return found

    async def _speaker_loop(self) -> None:
        """Every ``TICK``: each room's dominant speaker decided, a change told to its
        twilio-video.js clients that asked (``dominantSpeaker: true``); every
        ``NETWORK_QUALITY_TICKS`` ticks the network quality of the rooms where a client
        asked for it (``networkQuality``)."""
        ticks = 0
        while True:
            await asyncio.sleep(TICK)
            ticks += 1
            if ticks % NETWORK_QUALITY_TICKS == 0:
                await self._network_quality()
            now = time.monotonic()
            for sid, detector in list(self.speakers.items()):
                room = self.server.rooms.by_sid(sid)
                if room is None:
                    del self.speakers[sid]
                    continue
                detector.keep({p.sid for p in room.participants.values()})
                changed, who = detector.tick(now)
                if not changed:
                    continue
                log.info("room server: %s: dominant speaker %s", for_log(room.name), who)
                for participant in list(room.participants.values()):
                    peer = participant.connection
                    if isinstance(peer, TwilioSession):
                        peer.media_signal("active_speaker", s.active_speaker(who))

    async def _network_quality(self) -> None:
        """Measure every twilio-video.js client in a room where one asked for network
        quality, then answer those that asked (their level, the others' at their verbosity)."""
        rooms: dict[str, list[TwilioSession]] = {}
        for session in list(self.sessions.values()):
            if not session.closed:
                rooms.setdefault(session.room.sid, []).append(session)
        for sessions in rooms.values():
            if not any(x.wants_network_quality for x in sessions):
                continue
            for session in sessions:
                try:
                    await session.measure_network()
                except Exception as exc:  # one client's stats never stop the others'
                    log.debug("room server: %s: no network stats: %s", session.label, exc)
            for session in sessions:
                session.report_network_quality(sessions)

    async def stop(self) -> None:
        await stop_tasks([self._speaker_task], TASK_STOP_TIMEOUT, log)
        await self.media.stop()  # recordings closed, compositions cancelled
        await asyncio.sleep(0)  # the last events (room-ended...) are queued by now
        await self.callbacks.stop()
        await stop_tasks(list(self._handlers), TASK_STOP_TIMEOUT, log)

    # --- one WebSocket ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        with current_task_in(self._handlers):
            return await self._handle(request)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.remote or "?"
        refused = self.server.admit_connection(peer)  # the room server's caps, shared
        if refused is not None:
            return refused
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES)
        conn = tc.TcmpServer(time.monotonic())
        session: TwilioSession | None = None
        reason: str = Reason.CONNECTION_LOST
        handed_over = False
        try:
            await ws.prepare(request)
            session = await self._await_connect(ws, conn, peer)
            if session is None:
                return ws
            self.server.connections.joined(peer)
            reason = await session.run()
            if reason == Reason.CONNECTION_LOST:
                # the socket dropped without ``bye``: the SDK comes back with ``sync`` on a
                # new one, whose handler carries the session on from then
                handed_over = await session.await_resume()
        finally:
            self.server.connections.closed(peer, joined=session is not None)
            if session is not None and not handed_over:
                await self.server.remove(session, reason)
                await session.close(None)  # (a no-op when the room server closed it)
                await session.wait_closed()
            elif not ws.closed:
                await flush(ws, conn)
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
            await flush(ws, conn)
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
                    if not isinstance(message, s.IceRequest | s.Connect | s.Disconnect | s.Sync):
                        raise s.SignalingError("connect first")
                except s.SignalingError as exc:
                    self.server.warn("twilio-refused", "room server: %s: refused: %s", label, exc)
                    if guard.error():  # MIXER_ROOM_MAX_ERRORS_BEFORE_JOIN
                        await self._refuse(ws, conn, label, exc.error)
                        return None
                    conn.send(s.error(exc.error), now)
                    continue
                if isinstance(message, s.IceRequest):
                    conn.send(s.iced(self._ice_servers(message.token)), now)
                elif isinstance(message, s.Connect):
                    return await self._admit(ws, conn, message, peer)
                elif isinstance(message, s.Sync):
                    return await self._resume(ws, conn, message, peer)
                else:
                    return None

    async def _resume(
        self, ws: web.WebSocketResponse, conn: tc.TcmpServer, sync: s.Sync, peer: str
    ) -> TwilioSession | None:
        """A client back on a new socket with ``sync`` (twilio-video.js retries for its
        session timeout, 30 s): the same participant, peer connection and media carry on.
        A session that is gone (its window ran out, it left) is refused with 53001, which
        the SDK reports as the reason it disconnected."""
        label = f"twilio <{peer}>"
        session = self.sessions.get(sync.session)
        if session is None or session.closed:
            await self._refuse(ws, conn, label, e.SIGNALING_CONNECTION_DISCONNECTED)
            return None
        try:
            claims = verify_access_token(
                sync.token,
                account_sid=self.account_sid,
                api_keys=self.api_keys,
                room=(session.room.name, session.room.sid),
            )
        except TwilioTokenError as exc:
            await self._refuse(ws, conn, label, exc.error)
            return None
        if claims.identity != session.identity:
            await self._refuse(ws, conn, label, e.ACCESS_TOKEN_INVALID.with_detail("identity"))
            return None
        if not await session.resume(ws, conn, sync):
            await self._refuse(ws, conn, label, e.SIGNALING_CONNECTION_DISCONNECTED)
            return None
        log.info("room server: %s resumed from %s (twilio-video.js sync)", session.label, peer)
        return session

    async def _refuse(
        self, ws: web.WebSocketResponse, conn: tc.TcmpServer, label: str, err: e.TwilioVideoError
    ) -> None:
        log.warning("room server: %s: connect refused (%d): %s", label, err.code, err.message)
        conn.send(s.error(err), time.monotonic())
        conn.bye()
        await flush(ws, conn)
        await ws.close()

    async def _admit(
        self, ws: web.WebSocketResponse, conn: tc.TcmpServer, connect: s.Connect, peer: str
    ) -> TwilioSession | None:
        rooms = self.server.rooms
        name = connect.name or ""
        label = f"twilio {for_log(name[:40])}/<{peer}>"
        try:
            check_room_name(name)
        except ValueError:
            await self._refuse(ws, conn, label, e.ROOM_NAME_INVALID.with_detail(name[:40]))
            return None
        live = rooms.get(name)
        names: tuple[str, ...] = (name,) if live is None else (name, live.sid)
        try:
            claims = verify_access_token(
                connect.token, account_sid=self.account_sid, api_keys=self.api_keys, room=names
            )
            # a Twilio access token has no mixer role: it never takes a mixer's identity
            admitted = rooms.join(
                name,
                claims.identity,
                time.monotonic(),
                role=ROLE_PARTICIPANT,
                auto_subscribe=connect.automatic_subscription,
            )
        except TwilioTokenError as exc:
            await self._refuse(ws, conn, label, exc.error)
            return None
        except Refused as exc:
            if exc.refusal is Refusal.ROOM_FULL:
                err = e.ROOM_MAX_PARTICIPANTS_EXCEEDED
            elif exc.refusal is Refusal.ROOM_NAME_INVALID:
                err = e.ROOM_NAME_INVALID.with_detail(name[:40])
            else:
                err = e.PARTICIPANT_IDENTITY_INVALID.with_detail(str(exc))
            await self._refuse(ws, conn, label, err)
            return None
        session = TwilioSession(self, ws, conn, admitted.room, admitted.participant, connect)
        admitted.participant.connection = session
        self.server.admitted(session, admitted.replaced)
        log.info(
            "room server: %s joined from %s (twilio-video.js, subscribe=%s%s)",
            session.label,
            peer,
            connect.automatic_subscription,
            f", declined {','.join(connect.declined)}" if connect.declined else "",
        )
        try:
            await session.start()
        except Exception as exc:
            log.warning("room server: %s: cannot answer the offer: %s", session.label, exc)
            session.fail(e.SERVER_REMOTE_DESCRIPTION_FAILED)
            return session
        if connect.automatic_subscription:
            self.server.subscribe_to_room(session)
        return session
