"""The HLS media playlist, as plain data with no I/O (``HlsPlaylist.render()``).

Written by ``HlsOutput`` rather than FFmpeg's ``hls`` muxer because the
contract needs control FFmpeg does not give from PyAV: every playlist write
is atomic (temp file + ``os.replace``), ``#EXT-X-ENDLIST`` appears exactly
when the run ends normally (and not when it is aborted), and a failed disk
write surfaces as an error of this output instead of a log line deep in
libavformat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class Segment:
    uri: str
    #: seconds
    duration: float
    #: UTC wall-clock time of the segment's first sample (EXT-X-PROGRAM-DATE-TIME)
    start_time: datetime
    sequence: int


@dataclass
class HlsPlaylist:
    """A live (sliding window) or event playlist.

    ``target_duration`` is the configured segment length; the tag is the
    largest rounded segment duration seen, never below it (RFC 8216 4.3.3.1),
    so it never shrinks while the playlist lives.
    """

    target_duration: float
    #: segments listed in a live playlist; None = event playlist (keep all)
    window: int | None
    segments: list[Segment] = field(default_factory=list)
    ended: bool = False
    _target_tag: int = 0

    def __post_init__(self) -> None:
        self._target_tag = max(1, math.ceil(self.target_duration - 1e-9))

    def add(self, segment: Segment) -> list[Segment]:
        """Append a finished segment; returns the segments that left the window."""
        self.segments.append(segment)
        self._target_tag = max(self._target_tag, round(segment.duration))
        if self.window is None or len(self.segments) <= self.window:
            return []
        gone = self.segments[: len(self.segments) - self.window]
        del self.segments[: len(gone)]
        return gone

    @property
    def media_sequence(self) -> int:
        return self.segments[0].sequence if self.segments else 0

    def render(self) -> str:
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:3",
            f"#EXT-X-TARGETDURATION:{self._target_tag}",
            f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}",
        ]
        if self.window is None:
            lines.append("#EXT-X-PLAYLIST-TYPE:EVENT")
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
        for seg in self.segments:
            stamp = seg.start_time.astimezone(UTC).isoformat(timespec="milliseconds")
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{stamp.replace('+00:00', 'Z')}")
            lines.append(f"#EXTINF:{seg.duration:.6f},")
            lines.append(seg.uri)
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"
