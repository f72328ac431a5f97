"""Logging: one line per record, JSON or text, with secrets redacted, off the caller's thread.

Structured fields go in ``extra={"fields": {...}}``; ``log_event`` is the
short form.  Every record passes through ``redact_text`` whatever its source
(aiortc, aiohttp, PyAV), so an RTMP stream key or a token cannot leak even
when a library prints a URL.

``setup_logging`` routes the root logger through ``mixer_ext.logqueue``: a
logging call (on the event loop, in the tick) only copies the record into a
bounded queue; one listener thread redacts, formats and writes to stderr, so
a slow or blocked stderr never stops the loop.  ``stop_logging`` (also run at
exit) writes every queued line before the process ends, then logs directly.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mixer_ext.logqueue import QueuedLogging

from mixer_ext.redact import redact_text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        record.msg = redact_text(msg)
        record.args = None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {
                k: redact_text(v) if isinstance(v, str) else v for k, v in fields.items()
            }
        if record.exc_info and record.exc_info[1] is not None:
            # keep the traceback but scrub its text when formatted
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in fields.items())
        return line


#: the queue and listener thread of this process (``setup_logging``), if started
_queued: QueuedLogging | None = None
_at_exit_registered = False


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once per process: a queue to a stderr writer thread.

    Calling it again replaces the previous configuration (its queue is written first).
    """
    from mixer_ext.logqueue import start_queued_logging  # it imports this module's filter

    global _queued, _at_exit_registered
    stop_logging()
    if not _at_exit_registered:
        atexit.register(stop_logging)
        _at_exit_registered = True
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.setLevel(level.upper())
    # aiortc/aioice are chatty at INFO about every candidate pair
    for noisy in ("aioice", "aiortc", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    _queued = start_queued_logging(handler, root)  # redaction runs in its listener


def stop_logging() -> None:
    """Write every queued record, end the listener thread, then log directly (idempotent).

    Run at exit too (``atexit``), so a process's last lines are never lost; after it,
    the root logger writes on the caller's thread, still redacted.
    """
    global _queued
    queued, _queued = _queued, None
    if queued is None:
        return
    queued.stop()
    root = logging.getLogger()
    if queued.handler in root.handlers:
        root.handlers[:] = [queued.target]


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with structured ``fields``: ``log_event(log, "status", state="started")``."""
    logger.log(level, event, extra={"fields": {"event": event, **fields}})
