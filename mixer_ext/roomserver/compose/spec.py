"""What a composition mixes and over which time (sans-I/O): sources, selection, trim.

Twilio's rules, as its Compositions API states them:

- ``AudioSources`` names the recordings' track names to mix, each possibly with ``*``
  wildcards (``*`` alone: every audio track); ``AudioSourcesExcluded`` removes names
  from that set, with the same wildcards.  Nothing selected is an error.
- ``Trim`` (default true) drops the stretches of the room's timeline where no selected
  recording has media (before the first track, between tracks); false keeps the
  composition on the room's timeline from its start to the end of the last recording.
- ``Format``: ``mp4`` (AAC in MP4) or ``webm`` (Opus in WebM).

Times are 48 kHz sample counts on the room's timeline (0 = the room's start).

A job travels to another process as JSON (``encode_job``/``decode_job``), its files as
media keys under the storage's root (``mixer-ext compose``, a Kubernetes Job).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mixer_ext.roomserver.storage import check_key

SAMPLE_RATE = 48_000
FORMATS = ("mp4", "webm")
#: a track name pattern: what Twilio accepts (letters, digits, ``-_.*`` and spaces)
_PATTERN = re.compile(r"^[\w .*-]{1,128}$")


class CompositionSpecError(ValueError):
    """A composition request that cannot be honoured (a one-line reason)."""


@dataclass(frozen=True)
class Source:
    """One recording to mix: its file, its track name and where it sits in the room."""

    name: str
    path: Path
    #: the recording's first sample on the room's timeline
    offset: int
    #: its length in samples (from the first payload to the end of the last)
    duration: int

    @property
    def end(self) -> int:
        return self.offset + self.duration


@dataclass(frozen=True)
class CompositionJob:
    """Everything a worker process needs to mix one composition (picklable)."""

    sources: tuple[Source, ...]
    output: Path
    format: str
    #: ``(start, end)`` stretches of the room's timeline, in order, concatenated in the output
    segments: tuple[tuple[int, int], ...]


def _patterns(value: Iterable[str], field: str) -> list[str]:
    out: list[str] = []
    for raw in value:
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            if not _PATTERN.match(item):
                raise CompositionSpecError(f"{field}: invalid track name pattern {item!r}")
            out.append(item)
    return out


def select(
    sources: Sequence[Source], audio_sources: Iterable[str], excluded: Iterable[str] = ()
) -> list[Source]:
    """The sources whose track names match ``audio_sources`` and none of ``excluded``."""
    include = _patterns(audio_sources, "AudioSources")
    exclude = _patterns(excluded, "AudioSourcesExcluded")
    if not include:
        raise CompositionSpecError("AudioSources: at least one track name (or '*') is required")
    chosen = [
        s
        for s in sources
        if any(fnmatch.fnmatchcase(s.name, p) for p in include)
        and not any(fnmatch.fnmatchcase(s.name, p) for p in exclude)
    ]
    if not chosen:
        raise CompositionSpecError("no recording of the room matches AudioSources")
    return chosen


def segments(sources: Sequence[Source], trim: bool) -> list[tuple[int, int]]:
    """The stretches of the room's timeline the composition covers, in order."""
    spans = sorted((s.offset, s.end) for s in sources if s.duration > 0)
    if not spans:
        return []
    if not trim:
        return [(0, max(end for _, end in spans))]
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def plan(
    sources: Sequence[Source],
    output: Path,
    *,
    fmt: str = "webm",
    audio_sources: Iterable[str] = ("*",),
    excluded: Iterable[str] = (),
    trim: bool = True,
) -> CompositionJob:
    """Check a request against a room's recordings and return the job (or raise)."""
    if fmt not in FORMATS:
        raise CompositionSpecError(f"Format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    chosen = select(sources, audio_sources, excluded)
    spans = segments(chosen, trim)
    if not spans:
        raise CompositionSpecError("the selected recordings hold no media")
    return CompositionJob(tuple(chosen), output, fmt, tuple(spans))


def output_duration(job: CompositionJob) -> int:
    """Samples in the composition."""
    return sum(end - start for start, end in job.segments)


def encode_job(job: CompositionJob, root: Path) -> str:
    """``job`` as JSON with its files as paths relative to ``root`` (the media store's
    directory), so a process that mounts the same storage elsewhere (a Kubernetes Job,
    ``mixer-ext compose``) finds them under its own root."""

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    return json.dumps(
        {
            "sources": [
                {"name": s.name, "key": rel(s.path), "offset": s.offset, "duration": s.duration}
                for s in job.sources
            ],
            "output": rel(job.output),
            "format": job.format,
            "segments": [list(seg) for seg in job.segments],
        }
    )


def _key(value: object, what: str) -> str:
    """A media key as the store's grammar allows it (no "..", no absolute path)."""
    try:
        return check_key(str(value))
    except ValueError:
        raise CompositionSpecError(f"{what}: not a media key: {str(value)[:80]!r}") from None


def decode_job(text: str, root: Path) -> CompositionJob:
    """The job ``encode_job`` wrote, its keys resolved under ``root``; raises
    ``CompositionSpecError`` naming what is wrong (keys are checked: no path outside)."""
    try:
        doc = json.loads(text)
        sources = tuple(
            Source(
                str(s["name"]),
                root / _key(s["key"], "sources[].key"),
                int(s["offset"]),
                int(s["duration"]),
            )
            for s in doc["sources"]
        )
        output = root / _key(doc["output"], "output")
        fmt = doc["format"]
        spans = tuple((int(a), int(b)) for a, b in doc["segments"])
    except (ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, CompositionSpecError):
            raise
        raise CompositionSpecError(f"not a composition job: {exc!s:.200}") from None
    if fmt not in FORMATS:
        raise CompositionSpecError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not sources or not spans or any(a >= b for a, b in spans):
        raise CompositionSpecError("a composition job needs sources and non-empty segments")
    return CompositionJob(sources, output, fmt, spans)
