"""The extension context: what a run is asked to do.

Same shape as the hosted extension's context (camelCase)::

    {"room": {"name": "RM123"}, "identity": "audio-mixer-v1",
     "outputs": ["hls:main", "rtmps://live.example.com/app/KEY"],
     "audioBitrate": 128, "maxParticipantDuration": 14400}

``load_context()`` accepts a file path or inline JSON and raises
``ConfigError`` with one line naming the field on anything malformed, so a
bad context is refused before anything connects.

Unknown *top-level* keys are accepted and ignored, as the hosted service did: Twilio's
own reference backends sent ``"video": false`` and ``"resolution": "1920x1080"`` to the
audio mixer, and those apps ran against it for years.  They are logged once, at info,
by name, where a context enters (``mixer-ext run``, ``POST /v1/MediaProcessors``).
Known keys keep their strict types and ranges.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal, TextIO
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mixer_ext import DEFAULT_IDENTITY
from mixer_ext.errors import ConfigError, describe_validation_error
from mixer_ext.redact import redact_url
from mixer_ext.safejson import loads_bounded
from mixer_ext.settings import MAX_PARTICIPANT_DURATION_LIMIT

log = logging.getLogger(__name__)

#: AAC bitrates (kbps) we accept: below 32 stereo AAC-LC is unusable, above 320 is waste.
MIN_AUDIO_BITRATE = 32
MAX_AUDIO_BITRATE = 320
DEFAULT_AUDIO_BITRATE = 128

_HLS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PLAYER_STREAMER_ID = re.compile(r"^VJ[0-9a-fA-F]{32}$")
_IDENTITY = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
RECORDING_EXTENSIONS = {".m4a": "mp4", ".mp4": "mp4", ".ts": "mpegts"}


# --------------------------------------------------------------------------- outputs
@dataclass(frozen=True)
class HlsOutputSpec:
    """HLS under ``$MIXER_HLS_DIR/<name>/index.m3u8``."""

    name: str
    kind: Literal["hls"] = "hls"

    @property
    def label(self) -> str:
        return f"hls:{self.name}"


@dataclass(frozen=True)
class RtmpOutputSpec:
    """An RTMP or RTMPS ingest URL; the last path segment and query are the stream key."""

    url: str
    kind: Literal["rtmp"] = "rtmp"

    @property
    def label(self) -> str:
        """The URL with its stream key redacted: the only form fit for logs and metrics."""
        return redact_url(self.url)


@dataclass(frozen=True)
class FileOutputSpec:
    """A recording; the container follows the extension (see RECORDING_EXTENSIONS)."""

    path: Path
    container: str
    kind: Literal["file"] = "file"

    @property
    def label(self) -> str:
        return f"file:{self.path}"


OutputSpec = HlsOutputSpec | RtmpOutputSpec | FileOutputSpec

_OUTPUT_HELP = "expected hls:NAME, VJ + 32 hex characters, rtmp://..., rtmps://... or file:PATH"


def parse_output(value: str) -> OutputSpec:
    """Parse one output string; raises ValueError with a one-line reason."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"empty output ({_OUTPUT_HELP})")
    value = value.strip()
    if _PLAYER_STREAMER_ID.match(value):
        return HlsOutputSpec(name=value)
    scheme, sep, rest = value.partition(":")
    scheme = scheme.lower()
    if sep and scheme == "hls":
        if not _HLS_NAME.match(rest):
            raise ValueError(
                f"HLS name {rest!r} must be 1-128 letters, digits, '.', '_' or '-' "
                "and not start with a punctuation mark"
            )
        return HlsOutputSpec(name=rest)
    if sep and scheme in ("rtmp", "rtmps"):
        parts = urlsplit(value)
        if not parts.hostname:
            raise ValueError(f"RTMP URL {redact_url(value)!r} has no host")
        if len(PurePosixPath(parts.path).parts) < 3:  # "/", "app", "key"
            raise ValueError(
                f"RTMP URL {redact_url(value)!r} needs an application and a stream key "
                "(rtmp://host/app/KEY)"
            )
        return RtmpOutputSpec(url=value)
    if sep and scheme == "file":
        if not rest:
            raise ValueError("file: output needs a path")
        path = Path(rest)
        container = RECORDING_EXTENSIONS.get(path.suffix.lower())
        if container is None:
            known = ", ".join(sorted(RECORDING_EXTENSIONS))
            raise ValueError(f"recording {rest!r} has an unsupported extension (use {known})")
        return FileOutputSpec(path=path, container=container)
    shown = redact_url(value) if "://" in value else value
    raise ValueError(f"unknown output {shown[:80]!r} ({_OUTPUT_HELP})")


# --------------------------------------------------------------------------- context
class RoomRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=256)]

    @field_validator("name")
    @classmethod
    def _no_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v


class ExtensionContext(BaseModel):
    """The validated context.  ``outputs`` holds the raw strings; ``output_specs`` parses them.

    Unknown top-level keys are ignored (``extra="ignore"``; see ``unknown_keys``).
    """

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    room: RoomRef
    identity: str = DEFAULT_IDENTITY
    outputs: Annotated[list[str], Field(min_length=1, max_length=16)]
    audio_bitrate: Annotated[
        int, Field(alias="audioBitrate", ge=MIN_AUDIO_BITRATE, le=MAX_AUDIO_BITRATE, strict=True)
    ] = DEFAULT_AUDIO_BITRATE
    #: seconds; None means "the MIXER_MAX_PARTICIPANT_DURATION setting"
    max_participant_duration: Annotated[
        int | None,
        Field(alias="maxParticipantDuration", ge=1, le=MAX_PARTICIPANT_DURATION_LIMIT, strict=True),
    ] = None

    @field_validator("identity")
    @classmethod
    def _identity(cls, v: str) -> str:
        if not _IDENTITY.match(v) or not v.strip():
            raise ValueError("must be 1-128 printable characters")
        return v

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        for i, raw in enumerate(v):
            try:
                spec = parse_output(raw)
            except ValueError as exc:
                raise ValueError(f"[{i}]: {exc}") from None
            key = spec.label if spec.kind != "rtmp" else raw
            if key in seen:
                raise ValueError(f"[{i}]: duplicate output {spec.label!r}")
            seen.add(key)
        return v

    @property
    def output_specs(self) -> list[OutputSpec]:
        return [parse_output(o) for o in self.outputs]

    def effective_max_duration(self, setting: int) -> int:
        """The context's maximum duration where given, else the setting's."""
        return self.max_participant_duration or setting


#: a context read from standard input is at most this long (a real one is < 10 KB)
MAX_CONTEXT_CHARS = 1 << 20


def unknown_keys(data: dict[str, object]) -> list[str]:
    """The top-level keys of a context object that the extension does not know."""
    known: set[str] = set()
    for name, info in ExtensionContext.model_fields.items():
        known.add(name)
        if info.alias:
            known.add(info.alias)
    return sorted(k for k in data if k not in known)


def parse_context(
    text: str, *, source: str = "context", note_unknown: bool = False
) -> ExtensionContext:
    """Validate context JSON text.  Raises ConfigError with one line.

    ``note_unknown``: log the ignored unknown keys (by name, at info); the places a
    context enters say True, the many re-reads of a stored context say nothing.
    """
    try:
        data = loads_bounded(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a JSON object, got {type(data).__name__}")
    try:
        context = ExtensionContext.model_validate(data)
    except ValidationError as exc:
        line = describe_validation_error(exc)
        # pydantic puts our "[i]: ..." after "outputs: "; join them as outputs[i].
        line = re.sub(r"^outputs: \[(\d+)\]:", r"outputs[\1]:", line)
        raise ConfigError(f"{source}: {line}") from None
    ignored = unknown_keys(data)
    if note_unknown and ignored:
        shown = ", ".join(repr(k[:40]) for k in ignored[:16])
        more = f" and {len(ignored) - 16} more" if len(ignored) > 16 else ""
        log.info(
            "%s: ignoring unknown key(s) %s%s (as the hosted service did)", source, shown, more
        )
    return context


def load_context(value: str, stdin: TextIO | None = None) -> ExtensionContext:
    """``value`` is ``-`` (read from ``stdin``), inline JSON (starting with ``{``) or a path.

    ``-`` is the way to pass a context holding RTMP stream keys: the command line of a
    process is world-readable (``ps``, ``/proc/PID/cmdline``), its standard input is not.
    """
    if value == "-":
        stream = sys.stdin if stdin is None else stdin
        if stream is None or stream.isatty():
            raise ConfigError("--context -: expected the context JSON on standard input")
        text = stream.read(MAX_CONTEXT_CHARS + 1)
        if len(text) > MAX_CONTEXT_CHARS:
            raise ConfigError(f"context on stdin: longer than {MAX_CONTEXT_CHARS} characters")
        return parse_context(text, source="context on stdin", note_unknown=True)
    stripped = value.lstrip()
    if stripped.startswith("{"):
        return parse_context(stripped, note_unknown=True)
    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"context file {value!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"context file {value!r} cannot be read: {exc}") from None
    return parse_context(text, source=f"context {value}", note_unknown=True)
