"""The HLS media playlist with LL-HLS parts, as plain data with no I/O.

One model serves both sides of the origin:

* the HLS output builds it (``add_part()``, ``add_segment()``) and writes
  ``render()`` to disk after every change;
* the HTTP origin gets it back with ``parse_media_playlist()`` (from a file
  another process wrote, e.g. the control plane serving a worker's
  directory) and answers blocking reloads from its ``position()`` and delta
  updates from ``render(skip=True)``.

What is rendered (RFC 8216bis draft-22; ``shared/reference/llhls-notes.md``):

* without a part target (LL-HLS off) exactly the RFC 8216 playlist of
  before: version 3, ``PROGRAM-DATE-TIME`` + ``EXTINF`` + URI per segment;
* with a part target: ``#EXT-X-VERSION:10``, ``#EXT-X-PART-INF``,
  ``#EXT-X-SERVER-CONTROL`` (``CAN-BLOCK-RELOAD=YES``, ``PART-HOLD-BACK``,
  ``HOLD-BACK``, and ``CAN-SKIP-UNTIL`` when delta updates are offered),
  ``EXT-X-PART`` lines for the last ``part_segments`` complete segments and
  the open one, ``PROGRAM-DATE-TIME`` before each segment's first part, and
  one ``EXT-X-PRELOAD-HINT`` for the next part while the stream runs.  A
  player that does not know these tags skips them (RFC 8216 4.1: unknown
  tags are ignored) and plays the segments as before.

Rendering cost: segments whose parts are no longer listed are rendered once
and cached, so a 24 h EVENT playlist (86 400 one-second segments) costs a
join per change, not a re-format of every line.

Why one module: the media playlist's model, its renderer (with delta
updates) and its parser are one format, tested by round trips.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

#: the default PART-HOLD-BACK in part targets (Apple-AS 14.3 asks >= 3 x PART-TARGET)
DEFAULT_PART_HOLD_BACK_FACTOR = 3.0
#: RFC 8216bis 4.4.3.8: PART-HOLD-BACK MUST be >= 2 x PART-TARGET
MIN_PART_HOLD_BACK_FACTOR = 2.0
#: RFC 8216bis 4.4.3.8: CAN-SKIP-UNTIL MUST be >= 6 x TARGETDURATION
SKIP_FACTOR = 6


@dataclass(frozen=True, slots=True)
class Part:
    uri: str
    #: seconds
    duration: float
    independent: bool = True


@dataclass(frozen=True, slots=True)
class Segment:
    uri: str
    #: seconds
    duration: float
    #: UTC wall-clock time of the segment's first sample (EXT-X-PROGRAM-DATE-TIME)
    start_time: datetime
    sequence: int
    #: its partial segments, in order (empty when LL-HLS is off); their bytes concatenated
    #: are the segment's bytes
    parts: tuple[Part, ...] = ()
    #: preceded by EXT-X-DISCONTINUITY: a gap in the timeline (dropped audio, a clock
    #: resync, a restart) lies between this segment and the one before
    discontinuity: bool = False


@dataclass(frozen=True, slots=True)
class Position:
    """Where the live edge of a playlist is, for blocking reloads (no I/O, immutable)."""

    #: MSN of the first listed segment
    first_msn: int
    #: MSN of the last complete segment, ``first_msn - 1`` when none is complete yet
    last_msn: int
    #: parts of segment ``last_msn`` (0 when unknown or when LL-HLS is off)
    last_msn_parts: int
    #: parts of the open segment ``last_msn + 1`` listed so far
    open_parts: int
    ended: bool
    #: seconds, the rounded TARGETDURATION tag
    target_duration: int
    #: seconds, None when the playlist has no parts
    part_target: float | None
    #: delta updates offered (CAN-SKIP-UNTIL present)
    can_skip: bool
    #: URI of EXT-X-PRELOAD-HINT, if any
    preload_hint: str | None


def format_time(t: datetime) -> str:
    stamp = t.astimezone(UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _num(x: float) -> str:
    """Shortest decimal for an attribute value (``0.2``, ``0.6``, ``3``)."""
    text = f"{x:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def _part_line(part: Part) -> str:
    line = f'#EXT-X-PART:DURATION={part.duration:.5f},URI="{part.uri}"'
    return line + ",INDEPENDENT=YES" if part.independent else line


@dataclass
class MediaPlaylist:
    """A live (sliding window) or event playlist, optionally with LL-HLS parts.

    ``target_duration`` is the configured segment length; the tag is the
    largest rounded segment duration seen, never below it (RFC 8216 4.3.3.1),
    so it never shrinks while the playlist lives.  ``part_target`` (seconds)
    switches LL-HLS on; every part added must be at most that long.
    """

    target_duration: float
    #: segments listed in a live playlist; None = event playlist (keep all)
    window: int | None
    part_target: float | None = None
    #: seconds; None = 3 x part_target (Apple-AS 14.3); at least 2 x part_target (the spec)
    part_hold_back: float | None = None
    #: seconds; None = 3 x TARGETDURATION (the spec's default)
    hold_back: float | None = None
    #: complete segments whose parts stay listed (besides the open segment)
    part_segments: int = 3
    #: offer delta updates (CAN-SKIP-UNTIL, 6 x TARGETDURATION); meant for EVENT playlists
    delta_updates: bool = False
    segments: list[Segment] = field(default_factory=list)
    #: parts of the segment being written (MSN = ``next_sequence``)
    open_parts: list[Part] = field(default_factory=list)
    #: wall-clock start of the open segment (PROGRAM-DATE-TIME before its first part)
    open_start: datetime | None = None
    #: URI of the next part (EXT-X-PRELOAD-HINT), set by the writer
    preload_hint: str | None = None
    ended: bool = False
    #: MSN of the first segment when the list is empty (what the writer will number next)
    first_sequence: int = 1
    #: the open segment follows a discontinuity (EXT-X-DISCONTINUITY before its parts)
    open_discontinuity: bool = False
    #: EXT-X-DISCONTINUITY-SEQUENCE: discontinuities that slid out of a live window
    discontinuity_sequence: int = 0
    _target_tag: int = 0
    #: rendered lines of segments whose parts are no longer listed, by MSN
    _cache: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._target_tag = max(1, math.ceil(self.target_duration - 1e-9))
        for seg in self.segments:
            self._target_tag = max(self._target_tag, round(seg.duration))
        if self.part_target is not None:
            if self.part_target <= 0:
                raise ValueError("part_target must be positive")
            if self.part_hold_back is None:
                self.part_hold_back = DEFAULT_PART_HOLD_BACK_FACTOR * self.part_target
            elif self.part_hold_back < MIN_PART_HOLD_BACK_FACTOR * self.part_target - 1e-9:
                raise ValueError("part_hold_back must be at least twice part_target")

    # ------------------------------------------------------------------ building
    @property
    def low_latency(self) -> bool:
        return self.part_target is not None

    @property
    def target_tag(self) -> int:
        return self._target_tag

    @property
    def next_sequence(self) -> int:
        """MSN of the open (or next) segment."""
        return self.segments[-1].sequence + 1 if self.segments else self.first_sequence

    def add_part(
        self,
        part: Part,
        *,
        segment_start: datetime | None = None,
        discontinuity: bool = False,
    ) -> None:
        """Append a finished part of the open segment (``segment_start`` with its first part).

        ``discontinuity`` (with the first part): the open segment follows a gap.
        """
        if self.part_target is None:
            raise ValueError("parts need a part target")
        if part.duration > self.part_target + 1e-9:
            raise ValueError(f"part {part.uri} is longer than the part target")
        if not self.open_parts:
            self.open_start = segment_start if segment_start is not None else self.open_start
            self.open_discontinuity = discontinuity
        self.open_parts.append(part)

    def add(self, segment: Segment) -> list[Segment]:
        """Append a finished segment; returns the segments that left the window.

        With LL-HLS on, a segment without parts takes the open parts.
        """
        if self.low_latency and not segment.parts and self.open_parts:
            segment = replace(
                segment,
                parts=tuple(self.open_parts),
                discontinuity=segment.discontinuity or self.open_discontinuity,
            )
        self.open_parts = []
        self.open_start = None
        self.open_discontinuity = False
        self.segments.append(segment)
        self._target_tag = max(self._target_tag, round(segment.duration))
        if self.window is None or len(self.segments) <= self.window:
            return []
        gone = self.segments[: len(self.segments) - self.window]
        del self.segments[: len(gone)]
        for seg in gone:
            self._cache.pop(seg.sequence, None)
        # RFC 8216 4.3.3.3: the count of discontinuities no longer listed
        self.discontinuity_sequence += sum(1 for seg in gone if seg.discontinuity)
        return gone

    def restore(self, segments: list[Segment]) -> list[Segment]:
        """Take the segments an earlier run listed (a resume); returns those past the window."""
        self.segments = list(segments)
        for seg in self.segments:
            self._target_tag = max(self._target_tag, round(seg.duration))
        if self.window is None or len(self.segments) <= self.window:
            return []
        gone = self.segments[: len(self.segments) - self.window]
        del self.segments[: len(gone)]
        self.discontinuity_sequence += sum(1 for seg in gone if seg.discontinuity)
        return gone

    @property
    def media_sequence(self) -> int:
        return self.segments[0].sequence if self.segments else self.first_sequence

    @property
    def can_skip_until(self) -> float | None:
        if not (self.delta_updates and self.low_latency):
            return None
        return float(SKIP_FACTOR * self._target_tag)

    def position(self) -> Position:
        last = self.segments[-1] if self.segments else None
        return Position(
            first_msn=self.media_sequence,
            last_msn=last.sequence if last else self.media_sequence - 1,
            last_msn_parts=len(last.parts) if last else 0,
            open_parts=len(self.open_parts),
            ended=self.ended,
            target_duration=self._target_tag,
            part_target=self.part_target,
            can_skip=self.can_skip_until is not None,
            preload_hint=None if self.ended else self.preload_hint,
        )

    # ------------------------------------------------------------------ rendering
    def skipped_count(self) -> int:
        """Segments a delta update replaces by EXT-X-SKIP (0 when not offered).

        A segment is skipped when at least CAN-SKIP-UNTIL seconds of complete
        segments follow it (RFC 8216bis 6.2.5.1: only segments beyond the Skip
        Boundary from the end may go).
        """
        until = self.can_skip_until
        if until is None:
            return 0
        after = 0.0
        n = len(self.segments)
        for i in range(n - 1, -1, -1):
            if after >= until:
                return i + 1
            after += self.segments[i].duration
        return 0

    def render(self, *, skip: bool = False) -> str:
        """The playlist text; ``skip`` renders the delta update (if offered)."""
        ll = self.low_latency
        lines = ["#EXTM3U", f"#EXT-X-VERSION:{10 if ll else 3}"]
        lines.append(f"#EXT-X-TARGETDURATION:{self._target_tag}")
        if ll:
            if (
                self.part_target is None or self.part_hold_back is None
            ):  # an invariant of this class
                raise RuntimeError("internal: self.part_target, self.part_hold_back not set")
            control = ["CAN-BLOCK-RELOAD=YES"]
            until = self.can_skip_until
            if until is not None:
                control.append(f"CAN-SKIP-UNTIL={_num(until)}")
            control.append(f"PART-HOLD-BACK={_num(self.part_hold_back)}")
            hold_back = self.hold_back if self.hold_back is not None else 3 * self._target_tag
            control.append(f"HOLD-BACK={_num(hold_back)}")
            lines.append("#EXT-X-SERVER-CONTROL:" + ",".join(control))
            lines.append(f"#EXT-X-PART-INF:PART-TARGET={_num(self.part_target)}")
        lines.append(f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}")
        if self.discontinuity_sequence:
            lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}")
        if self.window is None:
            lines.append("#EXT-X-PLAYLIST-TYPE:EVENT")
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
        skipped = self.skipped_count() if skip else 0
        if skipped:
            lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
        n = len(self.segments)
        with_parts = n - self.part_segments if ll else n
        body = [self._segment_text(seg, i >= with_parts) for i, seg in enumerate(self.segments)]
        if skipped:
            del body[:skipped]
        text = "\n".join(lines) + "\n" + "".join(body)
        tail: list[str] = []
        if ll and not self.ended:
            if self.open_parts and self.open_discontinuity:
                tail.append("#EXT-X-DISCONTINUITY")
            if self.open_parts and self.open_start is not None:
                tail.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_time(self.open_start)}")
            tail.extend(_part_line(p) for p in self.open_parts)
            if self.preload_hint:
                tail.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{self.preload_hint}"')
        if self.ended:
            tail.append("#EXT-X-ENDLIST")
        return text + "".join(line + "\n" for line in tail)

    def _segment_text(self, seg: Segment, list_parts: bool) -> str:
        if list_parts and seg.parts:
            return self._format_segment(seg, True)
        cached = self._cache.get(seg.sequence)
        if cached is None:
            cached = self._cache[seg.sequence] = self._format_segment(seg, False)
        return cached

    @staticmethod
    def _format_segment(seg: Segment, list_parts: bool) -> str:
        lines = ["#EXT-X-DISCONTINUITY"] if seg.discontinuity else []
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_time(seg.start_time)}")
        if list_parts:
            lines.extend(_part_line(p) for p in seg.parts)
        lines.append(f"#EXTINF:{seg.duration:.6f},")
        lines.append(seg.uri)
        return "".join(line + "\n" for line in lines)


# ---------------------------------------------------------------------- parsing
class PlaylistSyntaxError(ValueError):
    """The text is not a media playlist this module can read; ``str()`` names the line."""


def parse_attributes(text: str) -> dict[str, str]:
    """An attribute list (RFC 8216 4.2): ``A=1,B="x,y"`` -> {"A": "1", "B": "x,y"}."""
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        eq = text.find("=", i)
        if eq < 0:
            raise PlaylistSyntaxError(f"attribute without a value in {text!r}")
        name = text[i:eq].strip()
        i = eq + 1
        if i < n and text[i] == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise PlaylistSyntaxError(f"unterminated quoted string in {text!r}")
            value = text[i + 1 : end]
            i = end + 1
        else:
            end = text.find(",", i)
            end = n if end < 0 else end
            value = text[i:end].strip()
            i = end
        if not name:
            raise PlaylistSyntaxError(f"empty attribute name in {text!r}")
        out[name] = value
        if i < n and text[i] == ",":
            i += 1
    return out


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def parse_media_playlist(text: str) -> MediaPlaylist:
    """Read back a playlist written by ``MediaPlaylist.render()`` (full, not a delta update).

    Reads the tags this module writes and ignores any other tag; raises
    ``PlaylistSyntaxError`` naming the first line it cannot read.
    """
    lines = [ln.strip() for ln in text.splitlines()]
    if not lines or lines[0] != "#EXTM3U":
        raise PlaylistSyntaxError("not a playlist: the first line is not #EXTM3U")
    target = 0
    media_sequence = 0
    discontinuity_sequence = 0
    discontinuity = False
    part_target: float | None = None
    part_hold_back: float | None = None
    hold_back: float | None = None
    can_skip = False
    event = False
    ended = False
    hint: str | None = None
    segments: list[Segment] = []
    parts: list[Part] = []
    start: datetime | None = None
    duration: float | None = None
    for number, line in enumerate(lines[1:], start=2):
        try:
            if not line:
                continue
            if not line.startswith("#"):
                if duration is None or start is None:
                    raise PlaylistSyntaxError("segment URI without EXTINF and PROGRAM-DATE-TIME")
                seq = media_sequence + len(segments)
                segments.append(Segment(line, duration, start, seq, tuple(parts), discontinuity))
                parts, start, duration, discontinuity = [], None, None, False
                continue
            tag, _, value = line.partition(":")
            if tag == "#EXT-X-TARGETDURATION":
                target = int(value)
            elif tag == "#EXT-X-MEDIA-SEQUENCE":
                media_sequence = int(value)
            elif tag == "#EXT-X-DISCONTINUITY-SEQUENCE":
                discontinuity_sequence = int(value)
            elif tag == "#EXT-X-DISCONTINUITY":
                discontinuity = True
            elif tag == "#EXT-X-PLAYLIST-TYPE":
                event = value == "EVENT"
            elif tag == "#EXT-X-PART-INF":
                part_target = float(parse_attributes(value)["PART-TARGET"])
            elif tag == "#EXT-X-SERVER-CONTROL":
                attrs = parse_attributes(value)
                if "PART-HOLD-BACK" in attrs:
                    part_hold_back = float(attrs["PART-HOLD-BACK"])
                if "HOLD-BACK" in attrs:
                    hold_back = float(attrs["HOLD-BACK"])
                can_skip = "CAN-SKIP-UNTIL" in attrs
            elif tag == "#EXT-X-SKIP":
                raise PlaylistSyntaxError("a delta update cannot be read back whole")
            elif tag == "#EXT-X-PROGRAM-DATE-TIME":
                start = _parse_time(value)
            elif tag == "#EXTINF":
                duration = float(value.split(",", 1)[0])
            elif tag == "#EXT-X-PART":
                attrs = parse_attributes(value)
                parts.append(
                    Part(attrs["URI"], float(attrs["DURATION"]), attrs.get("INDEPENDENT") == "YES")
                )
            elif tag == "#EXT-X-PRELOAD-HINT":
                attrs = parse_attributes(value)
                if attrs.get("TYPE") == "PART":
                    hint = attrs["URI"]
            elif tag == "#EXT-X-ENDLIST":
                ended = True
        except (KeyError, ValueError) as exc:
            if isinstance(exc, PlaylistSyntaxError):
                raise PlaylistSyntaxError(f"line {number}: {exc}") from None
            raise PlaylistSyntaxError(f"line {number}: cannot read {line!r}") from None
    if target <= 0:
        raise PlaylistSyntaxError("no #EXT-X-TARGETDURATION")
    playlist = MediaPlaylist(
        target_duration=float(target),
        window=None if event else max(len(segments), 1),
        part_target=part_target,
        part_hold_back=part_hold_back,
        hold_back=hold_back,
        delta_updates=can_skip,
        segments=segments,
        first_sequence=media_sequence,
        ended=ended,
        preload_hint=hint,
        discontinuity_sequence=discontinuity_sequence,
    )
    if part_target is not None and segments:
        # the writer lists parts for the newest complete segments only; keep that count
        playlist.part_segments = sum(1 for s in segments if s.parts)
    if parts:
        playlist.open_parts = parts
        playlist.open_start = start
        playlist.open_discontinuity = discontinuity
    return playlist


def part_durations(playlist: MediaPlaylist) -> Iterable[float]:
    """Every listed part's duration (complete segments, then the open one)."""
    for seg in playlist.segments:
        for p in seg.parts:
            yield p.duration
    for p in playlist.open_parts:
        yield p.duration
