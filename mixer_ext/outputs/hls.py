"""HLS output: MPEG-TS segments carrying AAC and a ``timed_id3`` stream.

Layout: ``$MIXER_HLS_DIR/<name>/index.m3u8`` and ``seg-NNNNNN.ts`` beside it.

* Each segment is its own small MPEG-TS file muxed by PyAV (``mpegts``),
  holding the AAC packets of ``MIXER_HLS_SEGMENT_DURATION`` seconds (cut on
  the first AAC frame at or past the target) and one ID3v2.4 ``TXXX`` tag
  per metadata payload on the ``timed_id3`` stream (PMT stream_type 0x15),
  stamped with the payload's pts.  Each segment starts with PAT/PMT, so any
  segment can be played on its own.
* ``max_interleave_delta`` is 1 µs: the sparse ID3 stream must not hold the
  audio back in libavformat's interleaving queue.  ``avoid_negative_ts`` is
  off so every segment keeps the encoder's timestamps (the first packet is
  at -1024, the AAC priming), and timestamps run on across segments.
* The playlist (``playlist.HlsPlaylist``) is rewritten after each segment,
  atomically (``.index.m3u8.tmp`` + ``os.replace``).  Live playlists keep a
  sliding window of ``MIXER_HLS_LIST_SIZE`` segments; segments that left it
  are deleted once they are another window behind, so a player that read the
  previous playlist can still fetch them.  Event playlists keep everything.
* A normal end writes the last segment and ``#EXT-X-ENDLIST``.

Low latency (``MIXER_HLS_LOW_LATENCY``, on by default): the output writes
through ``llhls.writer.PartedStreamWriter`` instead: parts of whole AAC
frames no longer than ``MIXER_HLS_PART_TARGET`` (0.2 s -> 9 frames =
0.192 s), each ``part-MSN-I.ts`` muxed alone, segments ``seg-MSN.ts`` the
concatenation of a whole number of parts (the nearest to
``MIXER_HLS_SEGMENT_DURATION``: 2.0 s -> 10 parts = 1.92 s), and the
playlist rewritten after every part with ``EXT-X-PART``,
``EXT-X-PRELOAD-HINT`` and ``EXT-X-SERVER-CONTROL`` (blocking reload).
``on_change`` (set by whoever serves the directory, e.g. the HTTP
endpoint's ``HlsOrigin.notify_threadsafe``) is called after each rewrite,
on the output thread.  Plain HLS players still play the segments.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av

from mixer_ext.core.frames import SAMPLE_RATE, TIME_BASE
from mixer_ext.core.payload import MetadataPayload
from mixer_ext.encode.encoder import AacParams, EncodedPacket
from mixer_ext.llhls.tspart import AudioPacket, Id3Packet
from mixer_ext.llhls.writer import PartedStreamWriter
from mixer_ext.outputs.base import Output, OutputError
from mixer_ext.outputs.carriers import id3_txxx
from mixer_ext.outputs.playlist import HlsPlaylist, Segment
from mixer_ext.settings import HlsPlaylistType, Settings

log = logging.getLogger(__name__)


class _FrameSizeNoise(logging.Filter):
    """Drop libavformat's "frame size not set" warning for our pre-encoded AAC stream.

    Our TS streams are declared from the encoder's parameters without an
    opened codec, so every segment would log it; it is harmless (AAC frames
    are always 1024 samples).  Only that one message is dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "frame size not set" not in record.getMessage()


logging.getLogger("libav.mpegts").addFilter(_FrameSizeNoise())

PLAYLIST_NAME = "index.m3u8"
_SEGMENT_RE = re.compile(r"^\.?(seg-\d{6,}|part-\d{6,}-\d{1,4})\.ts(\.tmp)?$")
#: libavformat options for every TS we write (segments and .ts recordings)
TS_OPTIONS = {"max_interleave_delta": "1", "avoid_negative_ts": "disabled"}


class TsWriter:
    """One MPEG-TS container with an AAC stream and a ``timed_id3`` stream."""

    def __init__(
        self, target: str | Path, params: AacParams, *, flush_packets: bool = False
    ) -> None:
        # flush_packets: write every packet through at once instead of in 256 KB chunks
        # (~20 s of audio), for a long recording that must be readable after a crash.
        options = {**TS_OPTIONS, "flush_packets": "1"} if flush_packets else TS_OPTIONS
        self.container: Any = av.open(str(target), "w", format="mpegts", options=options)
        try:
            self.audio = self.container.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
            self.audio.codec_context.extradata = params.extradata
            self.audio.codec_context.bit_rate = params.bit_rate
            self.audio.time_base = TIME_BASE
            self.id3 = self.container.add_data_stream("timed_id3")
            self.id3.time_base = TIME_BASE
        except BaseException:
            self.container.close()
            raise

    def audio_packet(self, packet: EncodedPacket) -> None:
        self.container.mux(packet.to_av(self.audio))

    def metadata(self, payload: MetadataPayload) -> None:
        packet = av.Packet(id3_txxx(payload.to_json()))
        packet.pts = packet.dts = payload.pts
        packet.time_base = TIME_BASE
        packet.stream = self.id3
        self.container.mux(packet)

    def close(self) -> None:
        self.container.close()


class HlsOutput(Output):
    kind = "hls"

    def __init__(self, name: str, params: AacParams, settings: Settings) -> None:
        super().__init__(f"hls:{name}", params)
        self.directory = Path(settings.hls_dir) / name
        self.segment_samples = round(settings.hls_segment_duration * SAMPLE_RATE)
        live = settings.hls_playlist_type is HlsPlaylistType.LIVE
        self.playlist = HlsPlaylist(
            settings.hls_segment_duration, settings.hls_list_size if live else None
        )
        self._delete_after = settings.hls_list_size if live else None
        self._retired: list[Segment] = []
        self._writer: TsWriter | None = None
        self._seg_path: Path | None = None
        self._seg_start = 0
        self._seg_end = 0
        self._sequence = 0
        self._pending_meta: list[MetadataPayload] = []
        #: wall-clock time (UTC) of pts 0, fixed by the first packet
        self._epoch: datetime | None = None
        self._low_latency = settings.hls_low_latency
        self._part_target = settings.hls_part_target
        self._segment_duration = settings.hls_segment_duration
        self._window = settings.hls_list_size if live else None
        self._ll: PartedStreamWriter | None = None
        self._ll_bytes = 0
        #: called after every playlist rewrite (output thread), e.g. an origin's notify
        self.on_change: Callable[[], None] | None = None

    @property
    def playlist_path(self) -> Path:
        return self.directory / PLAYLIST_NAME

    @property
    def low_latency(self) -> bool:
        return self._low_latency

    def first_segment_written(self) -> bool:
        if self._ll is not None:
            return bool(self._ll.playlist.segments)
        return bool(self.playlist.segments)

    # ------------------------------------------------------------------ hooks
    def _open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # Leftovers of an earlier run would be listed by nobody but confuse everybody.
            for old in self.directory.iterdir():
                if _SEGMENT_RE.match(old.name) or old.name in (
                    PLAYLIST_NAME,
                    ".index.m3u8.tmp",
                ):
                    old.unlink()
            probe = self.directory / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise OutputError(
                f"HLS directory {self.directory} is not writable: "
                f"{exc.strerror or type(exc).__name__}"
            ) from None
        if self._low_latency:
            self._ll = PartedStreamWriter(
                self.directory,
                extradata=self.params.extradata,
                bit_rate=self.params.bit_rate,
                part_target=self._part_target,
                segment_duration=self._segment_duration,
                window=self._window,
                sample_rate=SAMPLE_RATE,
                on_change=self._changed,
            )

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _ll_call(self, fn: Callable[[], None]) -> None:
        if self._ll is None:  # an invariant of this class
            raise RuntimeError("internal: self._ll not set")
        try:
            fn()
        except OSError as exc:
            raise OutputError(
                f"cannot write {_written_path(exc, self.directory)}: {_reason(exc)}"
            ) from None
        finally:
            self._count_bytes(self._ll.bytes_written - self._ll_bytes)
            self._ll_bytes = self._ll.bytes_written

    def _audio(self, packet: EncodedPacket) -> None:
        if self._ll is not None:
            ll = self._ll
            audio = AudioPacket(packet.data, packet.pts, packet.duration)
            self._ll_call(lambda: ll.audio(audio))
            return
        try:
            self._audio_packet(packet)
        except OSError as exc:
            raise OutputError(f"cannot write {self._seg_path}: {_reason(exc)}") from None

    def _audio_packet(self, packet: EncodedPacket) -> None:
        if self._epoch is None:
            self._epoch = datetime.now(UTC) - timedelta(seconds=packet.pts / SAMPLE_RATE)
        if self._writer is not None and packet.pts - self._seg_start >= self.segment_samples:
            self._finish_segment(packet.pts)
        if self._writer is None:
            self._start_segment(packet.pts)
        if self._writer is None:  # an invariant of this class
            raise RuntimeError("internal: self._writer not set")
        self._writer.audio_packet(packet)
        self._seg_end = packet.pts + packet.duration

    def _metadata(self, payload: MetadataPayload) -> None:
        if self._ll is not None:
            self._ll.id3(Id3Packet(id3_txxx(payload.to_json()), payload.pts))
            return
        if self._writer is None:
            self._pending_meta.append(payload)
            del self._pending_meta[:-16]  # bounded: only before the first audio packet
            return
        try:
            self._writer.metadata(payload)
        except OSError as exc:
            raise OutputError(f"cannot write {self._seg_path}: {_reason(exc)}") from None

    def _close(self, end_of_stream: bool) -> None:
        if self._ll is not None:
            ll = self._ll
            self._ll_call(lambda: ll.close(end_of_stream))
            return
        if self._writer is not None:
            self._finish_segment(self._seg_end)
        self.playlist.ended = end_of_stream
        if self.playlist.segments or end_of_stream:
            self._write_playlist()

    def _abandon(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None

    # ------------------------------------------------------------------ segments
    def _start_segment(self, pts: int) -> None:
        self._sequence += 1
        self._seg_path = self.directory / f"seg-{self._sequence:06d}.ts"
        self._seg_start = pts
        try:
            self._writer = TsWriter(self._seg_path, self.params)
        except OSError as exc:
            raise OutputError(f"cannot write {self._seg_path}: {_reason(exc)}") from None
        if self._writer is None:  # an invariant of this class
            raise RuntimeError("internal: self._writer not set")
        for payload in self._pending_meta:
            self._writer.metadata(payload)
        self._pending_meta.clear()

    def _finish_segment(self, end_pts: int) -> None:
        writer, path = self._writer, self._seg_path
        self._writer = None
        if writer is None or path is None or self._epoch is None:  # an invariant of this class
            raise RuntimeError("internal: writer, path, self._epoch not set")
        try:
            writer.close()
            size = path.stat().st_size
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
        self._count_bytes(size)
        segment = Segment(
            uri=path.name,
            duration=(end_pts - self._seg_start) / SAMPLE_RATE,
            start_time=self._epoch + timedelta(seconds=self._seg_start / SAMPLE_RATE),
            sequence=self._sequence,
        )
        self._retired.extend(self.playlist.add(segment))
        self._write_playlist()
        self._delete_old_segments()

    def _write_playlist(self) -> None:
        text = self.playlist.render().encode()
        tmp = self.directory / ".index.m3u8.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(text)
            os.replace(tmp, self.playlist_path)
        except OSError as exc:
            raise OutputError(f"cannot write {self.playlist_path}: {_reason(exc)}") from None
        self._count_bytes(len(text))

    def _delete_old_segments(self) -> None:
        if self._delete_after is None:
            return
        while len(self._retired) > self._delete_after:
            old = self._retired.pop(0)
            with contextlib.suppress(FileNotFoundError):
                (self.directory / old.uri).unlink()


def _written_path(exc: OSError, directory: Path) -> Path:
    """The file a failed write was for (the real name, not its ``.NAME.tmp`` temp file)."""
    if not isinstance(exc.filename, str | os.PathLike):
        return directory
    path = Path(exc.filename)
    name = path.name
    if name.startswith(".") and name.endswith(".tmp"):
        name = name[1:-4]
    return path.with_name(name)


def _reason(exc: OSError) -> str:
    """``strerror`` ("No space left on device") without the path FFmpeg/Python repeat."""
    return exc.strerror or str(exc).splitlines()[0] or type(exc).__name__
