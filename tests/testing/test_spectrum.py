"""The one spectrum check (mixer_ext/testing/spectrum.py) reads known signals right."""

from __future__ import annotations

import numpy as np

from mixer_ext.testing.spectrum import amplitude_at, has_tone, peak_hz, peaks, rms, tone_levels

RATE = 48_000
T = np.arange(RATE) / RATE  # one second


def test_a_sine_reads_its_amplitude_at_its_frequency() -> None:
    x = 0.5 * np.sin(2 * np.pi * 440 * T) + 0.1 * np.sin(2 * np.pi * 1000 * T)
    levels = tone_levels(x, RATE, [440.0, 1000.0, 700.0])
    assert abs(levels[440.0] - 0.5) < 0.01 and abs(levels[1000.0] - 0.1) < 0.01
    assert levels[700.0] < 0.001
    assert abs(amplitude_at(x, 440.0, RATE) - 0.5) < 0.01
    stereo = np.stack([x, x], axis=1)  # (n, 2): the channels are averaged
    assert abs(tone_levels(stereo, RATE, [440.0])[440.0] - 0.5) < 0.01


def test_peaks_and_has_tone() -> None:
    x = 0.5 * np.sin(2 * np.pi * 440 * T) + 0.2 * np.sin(2 * np.pi * 660 * T) + 0.3
    assert abs(peak_hz(x, RATE, above=50) - 440) <= 1
    assert [round(f) for f in peaks(x, RATE, top=2)] == [440, 660]  # the DC offset removed
    assert has_tone(x, 660.0, RATE) and not has_tone(x, 550.0, RATE)
    assert abs(rms(np.full(100, 0.5)) - 0.5) < 1e-12
