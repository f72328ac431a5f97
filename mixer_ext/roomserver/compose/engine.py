"""The offline mix: a room's recordings decoded, placed by their offsets, summed, limited, encoded.

Runs in a worker process (``workers.py``), never in the room server's loop.  Per block of
``BLOCK_SAMPLES`` (4 s) of the composition's timeline, every source whose recording covers
it adds its decoded audio at its place (its offset + the payload's own timestamp, so DTX
and mute gaps and a track's absence are silence), the sum goes through the live mix's own
``Limiter`` (``core/mixer.py``: identity below full scale, a look-ahead limiter above,
carried from block to block) and the block is encoded once.

Where the cost goes (1 h of speech-like audio from 10 talkers): decoding the payloads
that carry speech (a DTX payload of at most 3 bytes is silence and is not decoded, as in
the live ``Input``), and the one encode.  Sources are decoded as the channels they carry
(a mono talker costs a mono decode), and the composition is mono when every source is
(what a browser or a talker sends), stereo when any source is stereo: a mono mix
duplicated into two channels would only double the encoder's work.  The AAC encoder is
FFmpeg's with ``aac_coder=fast``, the Opus one libopus.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from mixer_ext.core.mixer import Limiter
from mixer_ext.roomserver.compose.spec import (
    SAMPLE_RATE,
    CompositionJob,
    Source,
    output_duration,
)
from mixer_ext.roomserver.recorder import opus_head

log = logging.getLogger(__name__)

BLOCK_SAMPLES = 4 * SAMPLE_RATE
#: an Opus payload this small is DTX / comfort noise: silence, not decoded
DTX_MAX_BYTES = 3
_TOC_STEREO = 0x04
_TIME_BASE = Fraction(1, SAMPLE_RATE)
_MS = Fraction(1, 1000)
#: bits per second per channel of the composition's audio
BITRATE = {"mp4": 64_000, "webm": 48_000}
_CODEC = {"mp4": ("aac", {"aac_coder": "fast"}), "webm": ("libopus", {})}
_MUXER = {"mp4": ("mp4", {"movflags": "+faststart"}), "webm": ("webm", {})}

FloatBlock = npt.NDArray[np.float32]


@dataclass(frozen=True)
class CompositionResult:
    duration: float
    size: int
    channels: int
    #: lowest gain the limiter applied (1.0: the sum never reached full scale)
    min_gain: float


class _Reader:
    """One source's packets in time order, decoded on demand into the blocks."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self._container: Any = av.open(str(source.path))
        stream = self._container.streams.audio[0]
        if stream.codec_context.name != "opus":
            raise ValueError(f"{source.path.name}: not an Opus recording")
        self._tb = stream.time_base
        self._packets = self._demux(stream)
        self._ahead: list[tuple[int, Any]] = []
        self.channels = 1
        # look ahead to the first payload that carries sound: its TOC says mono or stereo
        for start, packet in self._packets:
            self._ahead.append((start, packet))
            if packet.size > DTX_MAX_BYTES:
                self.channels = 2 if bytes(packet)[0] & _TOC_STEREO else 1
                break
        self._decoder: Any = av.CodecContext.create("opus", "r")
        self._decoder.extradata = opus_head(self.channels)
        self._decoder.sample_rate = SAMPLE_RATE
        self._decoder.layout = "stereo" if self.channels == 2 else "mono"
        self._carry: tuple[int, FloatBlock] | None = None

    def _demux(self, stream: Any) -> Iterator[tuple[int, Any]]:
        """``(sample on the room's timeline, av.Packet)`` in file order; stops at a cut end."""
        offset = self.source.offset
        scale = Fraction(self._tb or _MS) * SAMPLE_RATE  # Matroska: 1 ms = 48 samples
        whole = scale.denominator == 1
        step = int(scale)
        try:
            for packet in self._container.demux(stream):
                pts = packet.pts
                if pts is None or packet.size == 0:
                    continue
                yield offset + (pts * step if whole else int(pts * scale)), packet
        except (av.error.InvalidDataError, av.error.EOFError):
            return  # a truncated recording (a killed room server): what is there counts

    def _next(self) -> tuple[int, Any] | None:
        if self._ahead:
            return self._ahead.pop(0)
        return next(self._packets, None)

    def _decode(self, packet: Any) -> FloatBlock | None:
        try:
            frames = self._decoder.decode(packet)
        except av.error.InvalidDataError:
            return None  # a malformed payload: silence in its place
        if not frames:
            return None
        out: list[FloatBlock] = []
        for f in frames:
            n = f.samples
            # the planes as they are (fltp): cheaper than to_ndarray's stacking, per packet
            planes = [np.frombuffer(p, np.float32, n) for p in f.planes[: self.channels]]
            out.append(planes[0][:, None] if len(planes) == 1 else np.stack(planes, axis=1))
        return out[0] if len(out) == 1 else np.concatenate(out)

    def render(self, out: FloatBlock, start: int, end: int) -> None:
        """Add this source's audio for ``[start, end)`` of the room's timeline into ``out``."""
        if self._carry is not None:
            at, pcm = self._carry
            self._carry = None
            self._add(out, start, end, at, pcm)
        while True:
            item = self._next()
            if item is None:
                return
            at, packet = item
            if at >= end:
                self._ahead.insert(0, item)
                return
            if packet.size <= DTX_MAX_BYTES:
                continue
            decoded = self._decode(packet)
            if decoded is not None:
                self._add(out, start, end, at, decoded)

    def _add(self, out: FloatBlock, start: int, end: int, at: int, pcm: FloatBlock) -> None:
        if at + len(pcm) <= start:
            return  # before this block (trimmed away)
        if at < start:
            pcm, at = pcm[start - at :], start
        n = min(len(pcm), end - at)
        if n > 0:
            out[at - start : at - start + n] += pcm[:n]
        if n < len(pcm):
            self._carry = (at + max(n, 0), pcm[max(n, 0) :])

    def close(self) -> None:
        self._container.close()


def compose(
    job: CompositionJob, progress: Callable[[float], None] | None = None
) -> CompositionResult:
    """Mix ``job`` into ``job.output``; ``progress(fraction)`` after each block."""
    readers: list[_Reader] = []
    try:
        for source in job.sources:
            readers.append(_Reader(source))
        channels = max((r.channels for r in readers), default=1)
        return _mix(job, readers, channels, progress)
    finally:
        for r in readers:
            with contextlib.suppress(Exception):
                r.close()


def _mix(
    job: CompositionJob,
    readers: list[_Reader],
    channels: int,
    progress: Callable[[float], None] | None,
) -> CompositionResult:
    total = output_duration(job)
    layout = "stereo" if channels == 2 else "mono"
    fmt, mux_options = _MUXER[job.format]
    codec, codec_options = _CODEC[job.format]
    job.output.parent.mkdir(parents=True, exist_ok=True)
    # written under a temporary name and renamed when complete: a reader never sees half a
    # file, and a run killed with its server leaves no file a new run could collide with
    part = job.output.with_name(f".{job.output.name}.{os.getpid()}.part")
    limiter = Limiter(tick_samples=BLOCK_SAMPLES, channels=channels)
    done = 0
    with av.open(str(part), "w", format=fmt, options=mux_options) as container:
        stream: Any = container.add_stream(codec, rate=SAMPLE_RATE, layout=layout)
        stream.codec_context.bit_rate = BITRATE[job.format] * channels
        stream.codec_context.options = codec_options
        buf: FloatBlock = np.zeros((BLOCK_SAMPLES, channels), np.float32)
        for seg_start, seg_end in job.segments:
            at = seg_start
            while at < seg_end:
                end = min(at + BLOCK_SAMPLES, seg_end)
                n = end - at
                block = buf[:n]
                block.fill(0.0)
                for reader in readers:
                    if reader.source.end > at and reader.source.offset < end:
                        reader.render(block, at, end)
                mix = np.rint(block * 32768.0).astype(np.int32)
                pcm = limiter.process(mix)
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout=layout
                )
                frame.sample_rate = SAMPLE_RATE
                frame.pts = done
                frame.time_base = _TIME_BASE
                for packet in stream.encode(frame):
                    container.mux(packet)
                done += n
                at = end
                if progress is not None:
                    progress(done / total if total else 1.0)
        for packet in stream.encode(None):
            container.mux(packet)
    os.replace(part, job.output)
    return CompositionResult(
        duration=done / SAMPLE_RATE,
        size=job.output.stat().st_size,
        channels=channels,
        min_gain=limiter.min_gain,
    )
