"""Logging off the caller's thread (issue 16.13): a blocked log sink never blocks the logger.

Real stdlib handlers and threads; the "slow stderr" is a handler whose
``emit`` waits on an event, standing in for a full pipe.
"""

from __future__ import annotations

import io
import logging
import threading
import time

from mixer_ext.log import TextFormatter
from mixer_ext.logqueue import QueuedLogging

KEY = "sk_live_Zq8VtQ3mP"


class BlockedHandler(logging.StreamHandler[io.StringIO]):
    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.unblock = threading.Event()
        self.setFormatter(TextFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.unblock.wait(10)
        super().emit(record)

    def text(self) -> str:
        return self.stream.getvalue()


def make_logger(name: str, queued: QueuedLogging) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [queued.handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def test_a_blocked_sink_does_not_block_the_caller_and_secrets_are_redacted() -> None:
    target = BlockedHandler()
    queued = QueuedLogging(target, size=1000)
    queued.start()
    log = make_logger("test.logqueue.blocked", queued)
    try:
        t0 = time.perf_counter()
        for i in range(200):
            log.info("publishing to %s (%d)", f"rtmp://host/live/{KEY}", i)
        took = time.perf_counter() - t0
        assert took < 0.5, f"200 log calls took {took:.3f} s against a blocked sink"
        target.unblock.set()
    finally:
        queued.stop()  # drains the queue
    text = target.text()
    assert text.count("publishing to") == 200
    assert KEY not in text
    assert "(199)" in text


def test_a_full_queue_drops_and_says_how_many() -> None:
    target = BlockedHandler()
    queued = QueuedLogging(target, size=5)
    queued.start()
    log = make_logger("test.logqueue.full", queued)
    try:
        log.warning("first")
        time.sleep(0.2)  # the listener has taken "first" and is blocked in emit
        for i in range(50):
            log.warning("flood %d", i)
        assert queued.handler.dropped >= 40
        target.unblock.set()
        time.sleep(0.2)
        log.warning("after")
    finally:
        queued.stop()
    text = target.text()
    assert "logging: dropped" in text and "(queue full)" in text
    assert "after" in text


def test_tracebacks_are_rendered_by_the_caller_and_redacted_by_the_listener() -> None:
    target = BlockedHandler()
    target.unblock.set()
    queued = QueuedLogging(target)
    queued.start()
    log = make_logger("test.logqueue.exc", queued)
    try:
        try:
            raise RuntimeError(f"cannot connect to rtmp://h/live/{KEY}")
        except RuntimeError:
            log.exception("rtmp failed")
    finally:
        queued.stop()
    text = target.text()
    assert "RuntimeError" in text and "Traceback" in text
    assert KEY not in text
