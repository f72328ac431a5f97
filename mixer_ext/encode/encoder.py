"""The encoder stage: the one AAC encoder of a run, with no I/O.

Mixed frames (int16 stereo, 48 kHz, pts in samples) go in; encoded AAC
packets come out as plain ``EncodedPacket`` values (bytes + timestamps in
samples) so that every output can build its own ``av.Packet`` for its own
container: a PyAV packet belongs to one stream of one container, and the
outputs must never share one (see ``EncodedPacket.to_av``).

The AAC encoder primes 1024 samples: its first packet has pts -1024.  Stream
time therefore equals mix time (a decoder drops nothing and places sample
``n`` of the mix at pts ``n``), which keeps the metadata (stamped with mix
pts) in sync with the audio in every container.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import av

from mixer_ext.context import MAX_AUDIO_BITRATE, MIN_AUDIO_BITRATE
from mixer_ext.core.frames import CHANNELS, SAMPLE_RATE, TIME_BASE, MixedFrame
from mixer_ext.errors import ConfigError

#: samples per AAC-LC frame
AAC_FRAME_SAMPLES = 1024


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One AAC access unit; ``pts``/``dts``/``duration`` are samples at 48 kHz."""

    data: bytes
    pts: int
    dts: int
    duration: int
    #: the timeline jumped before this packet (the clock re-anchored, or packets
    #: before it were dropped): outputs that can mark it do (HLS: EXT-X-DISCONTINUITY)
    discontinuity: bool = False

    def to_av(self, stream: Any, offset: int = 0) -> Any:
        """A fresh ``av.Packet`` for ``stream``, shifted by ``-offset`` samples."""
        packet = av.Packet(self.data)
        packet.pts = self.pts - offset
        packet.dts = self.dts - offset
        packet.duration = self.duration
        packet.time_base = TIME_BASE
        packet.stream = stream
        return packet


@dataclass(frozen=True, slots=True)
class AacParams:
    """What a muxer needs to declare the AAC stream without encoding anything."""

    extradata: bytes
    bit_rate: int


def check_bitrate(bitrate_kbps: int) -> int:
    """Return ``bitrate_kbps`` or raise ConfigError (one line) when out of 32..320."""
    if not MIN_AUDIO_BITRATE <= bitrate_kbps <= MAX_AUDIO_BITRATE:
        raise ConfigError(
            f"audio bitrate {bitrate_kbps} kbps is outside {MIN_AUDIO_BITRATE}-"
            f"{MAX_AUDIO_BITRATE} kbps"
        )
    return bitrate_kbps


class AacEncoder:
    """FFmpeg's AAC-LC encoder, 48 kHz stereo, constant target bitrate.

    Not thread-safe: owned by the encoder thread of ``OutputPipeline``.
    """

    def __init__(self, bitrate_kbps: int) -> None:
        check_bitrate(bitrate_kbps)
        ctx = av.CodecContext.create("aac", "w")
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = "stereo"
        ctx.format = "fltp"
        ctx.bit_rate = bitrate_kbps * 1000
        ctx.time_base = TIME_BASE
        ctx.open()
        self._ctx = ctx
        self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=SAMPLE_RATE)
        self.params = AacParams(extradata=bytes(ctx.extradata or b""), bit_rate=ctx.bit_rate)
        self._flushed = False
        self._discontinuity = False

    def encode(self, frame: MixedFrame) -> list[EncodedPacket]:
        """Encode one mixed frame; returns the packets that became ready (often none)."""
        if frame.samples.shape[1:] != (CHANNELS,):
            raise ValueError(f"mixed frame has shape {frame.samples.shape}, want (n, 2)")
        out: list[EncodedPacket] = []
        self._discontinuity |= frame.discontinuity
        for converted in self._resampler.resample(frame.to_av_frame()):
            converted.pts = frame.pts if converted.pts is None else converted.pts
            out.extend(self._wrap(self._ctx.encode(converted)))
        if out and self._discontinuity:  # on the first packet out after the jump
            out[0] = replace(out[0], discontinuity=True)
            self._discontinuity = False
        return out

    def flush(self) -> list[EncodedPacket]:
        """Drain the encoder (``encode(None)``); call once, at the end of the stream."""
        if self._flushed:
            return []
        self._flushed = True
        return self._wrap(self._ctx.encode(None))

    @staticmethod
    def _wrap(packets: list[Any]) -> list[EncodedPacket]:
        out = []
        for p in packets:
            if p.pts is None:
                continue
            dts = p.dts if p.dts is not None else p.pts
            out.append(EncodedPacket(bytes(p), int(p.pts), int(dts), int(p.duration or 1024)))
        return out
