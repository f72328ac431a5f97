"""Read an HLS output the way a player does: playlist, segments, audio, ID3 payloads.

Used by the end-to-end tests: the audio is decoded from the MPEG-TS segments
the playlist lists (in order), and every timed-ID3 packet is parsed back
into a ``MetadataPayload`` with its presentation time in seconds (an app's payload,
its ``TXXX`` described ``app``, into ``app_payloads`` as its string).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import av
import numpy as np
import numpy.typing as npt

from mixer_ext.core.payload import APP_SOURCE, MetadataPayload
from mixer_ext.outputs.carriers import parse_id3_txxx

T = TypeVar("T")


@dataclass
class HlsRead:
    playlist: str
    segments: list[str]
    #: float32 samples in -1..1, shape (n, channels)
    audio: npt.NDArray[np.float32]
    sample_rate: int
    audio_start: float
    codec: str
    bit_rate: int | None
    #: (presentation time in seconds, payload)
    payloads: list[tuple[float, MetadataPayload]]
    #: (presentation time in seconds, an app's string): POST .../TimedMetadata
    app_payloads: list[tuple[float, str]]

    @property
    def ended(self) -> bool:
        return "#EXT-X-ENDLIST" in self.playlist

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


def playlist_segments(playlist: str) -> list[str]:
    return [ln.strip() for ln in playlist.splitlines() if ln.strip() and not ln.startswith("#")]


def read_hls(directory: Path, playlist_name: str = "index.m3u8") -> HlsRead:
    playlist = (directory / playlist_name).read_text()
    segments = playlist_segments(playlist)
    blob = b"".join((directory / s).read_bytes() for s in segments)
    return read_ts(blob, playlist=playlist, segments=segments)


def read_ts(blob: bytes, *, playlist: str = "", segments: list[str] | None = None) -> HlsRead:
    chunks: list[npt.NDArray[np.float32]] = []
    payloads: list[tuple[float, MetadataPayload]] = []
    app_payloads: list[tuple[float, str]] = []
    audio_start: float | None = None
    with av.open(io.BytesIO(blob), format="mpegts") as container:
        audio = container.streams.audio[0]
        codec = audio.codec_context.name
        bit_rate = audio.codec_context.bit_rate or None
        rate = audio.codec_context.sample_rate
        data = [s for s in container.streams if s.type == "data"]
        for packet in container.demux(audio, *data):
            if packet.stream.type == "data":
                if packet.size == 0 or packet.pts is None:
                    continue
                for desc, value in parse_id3_txxx(bytes(packet)):
                    t = float(packet.pts * packet.time_base)
                    if desc == APP_SOURCE:
                        app_payloads.append((t, value))
                    else:
                        payloads.append((t, MetadataPayload.from_json(value)))
                continue
            for frame in packet.decode():
                if audio_start is None and frame.pts is not None:
                    audio_start = float(frame.pts * frame.time_base)
                arr = frame.to_ndarray()
                if frame.format.is_planar:
                    arr = arr.T
                else:
                    arr = arr.reshape(-1, len(frame.layout.channels))
                chunks.append(arr.astype(np.float32))
    pcm = np.concatenate(chunks) if chunks else np.zeros((0, 2), np.float32)
    return HlsRead(
        playlist=playlist,
        segments=segments or [],
        audio=pcm,
        sample_rate=rate,
        audio_start=audio_start or 0.0,
        codec=codec,
        bit_rate=bit_rate,
        payloads=payloads,
        app_payloads=app_payloads,
    )


def runs_where(values: Sequence[T], pred: Callable[[T], bool]) -> list[tuple[int, int]]:
    """(start, length) of each run of consecutive items for which ``pred`` holds."""
    out: list[tuple[int, int]] = []
    start: int | None = None
    for i, v in enumerate(values):
        if pred(v):
            start = i if start is None else start
        elif start is not None:
            out.append((start, i - start))
            start = None
    if start is not None:
        out.append((start, len(values) - start))
    return out
