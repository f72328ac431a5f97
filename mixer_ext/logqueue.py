"""Logging off the event loop: a bounded queue in front, one listener thread behind.

Issue 16.13.  A ``StreamHandler`` on the root logger writes to stderr on the
thread that logs: on the event loop, a slow or blocked stderr (a full pipe to
a log shipper, a paused terminal) then stops the tick.  Here the logging call
only copies the record into a bounded queue; the listener thread runs the
expensive part: redaction (``RedactingFilter``, regexes over the message and
any traceback), formatting and the write.  Redaction therefore happens in the
listener, once, for every record whatever its source.

Queue policy: bounded (``QUEUE_SIZE`` records); when full, the new record is
dropped and counted (``dropped``), and the listener logs one line saying how
many were dropped when it next gets a record through.  Logging never blocks
the caller.

Ownership: ``start_queued_logging()`` returns the ``QueuedLogging`` that owns
the listener thread; ``stop()`` drains the queue and joins the thread (also
registered with ``atexit``, so the last lines of a run are written).
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import threading

from mixer_ext.log import RedactingFilter
from mixer_ext.redact import redact_text

#: records held between the loggers and the listener thread
QUEUE_SIZE = 10_000


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """A ``QueueHandler`` that drops (and counts) instead of raising when the queue is full.

    ``prepare()`` is kept cheap on the caller's side: the message is merged
    with its args (so later changes to mutable args cannot alter it) and the
    traceback is rendered, but nothing is redacted or formatted here.
    """

    def __init__(self, q: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(q)
        self.dropped = 0
        self._lock_dropped = threading.Lock()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        copy = logging.makeLogRecord(record.__dict__)
        copy.msg = record.getMessage()
        copy.args = None
        if copy.exc_info and copy.exc_info[1] is not None and not copy.exc_text:
            copy.exc_text = logging.Formatter().formatException(copy.exc_info)
        copy.exc_info = None  # a traceback holds frames: never keep it across threads
        copy.stack_info = record.stack_info
        return copy

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            with self._lock_dropped:
                self.dropped += 1

    def take_dropped(self) -> int:
        with self._lock_dropped:
            n, self.dropped = self.dropped, 0
        return n


class _RedactRenderedTraceback(logging.Filter):
    """In the listener: the traceback text ``prepare()`` rendered is redacted too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


class _ReportDrops(logging.Filter):
    """In the listener: before the next record, say how many were dropped since the last."""

    def __init__(self, front: DroppingQueueHandler, target: logging.Handler) -> None:
        super().__init__()
        self.front = front
        self.target = target

    def filter(self, record: logging.LogRecord) -> bool:
        n = self.front.take_dropped()
        if n:
            note = logging.makeLogRecord(
                {
                    "name": __name__,
                    "levelno": logging.WARNING,
                    "levelname": "WARNING",
                    "msg": f"logging: dropped {n} records (queue full)",
                    "created": record.created,
                    "msecs": record.msecs,
                }
            )
            self.target.handle(note)
        return True


class QueuedLogging:
    """The front handler (for the root logger) and the listener thread that owns ``target``."""

    def __init__(self, target: logging.Handler, size: int = QUEUE_SIZE) -> None:
        self.queue: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=size)
        self.handler = DroppingQueueHandler(self.queue)
        self.target = target
        # redaction runs here, in the listener thread, before formatting and writing
        if not any(isinstance(f, RedactingFilter) for f in target.filters):
            target.addFilter(RedactingFilter())
        target.addFilter(_RedactRenderedTraceback())
        target.addFilter(_ReportDrops(self.handler, target))
        self.listener = logging.handlers.QueueListener(
            self.queue, target, respect_handler_level=True
        )
        self._started = False

    def start(self) -> None:
        if not self._started:
            self.listener.start()
            self._started = True
            atexit.register(self.stop)

    def stop(self) -> None:
        """Write what is queued, then end the listener thread (idempotent)."""
        if self._started:
            self._started = False
            self.listener.stop()
            atexit.unregister(self.stop)


def start_queued_logging(
    target: logging.Handler, logger: logging.Logger | None = None
) -> QueuedLogging:
    """Route ``logger`` (default: root) through a queue to ``target`` in a listener thread."""
    queued = QueuedLogging(target)
    root = logger or logging.getLogger()
    root.handlers[:] = [queued.handler]
    queued.start()
    return queued
