"""Helpers for the embedded room tests: a real server on a free loopback port, audio analysis."""

from __future__ import annotations

import asyncio
import contextlib
import time
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from mixer_ext.connectors.base import RoomEvent
from mixer_ext.connectors.embedded import RoomClient
from mixer_ext.core.frames import EncodedSource
from mixer_ext.roomserver.server import RoomServer
from mixer_ext.roomserver.tokens import mint_token
from mixer_ext.settings import Settings
from mixer_ext.testing.spectrum import peak_hz, rms

SECRET = "test-secret-0123456789abcdef0123456789"
#: MIXER_ROOM_ADMIN_TOKEN of the test servers (pass room_admin_token=None for none)
ADMIN = "admin-token-0123456789abcdef0123456789"
SAMPLE_RATE = 48_000


def settings(**overrides: Any) -> Settings:
    return Settings(**{"room_secret": SECRET, "room_admin_token": ADMIN, **overrides})


def bearer(value: str) -> dict[str, str]:
    """The ``Authorization`` header carrying ``value`` (a room token or the admin token)."""
    return {"Authorization": f"Bearer {value}"}


@contextlib.asynccontextmanager
async def room_server(**overrides: Any) -> AsyncIterator[RoomServer]:
    """A started ``RoomServer`` on 127.0.0.1 and a free port; stopped afterwards."""
    server = RoomServer(settings(), "127.0.0.1", 0, **overrides)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def token(room: str, identity: str, ttl: float = 600, role: str = "participant") -> str:
    return mint_token(SECRET, room, identity, ttl, role)


def client(server: RoomServer, room: str, identity: str, **kwargs: Any) -> RoomClient:
    return RoomClient(
        server.url, room, identity, kwargs.pop("tok", None) or token(room, identity), **kwargs
    )


async def next_event(
    events: AsyncIterator[RoomEvent], kind: type, within: float = 15.0, **match: Any
) -> Any:
    """The next event of type ``kind`` whose attributes equal ``match`` (others are skipped)."""
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {kind.__name__} {match} within {within} s")
        event = await asyncio.wait_for(anext(events), left)
        if isinstance(event, kind) and all(getattr(event, k) == v for k, v in match.items()):
            return event


def decode_feed(source: EncodedSource, on_pcm: Callable[[np.ndarray], None]) -> None:
    """Decode a tapped track's Opus payloads as they arrive; ``on_pcm(mono int16)`` each.

    What the mixer's connectors hand out (``TrackSubscribed.source``) carries encoded
    payloads, not frames: tests listen to it through libopus, as the mixer does.
    """
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate = SAMPLE_RATE
    decoder.layout = "stereo"
    decoder.format = "s16"

    def sink(codec: Any, seq: int, timestamp: int, payload: bytes) -> None:
        for frame in decoder.decode(av.Packet(payload)):
            on_pcm(frame.to_ndarray().reshape(-1, 2).mean(axis=1))

    source.connect(sink)


async def record(track: MediaStreamTrack | EncodedSource, seconds: float) -> np.ndarray:
    """Mono float samples (-1..1) received from ``track`` during ``seconds`` of wall time.

    ``track`` may be a tapped track's ``EncodedSource`` (the mixer's connectors).
    """
    chunks: list[np.ndarray] = []
    if not isinstance(track, MediaStreamTrack):
        decode_feed(track, lambda pcm: chunks.append(pcm / 32768.0))
        await asyncio.sleep(seconds)
        track.connect(lambda *_: None)
        return np.concatenate(chunks) if chunks else np.zeros(0)
    deadline = time.monotonic() + seconds
    with contextlib.suppress(TimeoutError, MediaStreamError):
        while (left := deadline - time.monotonic()) > 0:
            frame = await asyncio.wait_for(track.recv(), left)
            assert isinstance(frame, av.AudioFrame)
            assert frame.sample_rate == SAMPLE_RATE
            data = frame.to_ndarray().astype(np.float64).reshape(-1, len(frame.layout.channels))
            chunks.append(data.mean(axis=1) / 32768.0)
    return np.concatenate(chunks) if chunks else np.zeros(0)


def spectrum_peak(samples: np.ndarray) -> tuple[float, float]:
    """(frequency in Hz above 50 Hz, RMS level) of the strongest component of ``samples``."""
    assert len(samples) >= SAMPLE_RATE // 10, f"only {len(samples)} samples received"
    return peak_hz(samples, SAMPLE_RATE, above=50), rms(samples)


def write_tone_wav(path: Path, hz: float, seconds: float, rate: int = 44_100) -> None:
    """A mono 16-bit WAV of a sine at 0.4 of full scale (a fake microphone, a talker file)."""
    t = np.arange(int(rate * seconds)) / rate
    pcm = (0.4 * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
