"""Media v1 resources as the official ``twilio`` client speaks them: no I/O here.

What this module owns (reference: ``shared/reference/twilio-media-v1-api.md``):

- SIDs (``ZX``/``VJ``/``KV`` + 32 lowercase hex) and dates (``YYYY-MM-DDTHH:MM:SSZ``);
- Twilio-shaped errors (``ApiError``: HTTP status, ``code``, ``message``, ``more_info``);
- form parsing and validation of every create/update/list request;
- JSON rendering of every resource, with ``url``/``links`` absolute on the public URL;
- paging (``PageSize``/``Page``/``PageToken`` in, ``meta`` out, keyset tokens);
- one state machine per resource (``processor_step``, ``streamer_step``,
  ``recording_step``): an event in, the new state and the effects out, for the control
  plane (``plane``) to apply (store, launcher, callbacks);
- the rules a create must pass beyond its form (``check_streamer_outputs``).

Why one module: it is the whole Media v1 wire format and its rules, kept in one sans-I/O
place so they are read and tested together against the reference.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode

from mixer_ext import DEFAULT_IDENTITY
from mixer_ext.context import ExtensionContext, parse_context
from mixer_ext.errors import ConfigError

# --------------------------------------------------------------------------- SIDs, dates
PROCESSOR_PREFIX = "ZX"
STREAMER_PREFIX = "VJ"
RECORDING_PREFIX = "KV"
_SID_RE = {p: re.compile(rf"^{p}[0-9a-fA-F]{{32}}$") for p in ("ZX", "VJ", "KV", "AC", "SK")}

EXTENSIONS = ("audio-mixer-v1", "audio-mixer-v2")
#: MaxDuration (seconds) of MediaProcessors and PlayerStreamers, as the hosted API
DEFAULT_MAX_DURATION = 300
MAX_MAX_DURATION = 90_000
#: PlaybackGrant Ttl (seconds)
DEFAULT_GRANT_TTL = 15
MAX_GRANT_TTL = 60
#: PageSize bounds (the spec's 1..1000; larger is a clean 400)
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
CALLBACK_METHODS = ("POST", "GET")


def new_sid(prefix: str) -> str:
    """A fresh SID: the two-letter prefix and 32 random lowercase hex characters."""
    return prefix + secrets.token_hex(16)


def is_sid(prefix: str, value: str) -> bool:
    return bool(_SID_RE[prefix].match(value))


def room_source_sid(room_name: str) -> str | None:
    """A MediaRecording's ``source_sid``: the room's SID, when the context names the room
    by it (``{"room": {"name": "RM…"}}``, as Twilio's reference backends do); None for a
    room named by its unique name (the API does not ask the room server)."""
    return room_name if re.match(r"^RM[0-9a-fA-F]{32}$", room_name) else None


def room_rest_base(room_backend: str, room_url: str) -> str | None:
    """Where the embedded room server answers its Video REST (``/v1/Rooms``): its
    signaling URL with ``ws`` made ``http``; None for Janus (no room SIDs there)."""
    if room_backend != "embedded":
        return None
    match = re.match(r"^(ws|wss)://([^/?#\s]+)", room_url)
    if match is None:
        return None
    return ("https" if match[1] == "wss" else "http") + "://" + match[2]


def format_date(epoch: float) -> str:
    """The only date format the client turns into a ``datetime``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# --------------------------------------------------------------------------- errors
class ApiError(Exception):
    """An error answer: HTTP ``status`` and a Twilio error ``code``."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


#: Twilio's generic codes; the Live-specific ones were never published (reference §12).
CODE_BAD_PARAMETER = 21200  # "Invalid parameter" family
CODE_AUTH = 20003
CODE_NOT_FOUND = 20404
CODE_METHOD = 20004
CODE_TOO_MANY = 20429


def bad_request(message: str) -> ApiError:
    return ApiError(400, CODE_BAD_PARAMETER, message)


def not_found(path: str) -> ApiError:
    return ApiError(404, CODE_NOT_FOUND, f"The requested resource {path} was not found")


def unauthorized() -> ApiError:
    return ApiError(401, CODE_AUTH, "Authenticate")


def too_many(message: str) -> ApiError:
    return ApiError(429, CODE_TOO_MANY, message)


# --------------------------------------------------------------------------- states
class ProcessorStatus(StrEnum):
    STARTED = "started"
    ENDED = "ended"
    FAILED = "failed"


class StreamerStatus(StrEnum):
    CREATED = "created"
    STARTED = "started"
    ENDED = "ended"
    FAILED = "failed"


class RecordingStatus(StrEnum):
    PROCESSING = "processing"
    COMPLETED = "completed"
    DELETED = "deleted"
    FAILED = "failed"


ACTIVE_PROCESSOR = (ProcessorStatus.STARTED,)
ACTIVE_STREAMER = (StreamerStatus.CREATED, StreamerStatus.STARTED)

#: a worker's failure reasons (mixer_ext/worker/status.py) -> the MediaProcessor's ended_reason
_WORKER_FAIL_REASONS = {
    "error-loading-extension": "error-loading-extension",
    "error-streaming-media": "error-streaming-media",
    "internal-error": "internal-service-error",
}


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class MediaProcessor:
    sid: str
    account_sid: str
    extension: str
    extension_context: str
    status: ProcessorStatus
    ended_reason: str | None
    error_message: str | None
    status_callback: str | None
    status_callback_method: str
    max_duration: int
    date_created: float
    date_updated: float
    #: the worker said it is in the room and streaming (the started callback went out)
    streaming: bool = False

    def outputs(self) -> list[str]:
        return list(parse_context(self.extension_context).outputs)

    def streamer_sids(self) -> list[str]:
        return [o for o in self.outputs() if is_sid(STREAMER_PREFIX, o)]


@dataclass(frozen=True)
class PlayerStreamer:
    sid: str
    account_sid: str
    video: bool
    status: StreamerStatus
    ended_reason: str | None
    status_callback: str | None
    status_callback_method: str
    max_duration: int
    date_created: float
    date_updated: float


@dataclass(frozen=True)
class MediaRecording:
    sid: str
    account_sid: str
    processor_sid: str
    source_sid: str | None
    status: RecordingStatus
    #: the file the worker wrote (relative to the API's data directory)
    path: str
    format: str
    duration: int | None
    media_size: int | None
    date_created: float
    date_updated: float


# --------------------------------------------------------------------------- forms
def _field(form: Mapping[str, str], name: str) -> str | None:
    value = form.get(name)
    return None if value is None else str(value)


def _int_field(form: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = _field(form, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise bad_request(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _callback_fields(form: Mapping[str, str]) -> tuple[str | None, str]:
    url = _field(form, "StatusCallback") or None
    if url is not None and not re.match(r"^https?://[^/\s]+", url):
        raise bad_request(f"StatusCallback must be an http(s) URL, got {url[:80]!r}")
    method = (_field(form, "StatusCallbackMethod") or "POST").upper()
    if method not in CALLBACK_METHODS:
        raise bad_request(f"StatusCallbackMethod must be POST or GET, got {method[:20]!r}")
    return url, method


@dataclass(frozen=True)
class ProcessorCreate:
    extension: str
    extension_context: str
    context: ExtensionContext
    status_callback: str | None
    status_callback_method: str
    max_duration: int


def parse_processor_create(form: Mapping[str, str]) -> ProcessorCreate:
    """Validate ``POST /v1/MediaProcessors``; the context goes through the worker's parser.

    Whether the ``VJ`` outputs exist is for the caller to check (it needs the store).
    """
    extension = _field(form, "Extension")
    if not extension:
        raise bad_request("Extension is required")
    if extension not in EXTENSIONS:
        raise bad_request(
            f"Extension {extension[:80]!r} is not supported (use {' or '.join(EXTENSIONS)})"
        )
    text = _field(form, "ExtensionContext")
    if not text:
        raise bad_request("ExtensionContext is required")
    try:
        context = parse_context(text, source="ExtensionContext", note_unknown=True)
    except ConfigError as exc:
        raise bad_request(str(exc)) from None
    url, method = _callback_fields(form)
    return ProcessorCreate(
        extension=extension,
        extension_context=text,
        context=context,
        status_callback=url,
        status_callback_method=method,
        max_duration=_int_field(form, "MaxDuration", DEFAULT_MAX_DURATION, 1, MAX_MAX_DURATION),
    )


def worker_context(extension: str, text: str) -> str:
    """The context text handed to the worker: the app's, with the extension's default
    identity filled in where the app gave none (``audio-mixer-v2`` joins as
    ``audio-mixer-v2``, as Twilio documented).  The stored ``extension_context`` stays the
    app's text, verbatim."""
    data = json.loads(text)
    if isinstance(data, dict) and "identity" not in data and extension != DEFAULT_IDENTITY:
        return json.dumps({**data, "identity": extension}, separators=(",", ":"))
    return text


@dataclass(frozen=True)
class StreamerCreate:
    video: bool
    status_callback: str | None
    status_callback_method: str
    max_duration: int


def parse_streamer_create(form: Mapping[str, str]) -> StreamerCreate:
    raw = (_field(form, "Video") or "true").lower()
    if raw not in ("true", "false"):
        raise bad_request(f"Video must be true or false, got {raw[:20]!r}")
    url, method = _callback_fields(form)
    return StreamerCreate(
        video=raw == "true",
        status_callback=url,
        status_callback_method=method,
        max_duration=_int_field(form, "MaxDuration", DEFAULT_MAX_DURATION, 1, MAX_MAX_DURATION),
    )


def parse_end_update(form: Mapping[str, str]) -> None:
    """``Status`` is required and only ``ended`` is allowed (both resources).

    Matched case-insensitively, as the hosted API did: Twilio's reference backends end
    both resources with ``Status=ENDED``.
    """
    status = _field(form, "Status")
    if status is None:
        raise bad_request("Status is required")
    if status.strip().lower() != "ended":
        raise bad_request(f"Status must be 'ended', got {status[:20]!r}")


@dataclass(frozen=True)
class GrantCreate:
    ttl: int
    allow_origin: str | None


_ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")


def parse_grant_create(form: Mapping[str, str]) -> GrantCreate:
    origin = _field(form, "AccessControlAllowOrigin") or None
    if origin is not None and origin != "*" and not _ORIGIN_RE.match(origin):
        raise bad_request(
            f"AccessControlAllowOrigin must be an origin like https://example.com, "
            f"got {origin[:80]!r}"
        )
    return GrantCreate(
        ttl=_int_field(form, "Ttl", DEFAULT_GRANT_TTL, 1, MAX_GRANT_TTL), allow_origin=origin
    )


def parse_order(form: Mapping[str, str]) -> str:
    order = (_field(form, "Order") or "desc").lower()
    if order not in ("asc", "desc"):
        raise bad_request(f"Order must be asc or desc, got {order[:20]!r}")
    return order


def parse_status_filter(form: Mapping[str, str], allowed: Sequence[str]) -> str | None:
    """The ``Status`` filter of a list, case-insensitive (``STARTED`` is ``started``)."""
    raw = _field(form, "Status") or None
    if raw is None:
        return None
    status = raw.strip().lower()
    if status not in allowed:
        raise bad_request(f"Status must be one of {', '.join(allowed)}, got {raw[:20]!r}")
    return status


# --------------------------------------------------------------------------- paging
@dataclass(frozen=True)
class PageKey:
    """Where a page starts: after the record with this (date_created, sid)."""

    date_created: float
    sid: str


@dataclass(frozen=True)
class PageRequest:
    page_size: int
    page: int
    after: PageKey | None


def encode_page_token(key: PageKey) -> str:
    raw = json.dumps([key.date_created, key.sid], separators=(",", ":")).encode()
    return "PT" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> PageKey:
    try:
        if not token.startswith("PT"):
            raise ValueError
        body = token[2:]
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        created, sid = data
        if not isinstance(created, int | float) or not isinstance(sid, str):
            raise ValueError
        return PageKey(float(created), sid)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise bad_request(f"PageToken {token[:40]!r} is not a token this API handed out") from None


def parse_page(form: Mapping[str, str]) -> PageRequest:
    size = _int_field(form, "PageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    page = _int_field(form, "Page", 0, 0, 10**9)
    token = _field(form, "PageToken")
    return PageRequest(size, page, decode_page_token(token) if token else None)


def render_page(
    *,
    key: str,
    public_url: str,
    path: str,
    filters: Mapping[str, str | None],
    request: PageRequest,
    records: list[dict[str, Any]],
    next_key: PageKey | None,
) -> dict[str, Any]:
    """A list page; ``records`` are rendered already, ``next_key`` is None on the last page."""
    base = public_url.rstrip("/") + "/v1/" + path
    kept = [(k, v) for k, v in filters.items() if v is not None]

    def url(page: int, token: str | None) -> str:
        query = [*kept, ("PageSize", str(request.page_size)), ("Page", str(page))]
        if token:
            query.append(("PageToken", token))
        return base + "?" + urlencode(query)

    this_token = encode_page_token(request.after) if request.after else None
    return {
        "meta": {
            "page": request.page,
            "page_size": request.page_size,
            "first_page_url": url(0, None),
            "previous_page_url": None,
            "url": url(request.page, this_token),
            "next_page_url": url(request.page + 1, encode_page_token(next_key))
            if next_key
            else None,
            "key": key,
        },
        key: records,
    }


# --------------------------------------------------------------------------- rendering
def _abs(public_url: str, path: str) -> str:
    return public_url.rstrip("/") + "/v1/" + path


def render_processor(p: MediaProcessor, public_url: str) -> dict[str, Any]:
    return {
        "account_sid": p.account_sid,
        "sid": p.sid,
        "date_created": format_date(p.date_created),
        "date_updated": format_date(p.date_updated),
        "extension": p.extension,
        "extension_context": p.extension_context,
        "status": p.status.value,
        "url": _abs(public_url, f"MediaProcessors/{p.sid}"),
        "ended_reason": p.ended_reason,
        "status_callback": p.status_callback,
        "status_callback_method": p.status_callback_method,
        "max_duration": p.max_duration,
    }


def render_streamer(s: PlayerStreamer, public_url: str) -> dict[str, Any]:
    base = _abs(public_url, f"PlayerStreamers/{s.sid}")
    return {
        "account_sid": s.account_sid,
        "date_created": format_date(s.date_created),
        "date_updated": format_date(s.date_updated),
        "video": s.video,
        "links": {
            "access_token": base + "/AccessToken",
            "timed_metadata": base + "/TimedMetadata",
            "playback_grant": base + "/PlaybackGrant",
        },
        "sid": s.sid,
        "status": s.status.value,
        "url": base,
        "status_callback": s.status_callback,
        "status_callback_method": s.status_callback_method,
        "ended_reason": s.ended_reason,
        "max_duration": s.max_duration,
    }


def render_recording(r: MediaRecording, public_url: str) -> dict[str, Any]:
    base = _abs(public_url, f"MediaRecordings/{r.sid}")
    return {
        "account_sid": r.account_sid,
        "date_created": format_date(r.date_created),
        "date_updated": format_date(r.date_updated),
        "duration": r.duration,
        "format": r.format,
        "links": {"media": base + "/Media"},
        "processor_sid": r.processor_sid,
        "resolution": None,
        "source_sid": r.source_sid,
        "sid": r.sid,
        "media_size": r.media_size,
        "status": r.status.value,
        "status_callback": None,
        "status_callback_method": None,
        "url": base,
    }


def render_grant(
    streamer_sid: str, account_sid: str, playback_url: str, public_url: str, now: float
) -> dict[str, Any]:
    return {
        "sid": streamer_sid,
        "url": _abs(public_url, f"PlayerStreamers/{streamer_sid}/PlaybackGrant"),
        "account_sid": account_sid,
        "date_created": format_date(now),
        "grant": {
            "playbackUrl": playback_url,
            "playerStreamerSid": streamer_sid,
            "requestCredentials": None,
        },
    }


# --------------------------------------------------------------------------- state machines
@dataclass(frozen=True)
class Callback:
    """Send this status callback event for the resource (the app adds the fields)."""

    event: str


@dataclass(frozen=True)
class StopWorker:
    """SIGTERM the processor's worker (or delete its Job)."""


@dataclass(frozen=True)
class EndStreamers:
    """End every PlayerStreamer this processor streams to, with this reason."""

    reason: str


@dataclass(frozen=True)
class StartStreamers:
    """The processor streams: its PlayerStreamers move to ``started``."""


Effect = Callback | StopWorker | EndStreamers | StartStreamers


class ProcessorEvent(StrEnum):
    #: the worker reports ``started`` (in the room, streaming)
    WORKER_STARTED = "worker-started"
    #: the worker reports ``ended`` (reason: its own end reason)
    WORKER_ENDED = "worker-ended"
    #: the worker reports ``failed`` (reason: its failure reason)
    WORKER_FAILED = "worker-failed"
    #: the worker is gone without a final report (crash, or died while the API was down)
    WORKER_LOST = "worker-lost"
    #: the worker could not be launched
    LAUNCH_FAILED = "launch-failed"
    #: ``POST /v1/MediaProcessors/{Sid}`` with ``Status=ended``
    END_REQUESTED = "end-requested"
    #: MaxDuration elapsed
    MAX_DURATION = "max-duration"


@dataclass(frozen=True)
class Step:
    processor: MediaProcessor
    effects: list[Effect] = field(default_factory=list)


def processor_step(
    p: MediaProcessor,
    event: ProcessorEvent,
    now: float,
    reason: str | None = None,
    message: str | None = None,
) -> Step:
    """The one place a MediaProcessor changes state.

    ``started`` -> ``ended`` (``ended-via-api``, ``max-duration-exceeded``, or the worker's
    own end reason) or ``failed`` (``error-loading-extension``, ``error-streaming-media``,
    ``internal-service-error``).  Events on a finished processor change nothing, except
    that a stopped worker's last report is absorbed silently.
    """
    E = ProcessorEvent
    if p.status is not ProcessorStatus.STARTED:
        return Step(p)
    if event is E.WORKER_STARTED:
        if p.streaming:
            return Step(p)
        return Step(
            replace(p, streaming=True, date_updated=now),
            [Callback("media-processor-started"), StartStreamers()],
        )
    if event in (E.END_REQUESTED, E.MAX_DURATION):
        why = "ended-via-api" if event is E.END_REQUESTED else "max-duration-exceeded"
        return Step(
            replace(p, status=ProcessorStatus.ENDED, ended_reason=why, date_updated=now),
            [
                StopWorker(),
                Callback("media-processor-ended"),
                EndStreamers("stream-disconnected-by-source"),
            ],
        )
    if event is E.WORKER_ENDED:
        return Step(
            replace(p, status=ProcessorStatus.ENDED, ended_reason=reason, date_updated=now),
            [Callback("media-processor-ended"), EndStreamers("stream-disconnected-by-source")],
        )
    # failures
    if event is E.WORKER_FAILED:
        why = _WORKER_FAIL_REASONS.get(reason or "", "internal-service-error")
    elif event is E.LAUNCH_FAILED:
        why = "error-loading-extension"
    else:
        why = "internal-service-error"
        message = message or "the worker exited without reporting an end"
    return Step(
        replace(
            p,
            status=ProcessorStatus.FAILED,
            ended_reason=why,
            error_message=message,
            date_updated=now,
        ),
        [
            StopWorker(),
            Callback("media-processor-failed"),
            EndStreamers("stream-disconnected-by-source"),
        ],
    )


class StreamerEvent(StrEnum):
    SOURCE_STARTED = "source-started"
    SOURCE_ENDED = "source-ended"
    END_REQUESTED = "end-requested"
    MAX_DURATION = "max-duration"
    FAILED = "failed"


@dataclass(frozen=True)
class StreamerStep:
    streamer: PlayerStreamer
    effects: list[Effect] = field(default_factory=list)


def streamer_step(
    s: PlayerStreamer, event: StreamerEvent, now: float, reason: str | None = None
) -> StreamerStep:
    """``created`` -> ``started`` -> ``ended``/``failed``; ended is terminal."""
    E = StreamerEvent
    if s.status in (StreamerStatus.ENDED, StreamerStatus.FAILED):
        return StreamerStep(s)
    if event is E.SOURCE_STARTED:
        if s.status is StreamerStatus.STARTED:
            return StreamerStep(s)
        return StreamerStep(
            replace(s, status=StreamerStatus.STARTED, date_updated=now),
            [Callback("player-streamer-started")],
        )
    if event is E.FAILED:
        return StreamerStep(
            replace(
                s,
                status=StreamerStatus.FAILED,
                ended_reason="unexpected-failure",
                date_updated=now,
            ),
            [Callback("player-streamer-failed")],
        )
    why = {
        E.SOURCE_ENDED: reason or "stream-disconnected-by-source",
        E.END_REQUESTED: "ended-via-api",
        E.MAX_DURATION: "max-duration-exceeded",
    }[event]
    return StreamerStep(
        replace(s, status=StreamerStatus.ENDED, ended_reason=why, date_updated=now),
        [Callback("player-streamer-ended")],
    )


def check_streamer_outputs(
    outputs: Sequence[str],
    streamers: Mapping[str, PlayerStreamer | None],
    busy: Collection[str],
) -> None:
    """The PlayerStreamer rules of a MediaProcessor create: each ``VJ…`` output names a
    streamer that exists, is ``created``/``started``, and has no other active processor.

    ``streamers``: each ``VJ…`` output's stored streamer (None: not found); ``busy``: the
    streamer SIDs active processors stream to. Raises the 400 naming the output.
    """
    for i, out in enumerate(outputs):
        if not is_sid(STREAMER_PREFIX, out):
            continue
        s = streamers.get(out)
        where = f"ExtensionContext: outputs[{i}]: PlayerStreamer {out}"
        if s is None:
            raise bad_request(f"{where} not found")
        if s.status not in ACTIVE_STREAMER:
            raise bad_request(f"{where} is {s.status.value}")
        if out in busy:
            raise bad_request(f"{where} already has an active MediaProcessor")


def new_recording(p: MediaProcessor, path: str, fmt: str, source_sid: str | None) -> MediaRecording:
    """The MediaRecording of one ``file:`` output, ``processing`` from the processor's
    creation until its worker has exited (``recording_step``)."""
    return MediaRecording(
        sid=new_sid(RECORDING_PREFIX),
        account_sid=p.account_sid,
        processor_sid=p.sid,
        source_sid=source_sid,
        status=RecordingStatus.PROCESSING,
        path=path,
        format=fmt,
        duration=None,
        media_size=None,
        date_created=p.date_created,
        date_updated=p.date_created,
    )


class RecordingEvent(StrEnum):
    #: the processor's worker has exited: the file is as complete as it will get
    WORKER_EXITED = "worker-exited"
    #: ``DELETE /v1/MediaRecordings/{Sid}``
    DELETE_REQUESTED = "delete-requested"


def recording_step(
    rec: MediaRecording,
    event: RecordingEvent,
    now: float,
    *,
    media_size: int | None = None,
    duration: int | None = None,
) -> MediaRecording:
    """The one place a MediaRecording changes state: ``processing`` -> ``completed`` (the
    worker exited leaving a non-empty file of ``media_size`` bytes) or ``failed`` (no file,
    or an empty one); finished recordings do not change. A delete is refused (409) while
    the recording is ``processing``: the worker still writes it.
    """
    if event is RecordingEvent.DELETE_REQUESTED:
        if rec.status is RecordingStatus.PROCESSING:
            raise ApiError(409, 20409, f"MediaRecording {rec.sid} is still being written")
        return rec
    if rec.status is not RecordingStatus.PROCESSING:
        return rec
    ok = media_size is not None and media_size > 0
    return replace(
        rec,
        status=RecordingStatus.COMPLETED if ok else RecordingStatus.FAILED,
        media_size=media_size if ok else None,
        duration=duration,
        date_updated=now,
    )


# --------------------------------------------------------------------------- callbacks
def processor_callback_params(
    p: MediaProcessor, event: str, sequence: int, now: float
) -> dict[str, str]:
    """The form fields of a MediaProcessor status callback."""
    params = {
        "AccountSid": p.account_sid,
        "MediaProcessorSid": p.sid,
        "Extension": p.extension,
        "ExtensionContext": p.extension_context,
        "Status": p.status.value,
        "StatusCallbackEvent": event,
        "SequenceNumber": str(sequence),
        "Timestamp": format_date(now),
    }
    if p.ended_reason:
        params["EndedReason"] = p.ended_reason
    if p.error_message:
        params["ErrorMessage"] = p.error_message
    return params


def streamer_callback_params(
    s: PlayerStreamer, event: str, sequence: int, now: float
) -> dict[str, str]:
    params = {
        "AccountSid": s.account_sid,
        "PlayerStreamerSid": s.sid,
        "Status": s.status.value,
        "StatusCallbackEvent": event,
        "SequenceNumber": str(sequence),
        "Timestamp": format_date(now),
    }
    if s.ended_reason:
        params["EndedReason"] = s.ended_reason
    return params
