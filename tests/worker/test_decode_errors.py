"""``DecodeErrorFilter``: counts aiortc's decode failures, one line per track then periodic.

A unit test of the filter with records shaped like aiortc's (logged here from two
threads standing in for two decoder threads); the real path, garbage Opus over
WebRTC into a running worker, is ``test_malformed_input``.
"""

from __future__ import annotations

import logging
import threading

import pytest

from mixer_ext import metrics
from mixer_ext.worker.decode_errors import AIORTC_RECEIVER_LOGGER, DecodeErrorFilter, install

MSG = "RTCRtpReceiver(%s) failed to decode %s frame: %s"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _log_from_thread(logger: logging.Logger, times: int) -> None:
    def run() -> None:
        for _ in range(times):
            logger.warning(MSG, "audio", "opus", "Invalid data found")

    t = threading.Thread(target=run)
    t.start()
    t.join()


def test_counts_every_failure_and_logs_once_per_track_then_periodically(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    flt = DecodeErrorFilter(interval=10.0, clock=clock)
    logger = logging.getLogger("test.decode_errors")
    logger.addFilter(flt)
    before = metrics.INPUT_MALFORMED_FRAMES._value.get()
    try:
        with caplog.at_level(logging.WARNING, logger="test.decode_errors"):
            _log_from_thread(logger, 100)  # track 1
            _log_from_thread(logger, 5)  # track 2 (another decoder thread)
            assert len(caplog.records) == 2, [r.getMessage() for r in caplog.records]
            assert all("undecodable" in r.getMessage() for r in caplog.records)
            assert "summarized every 10s" in caplog.records[0].getMessage()
            clock.now += 10.5  # time for a summary, on the next failure only
            logger.warning("an unrelated warning passes untouched")
            assert caplog.records[-1].getMessage() == "an unrelated warning passes untouched"
            logger.warning(MSG, "audio", "opus", "x")  # main thread: a third "track", first line
            assert len(caplog.records) == 4
    finally:
        logger.removeFilter(flt)
    assert flt.failures == 106
    assert metrics.INPUT_MALFORMED_FRAMES._value.get() - before == 106


def test_summary_says_how_many_were_dropped(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    flt = DecodeErrorFilter(interval=10.0, clock=clock)
    rec = logging.LogRecord("x", logging.WARNING, __file__, 1, MSG, ("audio", "opus", "e"), None)
    assert flt.filter(rec)  # first: passes
    for _ in range(49):
        rec = logging.LogRecord("x", logging.WARNING, __file__, 1, MSG, ("a", "opus", "e"), None)
        assert not flt.filter(rec)
    clock.now += 11
    rec = logging.LogRecord("x", logging.WARNING, __file__, 1, MSG, ("a", "opus", "e"), None)
    assert flt.filter(rec)
    assert (
        rec.getMessage() == "input: dropped 50 undecodable payloads on one track in the last 11 s"
    )


def test_install_is_idempotent() -> None:
    logger = logging.getLogger(AIORTC_RECEIVER_LOGGER)
    first = install()
    try:
        assert install() is first
        assert sum(isinstance(f, DecodeErrorFilter) for f in logger.filters) == 1
    finally:
        logger.removeFilter(first)
