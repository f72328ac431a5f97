"""Writes an HLS stream to a directory: TS segments (and LL-HLS parts), the playlist.

Meant to run on the HLS output's thread (it blocks on small file writes).  Every
TS is muxed in memory (``tspart.mux_part``) and written with Python file I/O to a
temp file, then renamed: PyAV holds the GIL in ``avio_open``/``write_trailer``/
``avio_closep``, Python's ``write()`` does not, so a slow volume stalls this
thread only, never the mixer tick (issue 16.5).  A reader never sees half a file.

* With a part target (LL-HLS): AAC packets are cut into parts of whole AAC
  frames, each at most ``part_target`` seconds (9 frames = 0.192 s for 0.2 s),
  and parts into segments of ``round(segment_duration / part)`` parts, so every
  part but the last of a segment passes the spec's 85 % rule and no part
  exceeds PART-TARGET.  Each part is muxed alone, its continuity counters
  renumbered, and written ``part-MSN-I.ts``; the parent ``seg-MSN.ts`` is the
  exact concatenation of its parts.  The playlist is rewritten after every
  part and ``on_change()`` is called (the origin's ``notify``).
* Without one (plain HLS): a segment is cut on the first AAC frame at or past
  ``segment_duration``; each ``seg-MSN.ts`` is muxed whole; the playlist is
  rewritten after every segment.
* ID3 tags go whole into the part (segment) being built when they arrive.
* Live playlists keep ``window`` segments; files of segments that left the
  window are deleted once they are another window behind (parts with their
  parent), so a player holding an older playlist can still fetch them.

Gaps are marked, never stretched (issue 16.8): when the audio's pts jumps
(packets dropped upstream) or a packet says ``discontinuity`` (the clock
re-anchored after a stall), the part and segment in progress end at the last
sample they hold and the next segment starts after ``#EXT-X-DISCONTINUITY``.
Segments therefore never exceed their target and ``#EXT-X-TARGETDURATION``
never changes during a run.  ``discontinuities`` counts them.

A restart is a resume (issue 16.7): ``open()`` finds an unfinished playlist of
an earlier run in the directory (no ``#EXT-X-ENDLIST``) and continues it: the
segments it lists stay listed, the parts of its open segment (advertised, never
completed: the process was killed) are closed into a short segment of their
own, media sequence numbers go on rising (so a file name never comes back with
other bytes), and the new run's first segment follows ``#EXT-X-DISCONTINUITY``.
A finished playlist (ENDLIST) is not continued: its files go, but numbering
still goes on from it.

The end of a low-latency stream is paced (``close(end_of_stream=True)``): the
last, short part and the completed last segment are published as a live
playlist like any segment boundary, no sooner than one part after the part
before them, and ``#EXT-X-ENDLIST`` follows one part later in a playlist that
changes nothing else.  Why: hls.js 1.7.4 handles a live playlist that ends
(``stream-controller`` ``checkLiveUpdate``) badly when the same update also
completes the open segment with a new part: its fragment tracker treats up to
0.2 s missing at a fragment's end as buffered (``bufferPadding``; every part
here is 0.192 s), so it either forgets the segment's loaded parts and reloads
one, which its AAC remuxer then appends *after* the buffer as if contiguous
(0.19 s of audio played twice), or, with a part still in flight, marks the
segment complete without its last part and never loads it (playback stops
short of the end and never ends).  Published in this order, the player has
loaded every part as a part of a complete segment before it sees ENDLIST, and
ends on its own rule (the last part is buffered).  It costs at most two parts
(0.4 s) at shutdown, on the output thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mixer_ext.hls.playlist import (
    MediaPlaylist,
    Part,
    PlaylistSyntaxError,
    Segment,
    parse_media_playlist,
)
from mixer_ext.hls.tspart import AudioPacket, ContinuityCounters, Id3Packet, mux_part

log = logging.getLogger(__name__)

PLAYLIST_NAME = "index.m3u8"
AAC_FRAME = 1024
#: a pts this far (samples) from where the previous packet ended is a gap, not jitter
GAP_TOLERANCE = 64
#: files this writer owns in its directory (media, their temp files, the playlist's temp)
_MEDIA_RE = re.compile(r"^\.?(?:seg-(\d{6,})|part-(\d{6,})-(\d{1,4}))\.ts(?:\.tmp)?$")


def part_uri(msn: int, index: int) -> str:
    return f"part-{msn:06d}-{index}.ts"


def segment_uri(msn: int) -> str:
    return f"seg-{msn:06d}.ts"


class PartedStreamWriter:
    """One HLS stream in ``directory`` (see the module doc); not thread-safe.

    ``part_target=None`` writes plain HLS (whole segments, no parts).  Call
    ``open()`` once before the first packet.
    """

    def __init__(
        self,
        directory: Path,
        *,
        extradata: bytes,
        bit_rate: int,
        part_target: float | None = 0.2,
        part_hold_back: float | None = None,
        segment_duration: float = 1.0,
        window: int | None = 6,
        delta_updates: bool | None = None,
        sample_rate: int = 48000,
        on_change: Callable[[], None] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        end_pacing: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.directory = Path(directory)
        self.rate = sample_rate
        self.low_latency = part_target is not None
        if part_target is not None:
            frames = int(part_target * sample_rate / AAC_FRAME + 1e-9)
            if frames < 1:
                raise ValueError(f"part target {part_target} s is shorter than one AAC frame")
            self.part_samples = frames * AAC_FRAME
            self.parts_per_segment = max(
                1, round(segment_duration * sample_rate / self.part_samples)
            )
        else:
            self.part_samples = 0
            self.parts_per_segment = 0
        self.segment_samples = round(segment_duration * sample_rate)
        self.extradata, self.bit_rate = extradata, bit_rate
        self.playlist = MediaPlaylist(
            segment_duration,
            window,
            part_target=part_target,
            part_hold_back=part_hold_back if part_target is not None else None,
            delta_updates=(
                self.low_latency and (window is None if delta_updates is None else delta_updates)
            ),
        )
        if self.low_latency:
            self.playlist.preload_hint = part_uri(1, 0)
        self._on_change = on_change
        self._now = now
        #: seconds between the last publications of a low-latency stream (module doc);
        #: None = one part
        self.end_pacing = self.part_samples / sample_rate if end_pacing is None else end_pacing
        self._monotonic, self._sleep = monotonic, sleep
        #: monotonic time of the last playlist write, None before the first
        self._published: float | None = None
        self._counters = ContinuityCounters()
        self._audio: list[AudioPacket] = []
        self._id3: list[Id3Packet] = []
        self._part_start = 0
        self._seg_start = 0
        self._seg_parts: list[bytes] = []
        self._msn = 1
        self._retired: list[Segment] = []
        self._keep_retired = window
        self._epoch: datetime | None = None
        #: where the previous packet ended (samples); None before the first and after a gap
        self._next_pts: int | None = None
        #: the segment being built follows a discontinuity
        self._seg_discontinuity = False
        #: wall-clock end of the last segment written (PROGRAM-DATE-TIME never goes back)
        self._last_end: datetime | None = None
        self.bytes_written = 0
        #: EXT-X-DISCONTINUITY tags this run wrote (gaps, resyncs, the resume)
        self.discontinuities = 0
        #: True when open() continued a playlist an earlier run left unfinished
        self.resumed = False

    @property
    def playlist_path(self) -> Path:
        return self.directory / PLAYLIST_NAME

    # ------------------------------------------------------------------ directory
    def open(self) -> None:
        """Take the directory over: resume an unfinished playlist there, or clear it."""
        old: MediaPlaylist | None = None
        if self.playlist_path.exists():
            try:
                old = parse_media_playlist(self.playlist_path.read_text())
            except (PlaylistSyntaxError, UnicodeDecodeError) as exc:
                log.warning("HLS %s: the earlier playlist is unreadable (%s)", self.directory, exc)
        if old is not None and not old.ended:
            self._resume(old)
            return
        # nothing to continue: clear the leftovers, but never reuse a number shown before
        self._msn = old.next_sequence if old is not None else 1
        self.playlist.first_sequence = self._msn
        if self.low_latency:
            self.playlist.preload_hint = part_uri(self._msn, 0)
        for path, _msn in self._media_files():
            path.unlink()
        for name in (PLAYLIST_NAME, "." + PLAYLIST_NAME + ".tmp"):
            with contextlib.suppress(FileNotFoundError):
                (self.directory / name).unlink()

    def _media_files(self) -> list[tuple[Path, int]]:
        out = []
        for path in self.directory.iterdir():
            m = _MEDIA_RE.match(path.name)
            if m:
                out.append((path, int(m.group(1) or m.group(2))))
        return out

    def _resume(self, old: MediaPlaylist) -> None:
        self.resumed = True
        listed = {s.uri for s in old.segments} | {p.uri for s in old.segments for p in s.parts}
        open_msn = old.next_sequence
        # the old run's open segment: its parts were advertised; close them into a segment
        present: list[Part] = []
        for part in old.open_parts:
            if not (self.directory / part.uri).is_file():
                break
            present.append(part)
        closing: Segment | None = None
        if present:
            data = b"".join((self.directory / p.uri).read_bytes() for p in present)
            uri = segment_uri(open_msn)
            self._write(self.directory / uri, data)
            start = old.open_start or (
                old.segments[-1].start_time + timedelta(seconds=old.segments[-1].duration)
                if old.segments
                else self._now()
            )
            closing = Segment(
                uri,
                sum(p.duration for p in present),
                start,
                open_msn,
                tuple(present),
                old.open_discontinuity,
            )
            listed |= {uri, *(p.uri for p in present)}
        elif old.open_parts:
            log.warning(
                "HLS %s: parts of the earlier run's last segment are missing; dropped",
                self.directory,
            )
        first = old.media_sequence
        retired: dict[int, list[str]] = {}
        for path, msn in self._media_files():
            if path.name in listed:
                continue
            if path.name.startswith(".") or msn >= first:
                path.unlink()  # a temp file, or never listed: nobody has seen these bytes
            else:
                retired.setdefault(msn, []).append(path.name)
        self._retired = [
            Segment(
                segment_uri(msn),
                0.0,
                self._now(),
                msn,
                tuple(Part(n, 0.0) for n in names if n.startswith("part-")),
            )
            for msn, names in sorted(retired.items())
        ]
        self.playlist.discontinuity_sequence = old.discontinuity_sequence
        self.playlist.first_sequence = first
        self._retired.extend(self.playlist.restore(old.segments))
        if closing is not None:
            self._retired.extend(self.playlist.add(closing))
        self._msn = self.playlist.next_sequence
        if self.playlist.segments:
            last = self.playlist.segments[-1]
            self._last_end = last.start_time + timedelta(seconds=last.duration)
        self._seg_discontinuity = bool(self.playlist.segments)
        if self.low_latency:
            self.playlist.preload_hint = part_uri(self._msn, 0)
        self._delete_old()
        self._write_playlist()
        log.info(
            "HLS %s: resuming the earlier run's playlist at media sequence %d",
            self.directory,
            self._msn,
        )

    # ------------------------------------------------------------------ input
    def audio(self, packet: AudioPacket, *, discontinuity: bool = False) -> None:
        """Add one AAC packet.  ``discontinuity``: the timeline jumped before it."""
        if self._next_pts is not None:
            gap = abs(packet.pts - self._next_pts) > GAP_TOLERANCE
            if gap or discontinuity:
                self._break(reanchor=not gap)
        if self._epoch is None:
            epoch = self._now() - timedelta(seconds=packet.pts / self.rate)
            if self._last_end is not None:  # never before what is already listed
                epoch = max(epoch, self._last_end - timedelta(seconds=packet.pts / self.rate))
            self._epoch = epoch
        if self.low_latency:
            if self._audio and packet.pts + packet.duration - self._part_start > self.part_samples:
                self._finish_part()
        elif self._audio and packet.pts - self._seg_start >= self.segment_samples:
            self._finish_segment()
        if not self._audio:
            self._part_start = packet.pts
            if not self._seg_parts:
                self._seg_start = packet.pts
        self._audio.append(packet)
        self._next_pts = packet.pts + packet.duration

    def id3(self, tag: Id3Packet) -> None:
        self._id3.append(tag)
        if self._epoch is None:
            del self._id3[:-16]  # bounded: tags only pile up before the first audio

    def close(self, end_of_stream: bool) -> None:
        """Write what is buffered; with ``end_of_stream`` end the playlist (ENDLIST).

        Low-latency end of stream: paced, in two publications (module doc).
        """
        if self.low_latency and end_of_stream and self._published is not None:
            if self._audio or self._seg_parts:
                self._pace()
                self._flush()  # the last part, and its segment complete
                self.playlist.preload_hint = part_uri(self._msn, 0)
                self._write_playlist()
            self._pace()
        self._flush()
        self.playlist.ended = end_of_stream
        if end_of_stream:
            self.playlist.preload_hint = None
        if self.low_latency or self.playlist.segments or end_of_stream:
            self._write_playlist()

    # ------------------------------------------------------------------ parts and segments
    def _flush(self) -> None:
        if self.low_latency:
            if self._audio:
                self._finish_part(last=True)
            if self._seg_parts:
                self._finish_segment()
        elif self._audio:
            self._finish_segment()

    def _break(self, *, reanchor: bool) -> None:
        """End the part and segment in progress; the next segment follows a discontinuity."""
        self._flush()
        self._seg_discontinuity = True
        self.discontinuities += 1
        if reanchor:
            # the pts ran on but the wall clock jumped (a stall): restamp from now on
            self._epoch = None
        if self.low_latency:
            self.playlist.preload_hint = part_uri(self._msn, 0)
            self._write_playlist()

    def _start_time(self) -> datetime:
        if self._epoch is None:  # an invariant of this class
            raise RuntimeError("internal: self._epoch not set")
        return self._epoch + timedelta(seconds=self._seg_start / self.rate)

    def _finish_part(self, *, last: bool = False) -> None:
        end = self._audio[-1].pts + self._audio[-1].duration
        data = self._counters.rewrite(
            mux_part(self._audio, self._id3, extradata=self.extradata, bit_rate=self.bit_rate)
        )
        index = len(self._seg_parts)
        uri = part_uri(self._msn, index)
        self._write(self.directory / uri, data)
        duration = (end - self._part_start) / self.rate
        self.playlist.add_part(
            Part(uri, duration),
            segment_start=self._start_time(),
            discontinuity=self._seg_discontinuity,
        )
        self._seg_parts.append(data)
        self._audio, self._id3 = [], []
        self._part_start = end
        if len(self._seg_parts) >= self.parts_per_segment:
            self._finish_segment()
        if not last:
            self.playlist.preload_hint = part_uri(self._msn, len(self._seg_parts))
            self._write_playlist()

    def _finish_segment(self) -> None:
        uri = segment_uri(self._msn)
        start = self._start_time()
        if self.low_latency:
            data = b"".join(self._seg_parts)
            duration = sum(p.duration for p in self.playlist.open_parts)
        else:
            end = self._audio[-1].pts + self._audio[-1].duration
            data = mux_part(
                self._audio, self._id3, extradata=self.extradata, bit_rate=self.bit_rate
            )
            duration = (end - self._seg_start) / self.rate
            self._audio, self._id3 = [], []
        self._write(self.directory / uri, data)
        segment = Segment(uri, duration, start, self._msn, discontinuity=self._seg_discontinuity)
        self._retired.extend(self.playlist.add(segment))
        self._last_end = start + timedelta(seconds=duration)
        self._seg_parts = []
        self._seg_discontinuity = False
        self._msn += 1
        self._delete_old()
        if not self.low_latency:
            self._write_playlist()

    def _delete_old(self) -> None:
        if self._keep_retired is None:
            return
        while len(self._retired) > self._keep_retired:
            old = self._retired.pop(0)
            for name in [old.uri, *(p.uri for p in old.parts)]:
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / name).unlink()

    def _pace(self) -> None:
        """Wait until ``end_pacing`` has passed since the last playlist write."""
        if self._published is None:
            return
        wait = self._published + self.end_pacing - self._monotonic()
        if wait > 0:
            self._sleep(wait)

    def _write_playlist(self) -> None:
        self._write(self.playlist_path, self.playlist.render().encode())
        self._published = self._monotonic()
        if self._on_change is not None:
            self._on_change()

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name("." + path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        self.bytes_written += len(data)
