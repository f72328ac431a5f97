"""What every output shares: its own thread fed by a bounded queue, and a status.

Each output (HLS, RTMP, file) runs on its own thread so that a stalled
server or a slow disk never stalls the encoder or another output.  The
encoder thread hands packets over with ``offer()``, which never blocks:

* queue policy: bounded (``QUEUE_PACKETS``, about 10 s of audio); when full,
  the *incoming* item is dropped and counted in
  ``mixer_output_dropped_packets_total{kind}``.  Dropping the newest keeps
  what is queued contiguous (a gap, not a jumble) and costs nothing.
* a failed output (disk full, permission denied) stops taking packets; the
  others go on.

Subclasses implement ``_open()``, ``_audio()``, ``_metadata()`` and
``_close(end_of_stream)``; they run on the output thread only.

State and counters have one owner: an output's state is written from its own
thread, a watchdog and a status reader (RTMP), its counters from those and the
encoder thread, so every change goes through ``_set_state()`` and the
``_count_*()`` helpers, under the output's lock.  ``failed`` and ``closed`` are
terminal: once there, nothing moves the state again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from mixer_ext.core.payload import TimedPayload
from mixer_ext.encode.encoder import AacParams, EncodedPacket
from mixer_ext.metrics import OUTPUT_BYTES, OUTPUT_DROPPED_PACKETS, OUTPUT_ERRORS
from mixer_ext.redact import redact_text

log = logging.getLogger(__name__)

#: about 10 s of AAC packets (47/s) plus their payloads
QUEUE_PACKETS = 512
#: how long close() waits for an output thread to finish its work
CLOSE_TIMEOUT = 15.0


class OutputState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    #: RTMP only: disconnected, retrying with backoff
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    CLOSED = "closed"


#: states an output never leaves
TERMINAL = (OutputState.FAILED, OutputState.CLOSED)


@dataclass(frozen=True, slots=True)
class _Close:
    end_of_stream: bool


Item = EncodedPacket | TimedPayload | _Close


class OutputError(Exception):
    """An output cannot go on; ``str()`` is one line fit for logs and status."""


class Output:
    """Base class: thread, bounded queue, state and counters of one output."""

    kind: str = "?"

    def __init__(self, label: str, params: AacParams) -> None:
        self.label = label
        self.params = params
        self._state = OutputState.STARTING
        self.error: str | None = None
        self.bytes_written = 0
        self.dropped = 0
        self.reconnects = 0
        self.errors = 0
        self._queue: queue.Queue[Item] = queue.Queue(maxsize=QUEUE_PACKETS)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: a packet was dropped at offer(): the next one queued carries ``discontinuity``
        self._gap = False

    # ------------------------------------------------------------------ state (any thread)
    @property
    def state(self) -> OutputState:
        return self._state

    def _set_state(self, new: OutputState, *, unless: tuple[OutputState, ...] = ()) -> bool:
        """The one setter: moves to ``new`` unless the state is terminal or in ``unless``.

        Returns whether it moved.  Under the lock, so a check and its set are one step.
        """
        with self._lock:
            if self._state in TERMINAL or self._state in unless:
                return False
            self._state = new
            return True

    # ------------------------------------------------------------------ control (any thread)
    def open(self) -> None:
        """Open the output (blocking; call off the event loop).  Raises OutputError."""
        try:
            self._open()
        except OutputError as exc:
            self._fail(str(exc))
            raise
        except (OSError, ValueError) as exc:  # av errors are OSError/ValueError subclasses
            msg = self._describe(exc)
            self._fail(msg)
            raise OutputError(msg) from None
        self._set_state(OutputState.RUNNING, unless=(OutputState.RECONNECTING, OutputState.RUNNING))
        self._thread = threading.Thread(target=self._run, name=f"output-{self.kind}", daemon=True)
        self._thread.start()

    def offer(self, item: EncodedPacket | TimedPayload) -> None:
        """Hand over one item without blocking; drops (and counts) it when full or failed.

        Called from one thread (the encoder's).  After a dropped packet the next
        packet queued carries ``discontinuity``.
        """
        if self.state in (OutputState.FAILED, OutputState.CLOSED):
            return
        is_packet = isinstance(item, EncodedPacket)
        if self._gap and isinstance(item, EncodedPacket):
            item = replace(item, discontinuity=True)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._count_drop()
            self._gap = self._gap or is_packet
        else:
            self._gap = self._gap and not is_packet

    def close(self, end_of_stream: bool, timeout: float = CLOSE_TIMEOUT) -> None:
        """Finish the queued work, finalize, and join the thread (blocking)."""
        thread = self._thread
        if thread is None:
            return
        deadline = time.monotonic() + timeout
        while thread.is_alive():
            try:
                self._queue.put(_Close(end_of_stream), timeout=0.2)
                break
            except queue.Full:
                if time.monotonic() > deadline:
                    break
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.error("output %s did not finish within %.0f s", self.label, timeout)

    def status(self) -> dict[str, Any]:
        """State of this output, fit for /healthz (the label is already redacted)."""
        return {
            "kind": self.kind,
            "label": self.label,
            "state": self.state.value,
            "error": self.error,
            "bytes": self.bytes_written,
            "dropped_packets": self.dropped,
            "reconnects": self.reconnects,
            "errors": self.errors,
        }

    # ------------------------------------------------------------------ output thread
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, _Close):
                self._finish(item.end_of_stream)
                return
            if self.state is OutputState.FAILED:
                continue
            try:
                if isinstance(item, EncodedPacket):
                    self._audio(item)
                else:
                    self._metadata(item)
            except OutputError as exc:
                self._fail(str(exc))
            except (OSError, ValueError) as exc:
                self._fail(self._describe(exc))
            except Exception as exc:  # top level of the output thread
                log.exception("output %s: unexpected error", self.label)
                self._fail(f"internal error: {type(exc).__name__}")

    def _finish(self, end_of_stream: bool) -> None:
        try:
            if self.state is not OutputState.FAILED:
                self._close(end_of_stream)
                self._set_state(OutputState.CLOSED)
            else:
                self._abandon()
        except (OSError, ValueError, OutputError) as exc:
            self._fail(f"while finishing: {self._describe(exc)}")
        except Exception as exc:  # top level of the output thread
            log.exception("output %s: unexpected error while finishing", self.label)
            self._fail(f"internal error while finishing: {type(exc).__name__}")

    # ------------------------------------------------------------------ helpers
    def _fail(self, reason: str) -> None:
        with self._lock:
            if self._state in TERMINAL:
                return
            self._state = OutputState.FAILED
            self.error = reason
        self._count_error()
        log.error("output %s failed: %s", self.label, reason)
        try:
            self._abandon()
        except Exception:  # best effort: the output is already failed
            log.debug("output %s: cleanup after failure raised", self.label, exc_info=True)

    def _count_drop(self, n: int = 1) -> None:
        with self._lock:
            self.dropped += n
        OUTPUT_DROPPED_PACKETS.labels(self.kind).inc(n)

    def _count_error(self, n: int = 1) -> None:
        with self._lock:
            self.errors += n
        OUTPUT_ERRORS.labels(self.kind).inc(n)

    def _count_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_written += n
        OUTPUT_BYTES.labels(self.kind).inc(n)

    def _describe(self, exc: BaseException) -> str:
        """One line for an exception, with anything secret-looking redacted."""
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return redact_text(text)

    # ------------------------------------------------------------------ subclass hooks
    def _open(self) -> None:
        raise NotImplementedError

    def _audio(self, packet: EncodedPacket) -> None:
        raise NotImplementedError

    def _metadata(self, payload: TimedPayload) -> None:
        raise NotImplementedError

    def _close(self, end_of_stream: bool) -> None:
        raise NotImplementedError

    def _abandon(self) -> None:
        """Release resources after a failure (no finalization expected)."""
