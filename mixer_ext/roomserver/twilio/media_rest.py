"""Recordings, Compositions and CompositionHooks of Video REST v1, with no I/O.

Wire formats as the official ``twilio`` client 9.x parses them (``twilio/rest/video/v1``):
records, form parsing, rendering, list filters, the composition's state machine, and the
status-callback parameters.  The owner that acts on them is ``roomserver/recordings.py``;
the aiohttp handlers are ``media_routes.py``.  Errors are ``rest.RestError`` (Twilio's
``{"code", "message", "more_info", "status"}``).

Where this differs from Twilio, on purpose: audio only (a ``VideoLayout`` or
``Resolution`` is refused with 400/53121-shaped ``RestError``: there is no video to lay
out); ``offset`` is milliseconds from the room's start to the track's first payload (on
Twilio, from an epoch common to all rooms: only differences were ever meaningful);
recording/composition settings (encryption, external storage) are refused as not
supported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mixer_ext.roomserver.compose.spec import FORMATS
from mixer_ext.roomserver.twilio.rest import RestError, iso, now_utc

RECORDING = "RT"
COMPOSITION = "CJ"
HOOK = "HK"
#: Twilio-shaped codes for what this server refuses
INVALID_PARAMETER = 53120
NO_VIDEO = 53121
NOT_SUPPORTED = 53122
RECORDING_STATUSES = ("processing", "completed", "deleted", "failed")
COMPOSITION_STATUSES = ("enqueued", "processing", "completed", "deleted", "failed")


@dataclass
class RecordingRecord:
    sid: str
    account_sid: str
    room_sid: str
    participant_sid: str
    source_sid: str  # the track's SID
    track_name: str
    key: str  # the media file's key in the store
    offset_ms: int = 0
    status: str = "processing"
    size: int = 0
    duration: float = 0.0
    created: datetime = field(default_factory=now_utc)
    status_callback: str | None = None
    status_callback_method: str = "POST"
    error: str | None = None


@dataclass
class CompositionRecord:
    sid: str
    account_sid: str
    room_sid: str
    audio_sources: list[str]
    audio_sources_excluded: list[str]
    trim: bool
    format: str
    key: str
    status: str = "enqueued"
    status_callback: str | None = None
    status_callback_method: str = "POST"
    created: datetime = field(default_factory=now_utc)
    completed: datetime | None = None
    deleted: datetime | None = None
    size: int = 0
    duration: float = 0.0
    bitrate: int = 0
    progress: float = 0.0
    error: str | None = None
    hook_sid: str | None = None


@dataclass
class HookRecord:
    sid: str
    account_sid: str
    friendly_name: str
    enabled: bool
    audio_sources: list[str]
    audio_sources_excluded: list[str]
    trim: bool
    format: str
    status_callback: str | None
    status_callback_method: str
    created: datetime = field(default_factory=now_utc)
    updated: datetime = field(default_factory=now_utc)


# --- parsing --------------------------------------------------------------------------------

Form = Mapping[str, Sequence[str]]


def _one(form: Form, name: str) -> str | None:
    values = form.get(name) or []
    return values[-1] if values else None


def _bool(form: Form, name: str, default: bool) -> bool:
    raw = _one(form, name)
    if raw is None or raw == "":
        return default
    if raw.lower() not in ("true", "false"):
        raise RestError(400, INVALID_PARAMETER, f"{name} must be true or false")
    return raw.lower() == "true"


def _sources(form: Form, name: str) -> list[str]:
    out: list[str] = []
    for raw in form.get(name) or []:
        out.extend(item.strip() for item in raw.split(",") if item.strip())
    return out


def _callback(form: Form) -> tuple[str | None, str]:
    url = _one(form, "StatusCallback") or None
    if url is not None and not url.startswith(("http://", "https://")):
        raise RestError(400, INVALID_PARAMETER, "StatusCallback is not a valid URL")
    method = (_one(form, "StatusCallbackMethod") or "POST").upper()
    if method not in ("GET", "POST"):
        raise RestError(400, INVALID_PARAMETER, "StatusCallbackMethod must be GET or POST")
    return url, method


def _no_video(form: Form) -> None:
    layout = _one(form, "VideoLayout")
    if layout not in (None, "", "{}", "null"):
        raise RestError(
            400, NO_VIDEO, "VideoLayout is not supported: this server records audio only"
        )
    if _one(form, "Resolution"):
        raise RestError(
            400, NO_VIDEO, "Resolution is not supported: this server records audio only"
        )


def _format(form: Form) -> str:
    fmt = (_one(form, "Format") or "webm").lower()
    if fmt not in FORMATS:
        raise RestError(400, INVALID_PARAMETER, f"Format must be one of {', '.join(FORMATS)}")
    return fmt


@dataclass(frozen=True)
class CompositionCreate:
    room_sid: str
    audio_sources: list[str]
    audio_sources_excluded: list[str]
    trim: bool
    format: str
    status_callback: str | None
    status_callback_method: str


def parse_composition_create(form: Form) -> CompositionCreate:
    room_sid = _one(form, "RoomSid")
    if not room_sid:
        raise RestError(400, INVALID_PARAMETER, "RoomSid is required")
    _no_video(form)
    sources = _sources(form, "AudioSources")
    if not sources:
        raise RestError(400, INVALID_PARAMETER, "AudioSources is required (e.g. '*')")
    url, method = _callback(form)
    return CompositionCreate(
        room_sid=room_sid,
        audio_sources=sources,
        audio_sources_excluded=_sources(form, "AudioSourcesExcluded"),
        trim=_bool(form, "Trim", True),
        format=_format(form),
        status_callback=url,
        status_callback_method=method,
    )


def parse_hook(form: Form, existing: HookRecord | None = None) -> dict[str, Any]:
    """The fields a create (``existing`` None) or update sets; raises ``RestError``."""
    _no_video(form)
    name = _one(form, "FriendlyName")
    if existing is None and not name:
        raise RestError(400, INVALID_PARAMETER, "FriendlyName is required")
    if name is not None and not 1 <= len(name) <= 100:
        raise RestError(400, INVALID_PARAMETER, "FriendlyName must be 1..100 characters")
    out: dict[str, Any] = {}
    if name is not None:
        out["friendly_name"] = name
    if existing is None or "Enabled" in form:
        out["enabled"] = _bool(form, "Enabled", True)
    if existing is None or "AudioSources" in form:
        sources = _sources(form, "AudioSources")
        if not sources:
            raise RestError(400, INVALID_PARAMETER, "AudioSources is required (e.g. '*')")
        out["audio_sources"] = sources
    if existing is None or "AudioSourcesExcluded" in form:
        out["audio_sources_excluded"] = _sources(form, "AudioSourcesExcluded")
    if existing is None or "Trim" in form:
        out["trim"] = _bool(form, "Trim", True)
    if existing is None or "Format" in form:
        out["format"] = _format(form)
    if existing is None or "StatusCallback" in form or "StatusCallbackMethod" in form:
        out["status_callback"], out["status_callback_method"] = _callback(form)
    return out


def parse_created_window(query: Mapping[str, str]) -> tuple[datetime | None, datetime | None]:
    def one(name: str) -> datetime | None:
        raw = query.get(name)
        if not raw:
            return None
        try:
            return datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise RestError(400, INVALID_PARAMETER, f"{name} is not an ISO 8601 date") from None

    return one("DateCreatedAfter"), one("DateCreatedBefore")


def created_in(when: datetime, window: tuple[datetime | None, datetime | None]) -> bool:
    after, before = window
    return (after is None or when >= after) and (before is None or when <= before)


# --- rendering ------------------------------------------------------------------------------


def _seconds(value: float) -> int:
    """Twilio rounds to the nearest second; a sub-second recording is 1 second."""
    return 0 if value <= 0 else max(1, round(value))


def render_recording(rec: RecordingRecord, base: str, *, room_scoped: bool) -> dict[str, Any]:
    url = (
        f"{base}/v1/Rooms/{rec.room_sid}/Recordings/{rec.sid}"
        if room_scoped
        else f"{base}/v1/Recordings/{rec.sid}"
    )
    body: dict[str, Any] = {
        "account_sid": rec.account_sid,
        "status": rec.status,
        "date_created": iso(rec.created),
        "sid": rec.sid,
        "source_sid": rec.source_sid,
        "size": rec.size,
        "url": url,
        "type": "audio",
        "duration": _seconds(rec.duration) if rec.status == "completed" else None,
        "container_format": "mka",
        "codec": "OPUS",
        "grouping_sids": {"room_sid": rec.room_sid, "participant_sid": rec.participant_sid},
        "track_name": rec.track_name,
        "offset": rec.offset_ms,
        "media_external_location": None,
        "links": {"media": f"{url}/Media"},
    }
    if room_scoped:
        body["room_sid"] = rec.room_sid
    else:
        body["status_callback"] = rec.status_callback
        body["status_callback_method"] = rec.status_callback_method
    return body


def render_composition(c: CompositionRecord, base: str) -> dict[str, Any]:
    url = f"{base}/v1/Compositions/{c.sid}"
    return {
        "account_sid": c.account_sid,
        "status": c.status,
        "date_created": iso(c.created),
        "date_completed": iso(c.completed),
        "date_deleted": iso(c.deleted),
        "sid": c.sid,
        "room_sid": c.room_sid,
        "audio_sources": c.audio_sources,
        "audio_sources_excluded": c.audio_sources_excluded,
        "video_layout": {},
        "resolution": None,
        "trim": c.trim,
        "format": c.format,
        "bitrate": c.bitrate,
        "size": c.size,
        "duration": _seconds(c.duration),
        "media_external_location": None,
        "status_callback": c.status_callback,
        "status_callback_method": c.status_callback_method,
        "url": url,
        # "levels" is ours: the per-participant levels beside the mix (no Twilio field)
        "links": {"media": f"{url}/Media", "levels": f"{url}/Levels"},
    }


def levels_key(c: CompositionRecord) -> str:
    """The store key of a composition's levels (``compose.engine.levels_path``)."""
    return c.key.rsplit(".", 1)[0] + "-levels.json"


def render_hook(h: HookRecord, base: str) -> dict[str, Any]:
    return {
        "account_sid": h.account_sid,
        "friendly_name": h.friendly_name,
        "enabled": h.enabled,
        "date_created": iso(h.created),
        "date_updated": iso(h.updated),
        "sid": h.sid,
        "audio_sources": h.audio_sources,
        "audio_sources_excluded": h.audio_sources_excluded,
        "video_layout": {},
        "resolution": None,
        "trim": h.trim,
        "format": h.format,
        "status_callback": h.status_callback,
        "status_callback_method": h.status_callback_method,
        "url": f"{base}/v1/CompositionHooks/{h.sid}",
    }


# --- the composition's states ---------------------------------------------------------------

#: event -> (states it may come from, state it leads to, callback event or None)
_STEPS: dict[str, tuple[tuple[str, ...], str, str | None]] = {
    "start": (("enqueued",), "processing", "composition-started"),
    "progress": (("processing",), "processing", "composition-progress"),
    "complete": (("processing",), "completed", "composition-available"),
    "fail": (("enqueued", "processing"), "failed", "composition-failed"),
    "delete": (("enqueued", "processing", "completed", "failed"), "deleted", None),
}


def composition_step(c: CompositionRecord, event: str) -> str | None:
    """Move ``c`` by ``event``; returns the callback event to send (or None).

    An event that does not apply to the current state is ignored (a late progress after
    a delete, a second delete) and returns None.
    """
    sources, target, callback = _STEPS[event]
    if c.status not in sources:
        return None
    c.status = target
    now = now_utc()
    if target == "completed":
        c.completed = now
        c.progress = 1.0
    elif target == "deleted":
        c.deleted = now
    return callback


def composition_params(c: CompositionRecord, event: str) -> dict[str, str]:
    """The form parameters of a composition status callback."""
    params = {
        "AccountSid": c.account_sid,
        "CompositionSid": c.sid,
        "CompositionUri": f"/v1/Compositions/{c.sid}",
        "RoomSid": c.room_sid,
        "StatusCallbackEvent": event,
        "Timestamp": iso(now_utc()) or "",
    }
    if event == "composition-progress":
        params["PercentageDone"] = str(int(c.progress * 100))
    if event == "composition-available":
        params.update(
            MediaUri=f"/v1/Compositions/{c.sid}/Media",
            Duration=str(_seconds(c.duration)),
            Size=str(c.size),
        )
    if event == "composition-failed" and c.error:
        params["FailedOperation"] = c.error[:200]
    if c.hook_sid:
        params["CompositionHookSid"] = c.hook_sid
    return params


def recording_params(rec: RecordingRecord, event: str, identity: str) -> dict[str, str]:
    """The extra parameters of a recording-* room status callback."""
    params = {
        "RecordingSid": rec.sid,
        "RecordingUri": f"/v1/Recordings/{rec.sid}",
        "SourceSid": rec.source_sid,
        "TrackName": rec.track_name,
        "ParticipantSid": rec.participant_sid,
        "ParticipantIdentity": identity,
        "Container": "mka",
        "Codec": "opus",
        "OffsetFromRoomStart": str(rec.offset_ms),
    }
    if event == "recording-completed":
        params.update(
            MediaUri=f"/v1/Recordings/{rec.sid}/Media",
            Duration=str(_seconds(rec.duration)),
            Size=str(rec.size),
        )
    if event == "recording-failed" and rec.error:
        params["FailedOperation"] = rec.error[:200]
    return params


# --- Recording Rules ------------------------------------------------------------------------

_RULE_FILTERS = ("all", "publisher", "kind", "track")


def parse_recording_rules(form: Form) -> list[dict[str, object]]:
    """``Rules``: a JSON array of ``{"type": "include"|"exclude", <filters>}`` (or an object
    with a ``rules`` array); filters ``all`` (true), ``publisher`` (identity), ``kind``
    (``audio``/``video``/``data``), ``track`` (track name), each rule's filters combined."""
    import json

    raw = _one(form, "Rules")
    if raw is None:
        raise RestError(400, INVALID_PARAMETER, "Rules is required")
    try:
        value = json.loads(raw)
    except ValueError:
        raise RestError(400, INVALID_PARAMETER, "Rules is not valid JSON") from None
    if isinstance(value, dict):
        value = value.get("rules")
    if not isinstance(value, list) or len(value) > 100:
        raise RestError(400, INVALID_PARAMETER, "Rules must be an array of at most 100 rules")
    rules: list[dict[str, object]] = []
    for i, rule in enumerate(value):
        where = f"Rules[{i}]"
        if not isinstance(rule, dict) or rule.get("type") not in ("include", "exclude"):
            raise RestError(400, INVALID_PARAMETER, f"{where}: type must be include or exclude")
        filters = {k: v for k, v in rule.items() if k != "type"}
        unknown = set(filters) - set(_RULE_FILTERS)
        if unknown or not filters:
            raise RestError(
                400, INVALID_PARAMETER, f"{where}: filters are all, publisher, kind, track"
            )
        if "all" in filters and (filters["all"] is not True or len(filters) > 1):
            raise RestError(400, INVALID_PARAMETER, f"{where}: all must be true, alone")
        if filters.get("kind", "audio") not in ("audio", "video", "data"):
            raise RestError(400, INVALID_PARAMETER, f"{where}: kind is audio, video or data")
        for name in ("publisher", "track"):
            if name in filters and not isinstance(filters[name], str):
                raise RestError(400, INVALID_PARAMETER, f"{where}: {name} must be a string")
        rules.append({"type": rule["type"], **filters})
    return rules


def _rule_matches(rule: Mapping[str, object], identity: str, kind: str, track: str) -> bool:
    return rule.get("all") is True or (
        rule.get("publisher", identity) == identity
        and rule.get("kind", kind) == kind
        and rule.get("track", track) == track
    )


def rules_select(
    rules: Sequence[Mapping[str, object]], identity: str, kind: str, track: str
) -> bool:
    """Recorded: some include rule matches the track and no exclude rule does."""
    included = any(
        r["type"] == "include" and _rule_matches(r, identity, kind, track) for r in rules
    )
    excluded = any(
        r["type"] == "exclude" and _rule_matches(r, identity, kind, track) for r in rules
    )
    return included and not excluded


def render_rules(
    room_sid: str, rules: list[dict[str, object]], created: datetime, updated: datetime
) -> dict[str, Any]:
    return {
        "room_sid": room_sid,
        "rules": rules,
        "date_created": iso(created),
        "date_updated": iso(updated),
    }
