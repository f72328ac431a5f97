"""HLS output: MPEG-TS segments carrying AAC and a ``timed_id3`` stream.

Layout: ``$MIXER_HLS_DIR/<name>/index.m3u8`` and ``seg-NNNNNN.ts`` beside it
(and, with LL-HLS, ``part-NNNNNN-I.ts``).  The stream is written by
``hls.writer.PartedStreamWriter`` in both modes (see there for segmenting,
discontinuities and resuming after a restart):

* every TS is muxed in memory by PyAV (``mpegts``, ``max_interleave_delta`` 1 µs
  so the sparse ID3 stream never holds audio back, ``avoid_negative_ts`` off so
  timestamps run on across segments from the AAC priming at -1024) and written
  with Python file I/O to a temp file, then renamed; one ID3v2.4 ``TXXX`` tag per
  metadata payload on the ``timed_id3`` stream (PMT stream_type 0x15), stamped
  with the payload's pts.  Each segment and part starts with PAT/PMT.
* the playlist is rewritten atomically (temp file + ``os.replace``).  Live
  playlists keep a sliding window of ``MIXER_HLS_LIST_SIZE`` segments; segments
  that left it are deleted once they are another window behind.  Event
  playlists keep everything.  A normal end writes ``#EXT-X-ENDLIST``.
* a packet flagged ``discontinuity`` (the clock re-anchored, packets were
  dropped upstream) or a pts gap ends the segment; the next one follows
  ``#EXT-X-DISCONTINUITY``, counted in
  ``mixer_output_discontinuities_total{kind="hls"}``.

Low latency (``MIXER_HLS_LOW_LATENCY``, on by default): parts of whole AAC
frames no longer than ``MIXER_HLS_PART_TARGET`` (0.2 s -> 9 frames = 0.192 s),
each ``part-MSN-I.ts`` muxed alone, segments ``seg-MSN.ts`` the concatenation
of a whole number of parts (the nearest to ``MIXER_HLS_SEGMENT_DURATION``:
2.0 s -> 10 parts = 1.92 s), and the playlist rewritten after every part with
``EXT-X-PART``, ``EXT-X-PRELOAD-HINT`` and ``EXT-X-SERVER-CONTROL`` (blocking
reload).  ``on_change`` (given at construction, by ``outputs/factory.py``: the
pipeline's fan-out to e.g. the HTTP endpoint's ``HlsOrigin.notify_threadsafe``) is
called after each rewrite, on the output thread.  Plain HLS players still play the
segments.  Without low latency, segments are cut on the first AAC frame at or past the
target.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from mixer_ext.core.frames import SAMPLE_RATE
from mixer_ext.core.payload import TimedPayload
from mixer_ext.encode.encoder import AacParams, EncodedPacket
from mixer_ext.hls.tspart import AudioPacket, Id3Packet
from mixer_ext.hls.writer import PLAYLIST_NAME, PartedStreamWriter
from mixer_ext.metrics import OUTPUT_DISCONTINUITIES
from mixer_ext.outputs.base import Output, OutputError
from mixer_ext.outputs.carriers import id3_for
from mixer_ext.settings import HlsPlaylistType, Settings

log = logging.getLogger(__name__)

__all__ = ["PLAYLIST_NAME", "HlsOutput"]


class HlsOutput(Output):
    kind = "hls"

    def __init__(
        self,
        name: str,
        params: AacParams,
        settings: Settings,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        """``on_change``: called after every playlist rewrite (output thread), e.g. an
        origin's notify; it must not block."""
        super().__init__(f"hls:{name}", params)
        self.directory = Path(settings.hls_dir) / name
        live = settings.hls_playlist_type is HlsPlaylistType.LIVE
        self._low_latency = settings.hls_low_latency
        self.writer = PartedStreamWriter(
            self.directory,
            extradata=params.extradata,
            bit_rate=params.bit_rate,
            part_target=settings.hls_part_target if self._low_latency else None,
            part_hold_back=settings.hls_part_hold_back,
            segment_duration=settings.hls_segment_duration,
            window=settings.hls_list_size if live else None,
            sample_rate=SAMPLE_RATE,
            on_change=on_change,
        )
        self._written = 0
        self._discontinuities = 0

    @property
    def playlist_path(self) -> Path:
        return self.directory / PLAYLIST_NAME

    @property
    def low_latency(self) -> bool:
        return self._low_latency

    @property
    def resumed(self) -> bool:
        """True when this run continues a playlist an earlier run left unfinished."""
        return self.writer.resumed

    def first_segment_written(self) -> bool:
        return bool(self.writer.playlist.segments)

    def status(self) -> dict[str, object]:
        out = super().status()
        out["discontinuities"] = self.writer.discontinuities
        return out

    # ------------------------------------------------------------------ hooks
    def _open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise OutputError(
                f"HLS directory {self.directory} is not writable: "
                f"{exc.strerror or type(exc).__name__}"
            ) from None
        self._call(self.writer.open)

    def _call(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except OSError as exc:
            raise OutputError(
                f"cannot write {_written_path(exc, self.directory)}: {_reason(exc)}"
            ) from None
        finally:
            self._count_bytes(self.writer.bytes_written - self._written)
            self._written = self.writer.bytes_written
            new = self.writer.discontinuities - self._discontinuities
            if new > 0:
                OUTPUT_DISCONTINUITIES.labels(self.kind).inc(new)
                self._discontinuities = self.writer.discontinuities

    def _audio(self, packet: EncodedPacket) -> None:
        audio = AudioPacket(packet.data, packet.pts, packet.duration)
        self._call(lambda: self.writer.audio(audio, discontinuity=packet.discontinuity))

    def _metadata(self, payload: TimedPayload) -> None:
        self.writer.id3(Id3Packet(id3_for(payload), payload.pts))

    def _close(self, end_of_stream: bool) -> None:
        self._call(lambda: self.writer.close(end_of_stream))


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
