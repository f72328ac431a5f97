"""TODO docstring."""

from __future__ import annotations

from pathlib import Path

from mixer_ext.roomserver.compose.spec import (
    Source,
)
from mixer_ext.roomserver.recorder import RecordingTags, TrackRecorder
from mixer_ext.sim.preencoded import encode_tone

FRAME = 960


RATE = 48_000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(path: Path, freq: float, offset: float, talk: list[tuple[float, float]]) -> Source:
    """A recording of ``freq`` starting ``offset`` s into the room, talking in ``talk`` spans
    (seconds from the track's start; DTX between them, as a browser sends)."""
    loop = encode_tone(freq, channels=1)
    clock = Clock()
    clock.now = offset
    rec = TrackRecorder(path, RecordingTags(track_name=path.stem), room_start=0.0, clock=clock)
    end = max(b for _, b in talk)
    for n in range(round(end / 0.02)):
        t = n * 0.02
        speaking = any(a <= t < b for a, b in talk)
        if speaking:
            rec.push(loop.payloads[n % len(loop.payloads)], 7777 + n * FRAME)
        elif n % 20 == 0:
            rec.push(loop.silence, 7777 + n * FRAME)  # DTX: one tiny payload per 400 ms
        clock.now += 0.02
    rec.close()
    result = rec.join(10)
    assert result is not None and result.error is None
    assert rec.offset_ms is not None
    return Source(path.stem, path, rec.offset_ms * RATE // 1000, result.duration_samples)
