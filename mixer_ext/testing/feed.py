"""Helpers for the output tests: a synthetic mix (sines) and payloads, fed like the clock does."""

from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path

import numpy as np

from mixer_ext.core.frames import SAMPLE_RATE, TICK_SAMPLES, TICKS_PER_PAYLOAD, MixedFrame
from mixer_ext.core.payload import MetadataPayload
from mixer_ext.encode.fanout import OutputPipeline

TONE_HZ = 440.0
AMPLITUDE = 8000


def sine_frame(tick: int, freq: float = TONE_HZ, amplitude: int = AMPLITUDE) -> MixedFrame:
    n = np.arange(tick * TICK_SAMPLES, (tick + 1) * TICK_SAMPLES)
    mono = (np.sin(2 * np.pi * freq * n / SAMPLE_RATE) * amplitude).astype(np.int16)
    return MixedFrame(pts=tick * TICK_SAMPLES, samples=np.stack([mono, mono], axis=1))


def payload_for(window: int) -> MetadataPayload:
    """Payload ``window`` (seq = window) describing ticks 25*window .. 25*window+24,
    stamped as the mixer stamps it: at the end of that window (issue 26)."""
    return MetadataPayload(
        seq=window,
        levels={"alice": (window * 37) % 32768, "bob": -1},
        pts=(window + 1) * TICKS_PER_PAYLOAD * TICK_SAMPLES,
    )


async def feed(
    pipeline: OutputPipeline,
    seconds: float,
    *,
    speed: float | None = None,
    first_tick: int = 0,
    rich: bool = False,
    wait_rtmp: bool = False,
) -> int:
    """Feed ``seconds`` of mix and its payloads, as the clock would; returns the next tick.

    ``speed`` None: as fast as the pipeline takes it (waiting whenever a queue is half
    full so nothing is dropped); else pace at ``speed`` x real time from a fixed start.
    """
    ticks = round(seconds * SAMPLE_RATE / TICK_SAMPLES)
    start = time.monotonic()
    for i in range(ticks):
        tick = first_tick + i
        pipeline.on_mix(rich_frame(tick) if rich else sine_frame(tick))
        if (tick + 1) % TICKS_PER_PAYLOAD == 0:
            pipeline.on_payload(payload_for(tick // TICKS_PER_PAYLOAD))
        if speed is None:
            while pipeline._queue.qsize() > 64 or any(  # noqa: ASYNC110 - polling a thread's queue
                o._queue.qsize() > 128 for o in pipeline.outputs if wait_rtmp or o.kind != "rtmp"
            ):
                await asyncio.sleep(0.005)
            if i % 10 == 0:
                await asyncio.sleep(0)
        else:
            due = start + (i + 1) * TICK_SAMPLES / SAMPLE_RATE / speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    return first_tick + ticks


def ts_pmt_stream_types(blob: bytes) -> dict[int, int]:
    """PID -> stream_type from the first PMT of an MPEG-TS (PAT, then PMT), parsed by hand."""
    packets = [blob[i : i + 188] for i in range(0, len(blob) - 187, 188)]
    pmt_pid = None
    for pkt in packets:
        assert pkt[0] == 0x47, "lost TS sync"
        pid = ((pkt[1] & 0x1F) << 8) | pkt[2]
        pusi = pkt[1] & 0x40
        if not pusi:
            continue
        payload = pkt[4:]
        if pkt[3] & 0x20:  # adaptation field
            payload = pkt[5 + pkt[4] :]
        section = payload[1 + payload[0] :]
        if pid == 0 and pmt_pid is None:
            # PAT: table_id, len(2), tsid(2), ver, sec, last; then (program, pid) entries
            (length,) = struct.unpack(">H", section[1:3])
            length &= 0x0FFF
            entries = section[8 : 3 + length - 4]
            for j in range(0, len(entries), 4):
                program = struct.unpack(">H", entries[j : j + 2])[0]
                if program != 0:
                    pmt_pid = struct.unpack(">H", entries[j + 2 : j + 4])[0] & 0x1FFF
        elif pmt_pid is not None and pid == pmt_pid and section[0] == 0x02:
            (length,) = struct.unpack(">H", section[1:3])
            length &= 0x0FFF
            (pinfo,) = struct.unpack(">H", section[10:12])
            pos = 12 + (pinfo & 0x0FFF)
            end = 3 + length - 4
            out: dict[int, int] = {}
            while pos < end:
                stype = section[pos]
                epid = struct.unpack(">H", section[pos + 1 : pos + 3])[0] & 0x1FFF
                (esl,) = struct.unpack(">H", section[pos + 3 : pos + 5])
                out[epid] = stype
                pos += 5 + (esl & 0x0FFF)
            return out
    raise AssertionError("no PMT found")


def read_file(path: Path) -> bytes:
    return path.read_bytes()


def rich_frame(tick: int, amplitude: int = AMPLITUDE) -> MixedFrame:
    """A tone plus deterministic noise: hard enough that AAC spends its whole bitrate."""
    base = sine_frame(tick, amplitude=amplitude).samples.astype(np.int32)
    rng = np.random.default_rng(tick)
    noise = rng.integers(-3000, 3000, size=base.shape)
    return MixedFrame(
        pts=tick * TICK_SAMPLES, samples=np.clip(base + noise, -32768, 32767).astype(np.int16)
    )


def flv_tags(blob: bytes) -> list[tuple[int, int, bytes]]:
    """(tag type, timestamp ms, body) of every tag in an FLV file (8 audio, 18 script data)."""
    assert blob[:3] == b"FLV", "not an FLV file"
    (header_size,) = struct.unpack(">I", blob[5:9])
    pos = header_size + 4  # header, then PreviousTagSize0
    out: list[tuple[int, int, bytes]] = []
    while pos + 11 <= len(blob):
        tag_type = blob[pos] & 0x1F
        size = int.from_bytes(blob[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(blob[pos + 4 : pos + 7], "big") | (blob[pos + 7] << 24)
        body = blob[pos + 11 : pos + 11 + size]
        if len(body) < size:
            break  # truncated tail (receiver killed mid-write)
        out.append((tag_type, ts, body))
        pos += 11 + size + 4
    return out
