"""Shared by the LL-HLS tests: real AAC from PyAV's encoder, a minimal ID3 tag, a TS reader."""

from __future__ import annotations

import io
import math
import re
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np

from mixer_ext.hls.origin import HlsOrigin
from mixer_ext.hls.tspart import AudioPacket, starts_with_pat_pmt
from mixer_ext.hls.writer import PartedStreamWriter

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


class LiveTone:
    """Encodes a tone in real time (start + n x 1024 samples) into a PartedStreamWriter."""

    def __init__(
        self,
        directory: Path,
        origin: HlsOrigin,
        name: str,
        *,
        part_target: float = 0.2,
        part_hold_back: float | None = None,
    ) -> None:
        self.enc: Any = av.CodecContext.create("aac", "w")
        self.enc.sample_rate, self.enc.layout, self.enc.format = RATE, "stereo", "fltp"
        self.enc.bit_rate, self.enc.time_base = 128000, Fraction(1, RATE)
        self.enc.open()
        self.writer = PartedStreamWriter(
            directory,
            extradata=bytes(self.enc.extradata or b""),
            bit_rate=128000,
            part_target=part_target,
            part_hold_back=part_hold_back,
            on_change=lambda: origin.notify_threadsafe(name),
        )
        directory.mkdir(parents=True, exist_ok=True)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="live-tone", daemon=True)

    def _run(self) -> None:
        start, n = time.monotonic(), 0
        while not self.stop.is_set():
            t = (np.arange(1024) + n * 1024) / RATE
            x = (0.2 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([x, x]), "fltp", "stereo")
            frame.sample_rate, frame.pts = RATE, n * 1024
            for p in self.enc.encode(frame):
                self.writer.audio(AudioPacket(bytes(p), int(p.pts), int(p.duration or 1024)))
            n += 1
            delay = start + n * 1024 / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self.writer.close(end_of_stream=True)


def decoded_samples(data: bytes) -> int:
    with av.open(io.BytesIO(data), format="mpegts") as c:
        return sum(f.samples for f in c.decode(audio=0))


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str], bytes]:
    async with session.get(url) as r:
        return r.status, dict(r.headers), await r.read()


async def check_blocking_reload(session: aiohttp.ClientSession, base: str) -> None:
    """Blocking reloads for the hinted part return once it exists (5 in a row, each
    within a part + ``MARGIN``), and the hinted part itself is held then served whole."""
    # Blocking reload: ask for the hinted (not yet written) part, five times in a row.
    waits = []
    for _ in range(5):
        _s, _h, body = await get(session, base + "index.m3u8")
        hint = _HINT.search(body.decode())
        assert hint, body.decode()
        msn, part = int(hint[1]), int(hint[2])
        t0 = time.monotonic()
        status, headers, body = await get(
            session, f"{base}index.m3u8?_HLS_msn={msn}&_HLS_part={part}"
        )
        waits.append(time.monotonic() - t0)
        assert status == 200, body
        assert f"part-{msn:06d}-{part}.ts" in body.decode(), body.decode()
    assert max(waits) < 0.192 + MARGIN, f"blocking reloads took {waits}"
    assert sum(waits) / len(waits) > 0.02, f"did not block at all: {waits}"

    # The hinted part, requested before it exists: held, then served whole.
    _s, _h, body = await get(session, base + "index.m3u8")
    hint = _HINT.search(body.decode())
    assert hint
    t0 = time.monotonic()
    status, headers, data = await get(session, base + f"part-{hint[1]}-{hint[2]}.ts")
    took = time.monotonic() - t0
    assert status == 200 and headers["Content-Type"] == "video/mp2t"
    assert "immutable" in headers["Cache-Control"]
    assert took < 0.192 + MARGIN, took
    assert starts_with_pat_pmt(data)
    assert decoded_samples(data) in range(8 * 1024, 9 * 1024 + 1)  # one part


#: a part is 9 AAC frames = 0.192 s; what a blocking reload may take beyond that
#: (encoder queue, output thread, a loaded 2-core machine)
MARGIN = 0.35


_HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-(\d+)-(\d+)\.ts"')
