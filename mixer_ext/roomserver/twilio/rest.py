"""The Video Rooms REST API v1 subset, as the official ``twilio`` client sends it, with no I/O.

Resources (Twilio's names and JSON fields; dates RFC 3339 UTC without fractions):

* ``Rooms``: create (``UniqueName``, ``Type``, ``MaxParticipants``, ``MaxParticipantDuration``,
  ``EmptyRoomTimeout``/``UnusedRoomTimeout`` in minutes, ``StatusCallback``,
  ``StatusCallbackMethod``), fetch by ``RM`` SID or unique name, list (``Status``,
  ``UniqueName``, ``DateCreatedAfter``, ``DateCreatedBefore``, ``PageSize``, ``Page``),
  update ``Status=completed``;
* ``Rooms/{Room}/Participants``: list (``Status``: without it, as Twilio, the connected ones
  of an in-progress room and the disconnected ones of a completed room; ``Identity``,
  ``DateCreatedAfter``, ``DateCreatedBefore``), fetch by ``PA`` SID or identity (a connected
  participant's, else the latest), update ``Status=disconnected``;
* ``Rooms/{Room}/Participants/{Participant}/PublishedTracks``: list.

Lists are Twilio pages: ``{"<key>": [...], "meta": {"page", "page_size", "first_page_url",
"previous_page_url", "url", "next_page_url", "key"}}``.  Errors are Twilio's
``{"code", "message", "more_info", "status"}``, which the client raises as
``TwilioRestException`` with that code.  Only audio rooms exist here: every room is ``group``
and ``audio_only``; ``RecordParticipantsOnConnect`` records every published audio track
(``roomserver/recordings.py``); media regions are not offered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
ROOM_TYPES = ("group", "group-small", "peer-to-peer", "go")
#: Twilio's limits for MaxParticipantDuration (seconds)
MIN_PARTICIPANT_DURATION, MAX_PARTICIPANT_DURATION = 600, 86400


class RestError(Exception):
    """A refused request: HTTP ``status`` and Twilio ``code``."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def render(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


def not_found(what: str) -> RestError:
    return RestError(404, 20404, f"The requested resource {what} was not found")


def date_filter(query: Mapping[str, str]) -> tuple[datetime | None, datetime | None]:
    """``DateCreatedAfter``/``DateCreatedBefore`` (ISO 8601, UTC when no offset is given)."""
    bounds: list[datetime | None] = []
    for name in ("DateCreatedAfter", "DateCreatedBefore"):
        raw = query.get(name)
        if not raw:
            bounds.append(None)
            continue
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            raise RestError(400, 20001, f"{name} is not an ISO 8601 date: {raw[:40]!r}") from None
        bounds.append(when if when.tzinfo is not None else when.replace(tzinfo=UTC))
    return bounds[0], bounds[1]


def created_within(created: datetime, bounds: tuple[datetime | None, datetime | None]) -> bool:
    """Twilio's filter: created strictly after ``DateCreatedAfter``, before ``…Before``."""
    after, before = bounds
    return (after is None or created > after) and (before is None or created < before)


def iso(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class TrackRecord:
    sid: str
    name: str
    kind: str = "audio"
    enabled: bool = True
    created: datetime = field(default_factory=now_utc)


@dataclass
class ParticipantRecord:
    sid: str
    identity: str
    status: str = "connected"
    start: datetime = field(default_factory=now_utc)
    end: datetime | None = None
    tracks: dict[str, TrackRecord] = field(default_factory=dict)


@dataclass
class RoomRecord:
    sid: str
    unique_name: str
    account_sid: str
    type: str = "group"
    status: str = "in-progress"
    max_participants: int = 50
    max_participant_duration: int = 14400
    empty_room_timeout: int = 5
    unused_room_timeout: int = 5
    status_callback: str | None = None
    status_callback_method: str = "POST"
    record_participants_on_connect: bool = False
    created: datetime = field(default_factory=now_utc)
    end: datetime | None = None
    participants: dict[str, ParticipantRecord] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RoomCreate:
    unique_name: str | None
    type: str
    max_participants: int | None
    max_participant_duration: int | None
    empty_room_timeout: int | None
    unused_room_timeout: int | None
    status_callback: str | None
    status_callback_method: str
    #: None: the server's default (``MIXER_RECORD_PARTICIPANTS_ON_CONNECT``)
    record_participants_on_connect: bool | None = None


def _int_param(form: Mapping[str, str], name: str, lo: int, hi: int, code: int) -> int | None:
    raw = form.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise RestError(400, code, f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise RestError(400, code, f"{name} must be between {lo} and {hi}")
    return value


def parse_room_create(form: Mapping[str, str], max_participants_limit: int) -> RoomCreate:
    kind = form.get("Type", "group") or "group"
    if kind not in ROOM_TYPES:
        raise RestError(400, 53108, f"RoomType is not valid: {kind[:20]!r}")
    method = (form.get("StatusCallbackMethod") or "POST").upper()
    if method not in ("GET", "POST"):
        raise RestError(400, 53110, "StatusCallbackMethod is invalid")
    callback = form.get("StatusCallback") or None
    if callback is not None and not callback.startswith(("http://", "https://")):
        raise RestError(400, 53111, "StatusCallback is invalid")
    record = (form.get("RecordParticipantsOnConnect") or "").lower()
    if record not in ("", "true", "false"):
        raise RestError(400, 53114, "RecordParticipantsOnConnect must be true or false")
    return RoomCreate(
        unique_name=form.get("UniqueName") or None,
        type=kind,
        max_participants=_int_param(form, "MaxParticipants", 1, max_participants_limit, 53107),
        max_participant_duration=_int_param(
            form,
            "MaxParticipantDuration",
            MIN_PARTICIPANT_DURATION,
            MAX_PARTICIPANT_DURATION,
            53123,
        ),
        empty_room_timeout=_int_param(form, "EmptyRoomTimeout", 1, 60, 53109),
        unused_room_timeout=_int_param(form, "UnusedRoomTimeout", 1, 60, 53109),
        status_callback=callback,
        status_callback_method=method,
        record_participants_on_connect=None if record == "" else record == "true",
    )


def parse_status_update(form: Mapping[str, str], allowed: str) -> None:
    status = form.get("Status")
    if status != allowed:
        raise RestError(400, 53112, f"Status is invalid: only {allowed!r} can be set")


def render_room(room: RoomRecord, base: str) -> dict[str, Any]:
    url = f"{base}/v1/Rooms/{room.sid}"
    duration = None if room.end is None else int((room.end - room.created).total_seconds())
    return {
        "sid": room.sid,
        "status": room.status,
        "date_created": iso(room.created),
        "date_updated": iso(room.end or room.created),
        "account_sid": room.account_sid,
        "enable_turn": False,
        "unique_name": room.unique_name,
        "status_callback": room.status_callback,
        "status_callback_method": room.status_callback_method,
        "end_time": iso(room.end),
        "duration": duration,
        "type": room.type,
        "max_participants": room.max_participants,
        "max_participant_duration": room.max_participant_duration,
        "max_concurrent_published_tracks": room.max_participants,
        "record_participants_on_connect": room.record_participants_on_connect,
        "video_codecs": [],
        "media_region": None,
        "audio_only": True,
        "empty_room_timeout": room.empty_room_timeout,
        "unused_room_timeout": room.unused_room_timeout,
        "large_room": False,
        "url": url,
        "links": {
            "participants": f"{url}/Participants",
            "recordings": f"{url}/Recordings",
            "recording_rules": f"{url}/RecordingRules",
        },
    }


def render_participant(room: RoomRecord, p: ParticipantRecord, base: str) -> dict[str, Any]:
    url = f"{base}/v1/Rooms/{room.sid}/Participants/{p.sid}"
    duration = None if p.end is None else int((p.end - p.start).total_seconds())
    return {
        "sid": p.sid,
        "room_sid": room.sid,
        "account_sid": room.account_sid,
        "status": p.status,
        "identity": p.identity,
        "date_created": iso(p.start),
        "date_updated": iso(p.end or p.start),
        "start_time": iso(p.start),
        "end_time": iso(p.end),
        "duration": duration,
        "url": url,
        "links": {
            "published_tracks": f"{url}/PublishedTracks",
            "subscribed_tracks": f"{url}/SubscribedTracks",
            "subscribe_rules": f"{url}/SubscribeRules",
            "anonymize": f"{url}/Anonymize",
        },
    }


def render_track(
    room: RoomRecord, p: ParticipantRecord, t: TrackRecord, base: str
) -> dict[str, Any]:
    return {
        "sid": t.sid,
        "participant_sid": p.sid,
        "room_sid": room.sid,
        "name": t.name,
        "date_created": iso(t.created),
        "date_updated": iso(t.created),
        "enabled": t.enabled,
        "kind": t.kind,
        "url": f"{base}/v1/Rooms/{room.sid}/Participants/{p.sid}/PublishedTracks/{t.sid}",
    }


def page(
    items: Sequence[dict[str, Any]],
    key: str,
    *,
    base: str,
    path: str,
    query: Mapping[str, str],
) -> dict[str, Any]:
    """One Twilio page of ``items`` (``PageSize``, ``Page`` from ``query``; 0-based pages)."""
    try:
        size = int(query.get("PageSize", DEFAULT_PAGE_SIZE))
        number = int(query.get("Page", 0))
    except ValueError:
        raise RestError(400, 20001, "PageSize and Page must be integers") from None
    if not 1 <= size <= MAX_PAGE_SIZE or number < 0:
        raise RestError(400, 20001, f"PageSize must be 1..{MAX_PAGE_SIZE}, Page >= 0")
    filters = {k: v for k, v in query.items() if k not in ("PageSize", "Page", "PageToken")}

    def url(n: int) -> str:
        return f"{base}{path}?" + urlencode({**filters, "PageSize": size, "Page": n})

    chunk = list(items[number * size : (number + 1) * size])
    more = (number + 1) * size < len(items)
    return {
        key: chunk,
        "meta": {
            "page": number,
            "page_size": size,
            "first_page_url": url(0),
            "previous_page_url": url(number - 1) if number > 0 else None,
            "url": url(number),
            "next_page_url": url(number + 1) if more else None,
            "key": key,
        },
    }
