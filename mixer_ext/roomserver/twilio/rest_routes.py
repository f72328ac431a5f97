"""aiohttp handlers of the Video Rooms REST subset (``rest`` holds the formats).

Mounted by ``TwilioGateway.add_routes`` beside ``/signaling``.  A thin adapter: live rooms
are the rooms owner's (``rooms.Rooms``), changed through the server (``peer.PeerHost``);
the records the API shows are the ledger's (``ledger.RoomLedger``).  Auth: HTTP Basic
with ``MIXER_ACCOUNT_SID`` and ``MIXER_AUTH_TOKEN``, or an API key SID and its secret from
``MIXER_API_KEYS``.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

from mixer_ext.connectors.base import Reason
from mixer_ext.roomserver.peer import Peer, PeerHost
from mixer_ext.roomserver.rooms import (
    Participant,
    Refusal,
    Refused,
    Room,
)
from mixer_ext.roomserver.subscribe_rules import RuleError, SubscribeRule, parse_rules
from mixer_ext.roomserver.twilio import rest as r
from mixer_ext.roomserver.twilio.ledger import RoomLedger

log = logging.getLogger(__name__)

#: how the room server tells a participant removed through the REST API
REMOVED = "removed"


def _participant(record: r.RoomRecord, key: str) -> r.ParticipantRecord:
    if key in record.participants:
        return record.participants[key]
    # an identity: the one in the room, else the latest who was (records are in join order)
    named = [p for p in record.participants.values() if p.identity == key]
    present = [p for p in named if p.status != "disconnected"]
    if present or named:
        return (present or named)[-1]
    raise r.not_found(f"/Rooms/{record.sid}/Participants/{key[:40]}")


class VideoRest:
    """The handlers; ``base`` URLs in responses follow the request's Host."""

    def __init__(
        self, host: PeerHost, ledger: RoomLedger, authenticate: Callable[[str, str], bool]
    ) -> None:
        self.host = host
        self.ledger = ledger
        self._check_credentials = authenticate

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
        app.router.add_get(
            "/v1/Rooms/{room}/Participants/{p}/PublishedTracks/{t}", self._wrap(self.fetch_track)
        )
        rules = "/v1/Rooms/{room}/Participants/{p}/SubscribeRules"
        app.router.add_get(rules, self._wrap(self.fetch_rules))
        app.router.add_post(rules, self._wrap(self.update_rules))
        subscribed = "/v1/Rooms/{room}/Participants/{p}/SubscribedTracks"
        app.router.add_get(subscribed, self._wrap(self.list_subscribed))
        app.router.add_get(subscribed + "/{t}", self._wrap(self.fetch_subscribed))
        app.router.add_post(
            "/v1/Rooms/{room}/Participants/{p}/Anonymize", self._wrap(self.anonymize)
        )

    def add_fallback(self, app: web.Application) -> None:
        """Twilio's JSON 404 (20404) for any other path under ``/v1/Rooms`` (added last)."""
        app.router.add_route("*", "/v1/Rooms/{tail:.*}", self._wrap(self.no_such_resource))

    async def no_such_resource(self, request: web.Request) -> tuple[int, Any]:
        raise r.not_found(request.path[len("/v1") :][:120])

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
        if scheme.lower() != "basic" or not self._check_credentials(user, password):
            raise r.RestError(401, 20003, "Authenticate")

    @staticmethod
    def _base(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    # --- Rooms ---------------------------------------------------------------------------

    async def create_room(self, request: web.Request) -> tuple[int, Any]:
        rooms = self.host.rooms
        form = {k: str(v) for k, v in (await request.post()).items()}
        spec = r.parse_room_create(form, rooms.max_participants)
        try:
            room = rooms.create_room(
                spec.unique_name or None,  # none given: the room's SID names it
                time.monotonic(),
                max_participants=spec.max_participants,
                max_participant_duration=spec.max_participant_duration,
                empty_timeout=60.0 * (spec.empty_room_timeout or spec.unused_room_timeout or 5),
            )
        except Refused as exc:
            if exc.refusal is Refusal.ROOM_EXISTS:
                raise r.RestError(400, 53113, "Room exists") from None
            raise r.RestError(400, 53100, str(exc)) from None
        record = self.ledger.for_live(room)
        record.type = spec.type
        record.status_callback = spec.status_callback
        record.status_callback_method = spec.status_callback_method
        record.empty_room_timeout = spec.empty_room_timeout or 5
        record.unused_room_timeout = spec.unused_room_timeout or 5
        if spec.record_participants_on_connect is not None:
            record.record_participants_on_connect = spec.record_participants_on_connect
        log.info("video REST: room %s created as %s", room.name, record.sid)
        self.ledger.callbacks.room_event(record, "room-created")
        return 201, r.render_room(record, self._base(request))

    async def fetch_room(self, request: web.Request) -> tuple[int, Any]:
        return 200, r.render_room(self.ledger.find(request.match_info["room"]), self._base(request))

    async def list_rooms(self, request: web.Request) -> tuple[int, Any]:
        q = request.query
        dates = r.date_filter(q)
        rooms = [
            room
            for room in reversed(self.ledger.rooms.values())
            if q.get("Status") in (None, room.status)
            and q.get("UniqueName") in (None, room.unique_name)
            and r.created_within(room.created, dates)
        ]
        base = self._base(request)
        items = [r.render_room(room, base) for room in rooms]
        return 200, r.page(items, "rooms", base=base, path="/v1/Rooms", query=dict(q))

    async def update_room(self, request: web.Request) -> tuple[int, Any]:
        record = self.ledger.find(request.match_info["room"])
        r.parse_status_update({k: str(v) for k, v in (await request.post()).items()}, "completed")
        live = self.host.rooms.get(record.unique_name)
        if record.status == "in-progress" and live is not None and live.sid == record.sid:
            gone = await self.host.end_room(live, Reason.ROOM_ENDED)
            log.info("video REST: room %s completed (%d disconnected)", record.sid, gone)
        return 200, r.render_room(record, self._base(request))

    # --- Participants ------------------------------------------------------------------------

    async def list_participants(self, request: web.Request) -> tuple[int, Any]:
        record = self.ledger.find(request.match_info["room"])
        q = request.query
        dates = r.date_filter(q)
        status = q.get("Status")
        # Twilio: without Status, an in-progress room lists who is in it (connected, and
        # here reconnecting), a completed room its disconnected participants
        wanted = (
            {status}
            if status is not None
            else {"connected", "reconnecting"}
            if record.status == "in-progress"
            else {"disconnected"}
        )
        base = self._base(request)
        items = [
            r.render_participant(record, p, base)
            for p in record.participants.values()
            if p.status in wanted
            and q.get("Identity") in (None, p.identity)
            and r.created_within(p.start, dates)
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
        live = self.host.rooms.get(record.unique_name)
        participant = None if live is None else live.participants.get(p.identity)
        if live is not None and participant is not None and participant.sid == p.sid:
            log.info("video REST: %s/%s disconnected", record.sid, p.sid)
            peer = cast(Peer | None, participant.connection)
            if peer is not None:
                await self.host.remove(peer, REMOVED)
            else:
                self.host.rooms.leave(live, participant, REMOVED, time.monotonic())
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

    async def fetch_track(self, request: web.Request) -> tuple[int, Any]:
        record = self.ledger.find(request.match_info["room"])
        p = _participant(record, request.match_info["p"])
        key = request.match_info["t"]
        # a track SID, or its name as Twilio also allows
        found = p.tracks.get(key) or next((t for t in p.tracks.values() if t.name == key), None)
        if found is None:
            raise r.not_found(f"/Rooms/{record.sid}/Participants/{p.sid}/PublishedTracks/{key}")
        return 200, r.render_track(record, p, found, self._base(request))

    # --- subscriptions (Twilio's Track Subscriptions API) --------------------------------------

    def _live(
        self, record: r.RoomRecord, p: r.ParticipantRecord
    ) -> tuple[Room, Participant] | None:
        room = self.host.rooms.get(record.unique_name)
        if room is None or room.sid != record.sid:
            return None
        live = room.participants.get(p.identity)
        return None if live is None or live.sid != p.sid else (room, live)

    def _rules_body(
        self, record: r.RoomRecord, p: r.ParticipantRecord, live: Participant | None
    ) -> dict[str, Any]:
        rules: tuple[SubscribeRule, ...] | None = None if live is None else live.subscribe_rules
        if rules is None:  # what automaticSubscription chose, as rules
            auto = live is not None and live.auto_subscribe
            shown = [{"type": "include" if auto else "exclude", "all": True}]
        else:
            shown = [rule.render() for rule in rules]
        updated = None if live is None else live.rules_updated
        return {
            "participant_sid": p.sid,
            "room_sid": record.sid,
            "rules": shown,
            "date_created": r.iso(p.start),
            "date_updated": r.iso(updated or p.start),
        }

    async def fetch_rules(self, request: web.Request) -> tuple[int, Any]:
        record = self.ledger.find(request.match_info["room"])
        p = _participant(record, request.match_info["p"])
        live = self._live(record, p)
        return 200, self._rules_body(record, p, None if live is None else live[1])

    async def update_rules(self, request: web.Request) -> tuple[int, Any]:
        record = self.ledger.find(request.match_info["room"])
        p = _participant(record, request.match_info["p"])
        form = await request.post()
        raw = form.get("Rules")
        if not isinstance(raw, str):
            raise r.RestError(400, 20001, "Rules is required (a JSON list of rules)")
        try:
            rules = parse_rules(raw)
        except RuleError as exc:
            raise r.RestError(400, 20001, f"Rules: {exc}") from None
        live = self._live(record, p)
        if live is None or not self.host.set_subscribe_rules(live[0], live[1], rules):
            raise r.RestError(400, 20001, "the participant is not connected")
        log.info("video REST: %s/%s subscribe rules updated", record.sid, p.sid)
        return 202, self._rules_body(record, p, live[1])

    def _subscribed(self, record: r.RoomRecord, p: r.ParticipantRecord, base: str) -> list[Any]:
        live = self._live(record, p)
        if live is None:
            return []
        room, subscriber = live
        out = []
        for other in room.participants.values():
            for track in other.tracks.values():
                if track.sid not in subscriber.subscriptions:
                    continue
                out.append(
                    {
                        "sid": track.sid,
                        "participant_sid": subscriber.sid,
                        "publisher_sid": other.sid,
                        "room_sid": record.sid,
                        "name": track.name,
                        "date_created": r.iso(p.start),
                        "date_updated": r.iso(p.start),
                        "enabled": track.enabled,
                        "kind": track.kind,
                        "url": f"{base}/v1/Rooms/{record.sid}/Participants/{p.sid}"
                        f"/SubscribedTracks/{track.sid}",
                    }
                )
        return out

    async def list_subscribed(self, request: web.Request) -> tuple[int, Any]:
        record = self.ledger.find(request.match_info["room"])
        p = _participant(record, request.match_info["p"])
        base = self._base(request)
        path = f"/v1/Rooms/{record.sid}/Participants/{p.sid}/SubscribedTracks"
        items = self._subscribed(record, p, base)
        return 200, r.page(
            items, "subscribed_tracks", base=base, path=path, query=dict(request.query)
        )

    async def fetch_subscribed(self, request: web.Request) -> tuple[int, Any]:
        record = self.ledger.find(request.match_info["room"])
        p = _participant(record, request.match_info["p"])
        key = request.match_info["t"]
        for item in self._subscribed(record, p, self._base(request)):
            if item["sid"] == key:
                return 200, item
        raise r.not_found(f"/Rooms/{record.sid}/Participants/{p.sid}/SubscribedTracks/{key}")

    async def anonymize(self, request: web.Request) -> tuple[int, Any]:
        """Twilio's Anonymize: a departed participant's identity becomes its SID."""
        record = self.ledger.find(request.match_info["room"])
        p = _participant(record, request.match_info["p"])
        if p.status != "disconnected":
            raise r.RestError(400, 20001, "only a disconnected participant can be anonymized")
        p.identity = p.sid
        body = r.render_participant(record, p, self._base(request))
        body["url"] += "/Anonymize"
        body.pop("links", None)
        return 200, body
