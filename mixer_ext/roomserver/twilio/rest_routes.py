"""aiohttp handlers of the Video Rooms REST subset (``rest`` holds the formats).

Mounted by ``TwilioGateway.add_routes`` beside ``/signaling``.  Records of rooms and
participants live in the gateway (``RoomLedger``): live state comes from the room server
(both protocols' participants), completed rooms and departed participants stay fetchable
(the newest ``HISTORY`` rooms).  Auth: HTTP Basic with ``MIXER_ACCOUNT_SID`` and
``MIXER_AUTH_TOKEN``, or an API key SID and its secret from ``MIXER_API_KEYS``.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from mixer_ext.connectors.base import Reason
from mixer_ext.roomserver.state import Room
from mixer_ext.roomserver.tokens import check_name
from mixer_ext.roomserver.twilio import rest as r
from mixer_ext.roomserver.twilio.sids import ROOM, new_sid

if TYPE_CHECKING:
    from mixer_ext.roomserver.twilio.gateway import TwilioGateway

log = logging.getLogger(__name__)

HISTORY = 1000
#: how the room server tells a participant removed through the REST API
REMOVED = "removed"


class RoomLedger:
    """Room and participant records, kept in step with the room server's live rooms."""

    def __init__(self, gateway: TwilioGateway) -> None:
        self.gateway = gateway
        self.rooms: OrderedDict[str, r.RoomRecord] = OrderedDict()
        #: room SID -> the live Room object it describes
        self._live: dict[str, Room] = {}

    def for_live(self, room: Room) -> r.RoomRecord:
        """The record of a live room (made on first sight: rooms the SDK or a bot created)."""
        for sid, live in self._live.items():
            if live is room:
                return self.rooms[sid]
        record = r.RoomRecord(
            sid=new_sid(ROOM),
            unique_name=room.name,
            account_sid=self.gateway.account_sid,
            max_participants=room.max_participants,
            max_participant_duration=int(room.max_participant_duration),
            empty_room_timeout=max(1, round(room.empty_timeout / 60)),
        )
        self._add(record, room)
        return record

    def _add(self, record: r.RoomRecord, room: Room) -> None:
        self.rooms[record.sid] = record
        self._live[record.sid] = room
        while len(self.rooms) > HISTORY:
            old, _ = self.rooms.popitem(last=False)
            self._live.pop(old, None)

    def refresh(self) -> None:
        """Bring every record up to date with the room server; report what changed."""
        server = self.gateway.server
        emit = self.gateway.callbacks.room_event
        for room in list(server.rooms.values()):
            self.for_live(room)
        now = r.now_utc()
        for sid, record in self.rooms.items():
            live = self._live.get(sid)
            if record.status != "in-progress":
                continue
            ended = live is None or server.rooms.get(record.unique_name) is not live
            present = set() if ended or live is None else set(live.participants)
            for p in record.participants.values():
                if p.status == "connected" and p.identity not in present:
                    for t in p.tracks.values():
                        emit(record, "track-removed", p, t)
                    p.status, p.end = "disconnected", now
                    emit(record, "participant-disconnected", p)
            if ended or live is None:
                record.status, record.end = "completed", now
                self._live.pop(sid, None)
                emit(record, "room-ended")
                continue
            connected = {
                p.identity: p for p in record.participants.values() if p.status == "connected"
            }
            for identity, state in live.participants.items():
                found = connected.get(identity)
                if found is not None:
                    p = found
                else:
                    p = r.ParticipantRecord(
                        sid=self.gateway.participant_sid(live.name, identity), identity=identity
                    )
                    if p.sid in record.participants:  # the same SID came back: a new one
                        p.sid = self.gateway.participant_sid(live.name, identity, fresh=True)
                    record.participants[p.sid] = p
                    emit(record, "participant-connected", p)
                session = server.sessions.get((live.name, identity))
                name = getattr(session, "track_name", None)
                for track in state.tracks.values():
                    known = p.tracks.get(track.sid)
                    if known is not None:
                        t = known
                    else:
                        p.tracks[track.sid] = t = r.TrackRecord(
                            sid=track.sid, name=name or track.sid
                        )
                        emit(record, "track-added", p, t)
                    t.enabled = track.enabled
                for gone in [t for sid_, t in p.tracks.items() if sid_ not in state.tracks]:
                    del p.tracks[gone.sid]
                    emit(record, "track-removed", p, gone)

    def find(self, key: str) -> r.RoomRecord:
        self.refresh()
        if key in self.rooms:
            return self.rooms[key]
        for record in reversed(self.rooms.values()):  # a unique name: the in-progress room
            if record.unique_name == key and record.status == "in-progress":
                return record
        raise r.not_found(f"/Rooms/{key[:40]}")

    def live(self, record: r.RoomRecord) -> Room | None:
        return self._live.get(record.sid)


def _participant(record: r.RoomRecord, key: str) -> r.ParticipantRecord:
    if key in record.participants:
        return record.participants[key]
    for p in record.participants.values():
        if p.identity == key and p.status == "connected":
            return p
    raise r.not_found(f"/Rooms/{record.sid}/Participants/{key[:40]}")


class VideoRest:
    """The handlers; ``base`` URLs in responses follow the request's Host."""

    def __init__(self, gateway: TwilioGateway, ledger: RoomLedger) -> None:
        self.gateway = gateway
        self.ledger = ledger

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/Rooms", self._wrap(self.create_room))
        app.router.add_get("/v1/Rooms", self._wrap(self.list_rooms))
        app.router.add_get("/v1/Rooms/{room}", self._wrap(self.fetch_room))
        app.router.add_post("/v1/Rooms/{room}", self._wrap(self.update_room))
        app.router.add_get("/v1/Rooms/{room}/Participants", self._wrap(self.list_participants))
        app.router.add_get("/v1/Rooms/{room}/Participants/{p}", self._wrap(self.fetch_participant))
        app.router.add_post(
            "/v1/Rooms/{room}/Participants/{p}", self._wrap(self.update_participant)
        )
        app.router.add_get(
            "/v1/Rooms/{room}/Participants/{p}/PublishedTracks", self._wrap(self.list_tracks)
        )

    def _wrap(self, handler: Any) -> Any:
        async def wrapped(request: web.Request) -> web.Response:
            try:
                self._authenticate(request)
                status, body = await handler(request)
            except r.RestError as exc:
                return web.json_response(exc.render(), status=exc.status)
            return web.json_response(body, status=status)

        return wrapped

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            user = password = ""
        expected = None
        if scheme.lower() == "basic":
            if user == self.gateway.account_sid:
                expected = self.gateway.auth_token
            else:
                expected = self.gateway.api_keys.get(user)
        if not expected or not hmac.compare_digest(password.encode(), expected.encode()):
            raise r.RestError(401, 20003, "Authenticate")

    @staticmethod
    def _base(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    # --- Rooms ---------------------------------------------------------------------------

    async def create_room(self, request: web.Request) -> tuple[int, Any]:
        server = self.gateway.server
        form = {k: str(v) for k, v in (await request.post()).items()}
        spec = r.parse_room_create(form, server.max_participants)
        name = spec.unique_name or new_sid(ROOM)
        try:
            check_name("room", name)
        except ValueError as exc:
            raise r.RestError(400, 53100, str(exc)) from None
        async with server._lock:
            if name in server.rooms:
                raise r.RestError(400, 53113, "Room exists")
            room = Room(
                name,
                now=time.monotonic(),
                max_participants=spec.max_participants or server.max_participants,
                max_participant_duration=float(
                    spec.max_participant_duration or server.max_participant_duration
                ),
                empty_timeout=60.0 * (spec.empty_room_timeout or spec.unused_room_timeout or 5),
            )
            server.rooms[name] = room
        record = self.ledger.for_live(room)
        record.type = spec.type
        record.status_callback = spec.status_callback
        record.status_callback_method = spec.status_callback_method
        record.empty_room_timeout = spec.empty_room_timeout or 5
        record.unused_room_timeout = spec.unused_room_timeout or 5
        log.info("video REST: room %s created as %s", name, record.sid)
        self.gateway.callbacks.room_event(record, "room-created")
        return 201, r.render_room(record, self._base(request))

    async def fetch_room(self, request: web.Request) -> tuple[int, Any]:
        return 200, r.render_room(self.ledger.find(request.match_info["room"]), self._base(request))

    async def list_rooms(self, request: web.Request) -> tuple[int, Any]:
        self.ledger.refresh()
        q = request.query
        rooms = [
            room
            for room in reversed(self.ledger.rooms.values())
            if q.get("Status") in (None, room.status)
            and q.get("UniqueName") in (None, room.unique_name)
        ]
        base = self._base(request)
        items = [r.render_room(room, base) for room in rooms]
        return 200, r.page(items, "rooms", base=base, path="/v1/Rooms", query=dict(q))

    async def update_room(self, request: web.Request) -> tuple[int, Any]:
        record = self.ledger.find(request.match_info["room"])
        r.parse_status_update({k: str(v) for k, v in (await request.post()).items()}, "completed")
        live = self.ledger.live(record)
        server = self.gateway.server
        if record.status == "in-progress" and live is not None:
            sessions = server._room_sessions(live.name)
            log.info("video REST: room %s completed (%d disconnected)", record.sid, len(sessions))
            await asyncio.gather(*(server._remove(s, Reason.ROOM_ENDED) for s in sessions))
            if server.rooms.get(live.name) is live:
                server._drop_room(live.name)
        self.ledger.refresh()
        return 200, r.render_room(record, self._base(request))

    # --- Participants ------------------------------------------------------------------------

    async def list_participants(self, request: web.Request) -> tuple[int, Any]:
        record = self.ledger.find(request.match_info["room"])
        q = request.query
        base = self._base(request)
        items = [
            r.render_participant(record, p, base)
            for p in record.participants.values()
            if q.get("Status") in (None, p.status) and q.get("Identity") in (None, p.identity)
        ]
        path = f"/v1/Rooms/{record.sid}/Participants"
        return 200, r.page(items, "participants", base=base, path=path, query=dict(q))

    async def fetch_participant(self, request: web.Request) -> tuple[int, Any]:
        record = self.ledger.find(request.match_info["room"])
        p = _participant(record, request.match_info["p"])
        return 200, r.render_participant(record, p, self._base(request))

    async def update_participant(self, request: web.Request) -> tuple[int, Any]:
        record = self.ledger.find(request.match_info["room"])
        p = _participant(record, request.match_info["p"])
        form = {k: str(v) for k, v in (await request.post()).items()}
        r.parse_status_update(form, "disconnected")
        live = self.ledger.live(record)
        server = self.gateway.server
        if p.status == "connected" and live is not None:
            session = server.sessions.get((live.name, p.identity))
            if session is not None:
                log.info("video REST: %s/%s disconnected", record.sid, p.sid)
                await server._remove(session, REMOVED)
        self.ledger.refresh()
        return 200, r.render_participant(record, p, self._base(request))

    async def list_tracks(self, request: web.Request) -> tuple[int, Any]:
        record = self.ledger.find(request.match_info["room"])
        p = _participant(record, request.match_info["p"])
        base = self._base(request)
        items = [r.render_track(record, p, t, base) for t in p.tracks.values()]
        path = f"/v1/Rooms/{record.sid}/Participants/{p.sid}/PublishedTracks"
        return 200, r.page(
            items, "published_tracks", base=base, path=path, query=dict(request.query)
        )
