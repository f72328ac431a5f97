"""Shared by the LL-HLS tests: real AAC from PyAV's encoder, a minimal ID3 tag, a TS reader."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np

from mixer_ext.hls.tspart import AudioPacket

RATE = 48000
FRAMES_PER_PART = 9


def id3_tag(text: str) -> bytes:
    """A minimal ID3v2.4 tag with one TXXX frame (enough for the demuxer to carry)."""

    def syncsafe(n: int) -> bytes:
        return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])

    body = b"\x03" + b"\x00" + text.encode() + b"\x00"
    frame = b"TXXX" + syncsafe(len(body)) + b"\x00\x00" + body
    return b"ID3\x04\x00\x00" + syncsafe(len(frame)) + frame


def encode_tone() -> tuple[list[AudioPacket], bytes, int]:
    """2 s of a 440 Hz tone as AAC packets, with the encoder's extradata and bit rate."""
    enc = av.CodecContext.create("aac", "w")
    enc.sample_rate, enc.layout, enc.format = RATE, "stereo", "fltp"  # type: ignore[attr-defined]
    enc.bit_rate = 128000
    enc.time_base = Fraction(1, RATE)
    enc.open()
    packets: list[AudioPacket] = []
    t = np.arange(RATE * 2) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for i in range(0, len(tone), 1024):
        frame = av.AudioFrame.from_ndarray(np.stack([tone[i : i + 1024]] * 2), "fltp", "stereo")
        frame.sample_rate, frame.pts = RATE, i
        for p in enc.encode(frame):  # type: ignore[attr-defined]
            packets.append(AudioPacket(bytes(p), int(p.pts), int(p.duration or 1024)))
    return packets, bytes(enc.extradata or b""), 128000


def demux(data: bytes) -> tuple[int, list[bytes]]:
    frames, id3 = 0, []
    with av.open(io.BytesIO(data), format="mpegts") as c:
        for packet in c.demux():
            if packet.stream.type == "data" and packet.size:
                id3.append(bytes(packet))
            elif packet.stream.type == "audio":
                frames += len(packet.decode())
    return frames, id3
