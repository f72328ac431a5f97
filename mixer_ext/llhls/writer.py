"""Writes an LL-HLS stream to a directory: TS parts, their parent segments, the playlist.

Meant to run on the HLS output's thread (it blocks on small file writes):

* AAC packets are cut into parts of whole AAC frames, each at most
  ``part_target`` seconds (9 frames = 0.192 s for 0.2 s), and parts into
  segments of ``round(segment_duration / part)`` parts (5 parts = 0.96 s
  for 1 s), so every part but the last of a stream passes the spec's 85 %
  rule and no part exceeds PART-TARGET.
* Each part is muxed alone in memory (``tspart.mux_part``), its continuity
  counters renumbered, and written ``part-MSN-I.ts`` (temp file + rename:
  a reader never sees half a part); the parent ``seg-MSN.ts`` is the exact
  concatenation of its parts.  ID3 tags go whole into the part being built
  when they arrive.
* After every part the playlist (``playlist.MediaPlaylist``) is rewritten
  atomically and ``on_change()`` is called (the origin's ``notify``).
* Live playlists keep ``window`` segments; files of segments that left the
  window are deleted once they are another window behind (parts with their
  parent), so a player holding an older playlist can still fetch them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mixer_ext.llhls.playlist import MediaPlaylist, Part, Segment
from mixer_ext.llhls.tspart import AudioPacket, ContinuityCounters, Id3Packet, mux_part

PLAYLIST_NAME = "index.m3u8"
AAC_FRAME = 1024


def part_uri(msn: int, index: int) -> str:
    return f"part-{msn:06d}-{index}.ts"


def segment_uri(msn: int) -> str:
    return f"seg-{msn:06d}.ts"


class PartedStreamWriter:
    """One LL-HLS stream in ``directory`` (see the module doc); not thread-safe."""

    def __init__(
        self,
        directory: Path,
        *,
        extradata: bytes,
        bit_rate: int,
        part_target: float = 0.2,
        segment_duration: float = 1.0,
        window: int | None = 6,
        delta_updates: bool | None = None,
        sample_rate: int = 48000,
        on_change: Callable[[], None] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        frames = int(part_target * sample_rate / AAC_FRAME + 1e-9)
        if frames < 1:
            raise ValueError(f"part target {part_target} s is shorter than one AAC frame")
        self.directory = Path(directory)
        self.rate = sample_rate
        self.part_samples = frames * AAC_FRAME
        self.parts_per_segment = max(1, round(segment_duration * sample_rate / self.part_samples))
        self.extradata, self.bit_rate = extradata, bit_rate
        self.playlist = MediaPlaylist(
            segment_duration,
            window,
            part_target=part_target,
            delta_updates=window is None if delta_updates is None else delta_updates,
        )
        self.playlist.preload_hint = part_uri(1, 0)
        self._on_change = on_change
        self._now = now
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
        self.bytes_written = 0

    @property
    def playlist_path(self) -> Path:
        return self.directory / PLAYLIST_NAME

    # ------------------------------------------------------------------ input
    def audio(self, packet: AudioPacket) -> None:
        if self._epoch is None:
            self._epoch = self._now() - timedelta(seconds=packet.pts / self.rate)
        if self._audio and packet.pts + packet.duration - self._part_start > self.part_samples:
            self._finish_part()
        if not self._audio:
            self._part_start = packet.pts
            if not self._seg_parts:
                self._seg_start = packet.pts
        self._audio.append(packet)

    def id3(self, tag: Id3Packet) -> None:
        self._id3.append(tag)
        del self._id3[:-16]  # bounded: tags only pile up before the first audio

    def close(self, end_of_stream: bool) -> None:
        """Write what is buffered; with ``end_of_stream`` end the playlist (ENDLIST)."""
        if self._audio:
            self._finish_part(last=True)
        if self._seg_parts:
            self._finish_segment()
        self.playlist.ended = end_of_stream
        if end_of_stream:
            self.playlist.preload_hint = None
        self._write_playlist()

    # ------------------------------------------------------------------ parts and segments
    def _finish_part(self, *, last: bool = False) -> None:
        end = self._audio[-1].pts + self._audio[-1].duration
        data = self._counters.rewrite(
            mux_part(self._audio, self._id3, extradata=self.extradata, bit_rate=self.bit_rate)
        )
        index = len(self._seg_parts)
        uri = part_uri(self._msn, index)
        self._write(self.directory / uri, data)
        if self._epoch is None:  # an invariant of this class
            raise RuntimeError("internal: self._epoch not set")
        start = self._epoch + timedelta(seconds=self._seg_start / self.rate)
        duration = (end - self._part_start) / self.rate
        self.playlist.add_part(Part(uri, duration), segment_start=start)
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
        self._write(self.directory / uri, b"".join(self._seg_parts))
        if self._epoch is None:  # an invariant of this class
            raise RuntimeError("internal: self._epoch not set")
        duration = sum(p.duration for p in self.playlist.open_parts)
        start = self._epoch + timedelta(seconds=self._seg_start / self.rate)
        self._retired.extend(self.playlist.add(Segment(uri, duration, start, self._msn)))
        self._seg_parts = []
        self._msn += 1
        self._delete_old()

    def _delete_old(self) -> None:
        if self._keep_retired is None:
            return
        while len(self._retired) > self._keep_retired:
            old = self._retired.pop(0)
            for name in [old.uri, *(p.uri for p in old.parts)]:
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / name).unlink()

    def _write_playlist(self) -> None:
        self._write(self.playlist_path, self.playlist.render().encode())
        if self._on_change is not None:
            self._on_change()

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name("." + path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        self.bytes_written += len(data)
