"""Undecodable input payloads: counted, and logged once per track then periodically.

Since issue 13.1 the mixer's inputs decode in the tick themselves (``mixer_ext.core.input``,
counted there and logged by the clock); what follows covers tracks received the stock
aiortc way (``make_connector(tap=False)``), and ``LibopusNoise`` keeps libopus' own
per-payload error line out of the log for both.

aiortc decodes each received track in its own decoder thread
(``aiortc.rtcrtpreceiver.decoder_worker``).  When a payload does not decode
(PyAV raises ``av.FFmpegError``, e.g. ``InvalidDataError`` for a malformed
Opus packet), that thread drops the frame, logs a warning *per frame* on the
``aiortc.rtcrtpreceiver`` logger and goes on with the next one.  So a peer
sending garbage never crashes the mixer and never touches another input (each
input has its own thread and decoder), but nothing counted it and a hostile
peer turned into 50 log lines a second.

``DecodeErrorFilter`` sits on that logger.  Each "failed to decode" record
increments ``mixer_input_malformed_frames_total``; for each decoder thread
(one per received track, kept weakly) the first record passes, then at most one summary
line per ``interval`` seconds says how many more were dropped.  Every other
record of that logger passes untouched.  The message is aiortc's (checked for
aiortc 1.16; ``tests/e2e/test_malformed_input.py`` fails if it changes: the
counter would stay 0).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable

from mixer_ext import metrics

#: the logger aiortc's decoder threads report decode failures on
AIORTC_RECEIVER_LOGGER = "aiortc.rtcrtpreceiver"
#: the logger PyAV forwards libopus' own messages to
LIBOPUS_LOGGER = "libav.libopus"
#: seconds between two summary lines for one track
SUMMARY_INTERVAL = 10.0
_MARKER = "failed to decode"


class DecodeErrorFilter(logging.Filter):
    """Counts aiortc's decode failures and rate-limits their log lines per decoder thread."""

    def __init__(
        self, interval: float = SUMMARY_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()  # records come from every decoder thread
        #: decoder thread -> (time of the last line logged, failures not yet logged); a thread
        #: that ends drops out (weak keys), so a new track never inherits an old one's state
        self._seen: weakref.WeakKeyDictionary[threading.Thread, tuple[float, int]] = (
            weakref.WeakKeyDictionary()
        )
        #: decode failures seen in this process
        self.failures = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or _MARKER not in str(record.msg):
            return True
        metrics.INPUT_MALFORMED_FRAMES.inc()
        now = self._clock()
        with self._lock:
            self.failures += 1
            key = threading.current_thread()  # filters run in the thread that logs
            last = self._seen.get(key)
            if last is None:
                self._seen[key] = (now, 0)
                record.msg = f"input: dropping an undecodable payload: {record.msg}"
                record.msg += " (further ones on this track are counted, summarized every %gs)"
                record.args = (*(record.args or ()), self._interval)  # type: ignore[misc]
                return True
            logged_at, pending = last
            pending += 1
            if now - logged_at < self._interval:
                self._seen[key] = (logged_at, pending)
                return False
            self._seen[key] = (now, 0)
        record.msg = "input: dropped %d undecodable payloads on one track in the last %.0f s"
        record.args = (pending, now - logged_at)
        return True


class LibopusNoise(logging.Filter):
    """Drops libopus' own "Decoding error" line, which FFmpeg logs once per bad payload.

    The mixer's inputs decode in the tick (``mixer_ext.core.input``): they count each
    refused payload, and the clock logs it once per input, then periodically; a
    hostile peer must not turn into one log line per packet.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Decoding error" not in str(record.msg)


def install(interval: float = SUMMARY_INTERVAL) -> DecodeErrorFilter:
    """Put one ``DecodeErrorFilter`` on aiortc's receiver logger (idempotent); return it.

    Also silences libopus' per-payload error line (``LibopusNoise``).
    """
    libopus = logging.getLogger(LIBOPUS_LOGGER)
    if not any(isinstance(f, LibopusNoise) for f in libopus.filters):
        libopus.addFilter(LibopusNoise())
    logger = logging.getLogger(AIORTC_RECEIVER_LOGGER)
    for existing in logger.filters:
        if isinstance(existing, DecodeErrorFilter):
            return existing
    flt = DecodeErrorFilter(interval)
    logger.addFilter(flt)
    return flt
