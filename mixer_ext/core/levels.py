"""Per-participant level for the timed metadata.

``v`` is the largest absolute sample value (0..32767) of the participant's
own audio, before mixing, over one metadata window, taken over the ticks in
which the participant had an enabled audio input; ``-1`` when it had none
in the whole window.  -32768 counts as 32767 (the scale is symmetric).
"""

from __future__ import annotations

from mixer_ext.core.frames import Int16Block
from mixer_ext.core.payload import MAX_LEVEL, MUTED


def peak_of(samples: Int16Block) -> int:
    """Largest absolute sample value of ``samples``, 0..32767."""
    if samples.size == 0:
        return 0
    return min(MAX_LEVEL, max(int(samples.max()), -int(samples.min())))


class LevelMeter:
    """Accumulates one participant's peak over a window; ``take()`` ends the window."""

    __slots__ = ("_active", "_peak")

    def __init__(self) -> None:
        self._peak = 0
        self._active = False

    def add_peak(self, peak: int) -> None:
        """Record one enabled tick whose peak is ``peak`` (already 0..32767)."""
        self._active = True
        if peak > self._peak:
            self._peak = peak

    def update(self, samples: Int16Block) -> None:
        """Record one enabled tick of audio."""
        self.add_peak(peak_of(samples))

    def take(self) -> int:
        """The window's level (-1 when no enabled tick) and start a new window."""
        v = min(self._peak, MAX_LEVEL) if self._active else MUTED
        self._peak = 0
        self._active = False
        return v


__all__ = ["LevelMeter", "peak_of"]
