"""Recording output (``file:PATH``): the encoded AAC written to a file, by extension.

* ``.m4a`` / ``.mp4``: fragmented MP4 (an empty ``moov`` first, then a ``moof`` +
  ``mdat`` fragment about every second, ``FRAGMENTED_MP4``): nothing is rewritten at
  close, so a 24 h recording is not one long index written at the very end, and a
  process killed at any moment (SIGKILL, OOM) leaves a file that plays up to its last
  complete fragment.  The encoder's 1024-sample priming goes into an edit list, so the
  file's duration is the mix's duration.
* ``.ts``: one MPEG-TS with the AAC and the ``timed_id3`` stream, exactly as
  an HLS segment but continuous: it keeps the metadata in-band and stays
  readable even if the process is killed without a chance to finish.

The file is written to ``PATH`` directly (its directory is created); an
existing file is replaced, except when the run resumes after a crash
(``keep_existing``): then the earlier process's recording stays as it is and
this one goes to the first free ``STEM-N.EXT`` beside it (``rec-2.m4a``).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import av

from mixer_ext.core.frames import SAMPLE_RATE, TIME_BASE
from mixer_ext.core.payload import TimedPayload
from mixer_ext.encode.encoder import AacParams, EncodedPacket
from mixer_ext.hls.tspart import PART_OPTIONS
from mixer_ext.outputs.base import Output, OutputError
from mixer_ext.outputs.carriers import id3_for

log = logging.getLogger(__name__)

#: the mp4 muxer's options: fragments of ~1 s, each self-contained (no whole-file index)
FRAGMENTED_MP4 = {
    "movflags": "empty_moov+default_base_moof+frag_keyframe",
    "frag_duration": "1000000",
    "flush_packets": "1",  # each fragment reaches the file when it is complete
}


class TsWriter:
    """One MPEG-TS container with an AAC stream and a ``timed_id3`` stream.

    The options are those of every HLS segment (``tspart.PART_OPTIONS``): the
    sparse ID3 stream never holds audio back, timestamps are kept as they are.
    """

    def __init__(
        self, target: str | Path, params: AacParams, *, flush_packets: bool = False
    ) -> None:
        # flush_packets: write every packet through at once instead of in 256 KB chunks
        # (~20 s of audio), for a long recording that must be readable after a crash.
        options = {**PART_OPTIONS, "flush_packets": "1"} if flush_packets else PART_OPTIONS
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

    def metadata(self, payload: TimedPayload) -> None:
        packet = av.Packet(id3_for(payload))
        packet.pts = packet.dts = payload.pts
        packet.time_base = TIME_BASE
        packet.stream = self.id3
        self.container.mux(packet)

    def close(self) -> None:
        self.container.close()


class FileOutput(Output):
    kind = "file"

    def __init__(
        self, path: Path, container: str, params: AacParams, *, keep_existing: bool = False
    ) -> None:
        super().__init__(f"file:{path}", params)
        self.path = Path(path)
        self.keep_existing = keep_existing
        self.container_format = container
        self._ts: TsWriter | None = None
        self._mp4: Any = None
        self._mp4_audio: Any = None
        self._last_size = 0
        self._packets = 0

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.keep_existing:
                self.path = _free_name(self.path)
            if self.container_format == "mpegts":
                self._ts = TsWriter(self.path, self.params, flush_packets=True)
            else:
                self._mp4 = av.open(str(self.path), "w", format="mp4", options=FRAGMENTED_MP4)
                stream = self._mp4.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
                stream.codec_context.extradata = self.params.extradata
                stream.codec_context.bit_rate = self.params.bit_rate
                stream.time_base = TIME_BASE
                self._mp4_audio = stream
        except OSError as exc:
            raise OutputError(
                f"cannot create recording {self.path}: {exc.strerror or exc}"
            ) from None

    def _audio(self, packet: EncodedPacket) -> None:
        if self._ts is not None:
            self._ts.audio_packet(packet)
        else:
            self._mp4.mux(packet.to_av(self._mp4_audio))
        self._packets += 1
        if self._packets % 50 == 0:  # about once a second
            self._account()

    def _metadata(self, payload: TimedPayload) -> None:
        # mp4 has no stream that players read timed ID3 from; .ts keeps it in-band
        if self._ts is not None:
            self._ts.metadata(payload)

    def _close(self, end_of_stream: bool) -> None:
        if self._ts is not None:
            self._ts.close()
            self._ts = None
        elif self._mp4 is not None:
            self._mp4.close()
            self._mp4 = None
        self._account()

    def _abandon(self) -> None:
        with contextlib.suppress(Exception):
            if self._ts is not None:
                self._ts.close()
            elif self._mp4 is not None:
                self._mp4.close()
        self._ts = self._mp4 = None

    def _account(self) -> None:
        """Count the bytes the file grew by since the last look."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return
        if size > self._last_size:
            self._count_bytes(size - self._last_size)
            self._last_size = size


def _free_name(path: Path) -> Path:
    """``path`` if it holds nothing yet, else the first ``STEM-N.EXT`` (N >= 2) that doesn't."""
    candidate, n = path, 1
    while candidate.exists() and candidate.stat().st_size > 0:
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    if candidate != path:
        log.info("recording %s exists (an earlier run's): this run records to %s", path, candidate)
    return candidate
