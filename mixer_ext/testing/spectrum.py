"""The one spectrum check of the tests and benchmarks: which tones, how loud.

Everything here reads one spectrum, ``spectrum()``: a Hann-windowed FFT scaled so that
a sine of amplitude A reads A at its frequency (the window's gain undone).  The
readers on top answer the questions the tests ask: the level of given tones
(``tone_levels``, ``amplitude_at``), the strongest frequency (``peak_hz``), the few
strongest (``peaks``), and whether a tone clearly stands out (``has_tone``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 48_000

Samples = npt.NDArray[np.floating] | npt.NDArray[np.integer]
Floats = npt.NDArray[np.float64]

__all__ = ["amplitude_at", "has_tone", "peak_hz", "peaks", "rms", "spectrum", "tone_levels"]


def mono(samples: Samples) -> Floats:
    """``samples`` as float64 mono: a (n, channels) array is averaged over its channels."""
    x = np.asarray(samples, dtype=np.float64)
    return x.mean(axis=1) if x.ndim == 2 else x


def spectrum(samples: Samples, rate: int = SAMPLE_RATE) -> tuple[Floats, Floats]:
    """(frequencies in Hz, amplitudes) of mono ``samples`` (Hann window, gain undone)."""
    x = mono(samples)
    window = np.hanning(len(x))
    amplitudes = np.abs(np.fft.rfft(x * window)) * 2 / max(float(window.sum()), 1e-12)
    return np.fft.rfftfreq(len(x), 1 / rate).astype(np.float64), amplitudes


def tone_levels(
    samples: Samples, rate: int, freqs: list[float], band: float = 15.0
) -> dict[float, float]:
    """Amplitude of each of ``freqs``: the spectrum's maximum within +-``band`` Hz."""
    bins, amps = spectrum(samples, rate)
    out: dict[float, float] = {}
    for f in freqs:
        sel = (bins > f - band) & (bins < f + band)
        out[f] = float(amps[sel].max()) if sel.any() else 0.0
    return out


def amplitude_at(samples: Samples, freq: float, rate: int = SAMPLE_RATE) -> float:
    """Amplitude of the sine at ``freq``: the maximum of the 5 bins around it."""
    _bins, amps = spectrum(samples, rate)
    k = round(freq * len(mono(samples)) / rate)
    return float(amps[max(k - 2, 0) : k + 3].max())


def peak_hz(samples: Samples, rate: int = SAMPLE_RATE, *, above: float = 0.0) -> float:
    """Frequency of the strongest component above ``above`` Hz."""
    bins, amps = spectrum(samples, rate)
    amps = np.where(bins >= above, amps, 0.0)
    return float(bins[int(np.argmax(amps))])


def peaks(samples: Samples, rate: int = SAMPLE_RATE, *, top: int = 3) -> list[float]:
    """Frequencies of the ``top`` strongest peaks (the DC offset removed first); each peak
    found clears +-20 bins around it so one tone is not counted twice."""
    x = mono(samples)
    bins, amps = spectrum(x - x.mean(), rate)
    found: list[float] = []
    for _ in range(top):
        i = int(np.argmax(amps))
        if amps[i] <= 0:
            break
        found.append(float(bins[i]))
        amps[max(0, i - 20) : i + 21] = 0
    return found


def has_tone(
    samples: Samples, freq: float, rate: int = SAMPLE_RATE, *, tolerance: float = 15.0
) -> bool:
    """True when ``freq`` (+-``tolerance`` Hz) is a clear peak: 50x above the median of
    100-8000 Hz and within 40 dB of the loudest component there."""
    x = mono(samples)
    if len(x) < rate // 10:
        return False
    bins, amps = spectrum(x - x.mean(), rate)
    band = (bins > freq - tolerance) & (bins < freq + tolerance)
    if not band.any():
        return False
    audible = amps[(bins > 100) & (bins < 8000)]
    peak = float(amps[band].max())
    return peak > 50 * (float(np.median(audible)) + 1e-12) and peak > 0.01 * float(audible.max())


def rms(samples: Samples) -> float:
    """Root mean square of mono ``samples``."""
    x = mono(samples)
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
