"""RTMP/RTMPS output: FLV with AAC and one AMF0 ``onTextData`` message per payload.

Why a child process: PyAV opens FFmpeg's RTMP client (``avio_open``) and
writes the FLV header and trailer while holding the GIL, and that client has
no I/O timeout.  A server that is blackholed, or accepts the connection and
then never answers, would freeze *every* thread of the worker (the mixer
clock, HLS, the HTTP endpoint) for minutes or forever.  So each RTMP output
runs its ``RtmpSession`` (``mixer_ext.outputs.rtmp_session``: connect, FLV
mux, capped exponential backoff, reconnects) in a small child process
(``mixer_ext.outputs.rtmp_child``), fed the already-encoded packets through a
pipe: nothing is encoded twice.

This parent side:

* forwards packets and payloads from its bounded queue to the child (drop
  newest when the queue is full, counted, as for every output);
* reads the child's status heartbeats, mirrors state and counters into
  ``status()`` and the Prometheus counters (labels: kind only);
* restarts the child when it stalls: no heartbeat, or one FFmpeg call busy,
  for ``stall_timeout`` seconds (``CLOSING_STALL_TIMEOUT`` once closing), or
  when it dies; restarts follow the same capped backoff;
* keeps the stream key out of everything it prints: the child gets the URL
  on stdin (not its command line), labels use ``redact_url``, and the key is
  registered with ``mixer_ext.redact.add_secret`` in both processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from mixer_ext.core.payload import TimedPayload
from mixer_ext.encode.encoder import AacParams, EncodedPacket
from mixer_ext.log import JsonFormatter
from mixer_ext.metrics import OUTPUT_RECONNECTS
from mixer_ext.outputs.base import CLOSE_TIMEOUT, Output, OutputState
from mixer_ext.outputs.rtmp_child import audio_frame, close_frame, metadata_frame, write_frame
from mixer_ext.outputs.rtmp_session import RECONNECT_FIRST_DELAY, stream_key_parts
from mixer_ext.redact import add_secret, redact_url

log = logging.getLogger(__name__)

#: seconds without a heartbeat, or inside one FFmpeg call, before the child is restarted
STALL_TIMEOUT = 10.0
#: the same while closing: the run is ending, don't wait long for a dead server
CLOSING_STALL_TIMEOUT = 2.0
#: a child just started imports PyAV before its first heartbeat
STARTUP_GRACE = 10.0

__all__ = ["RtmpOutput", "stream_key_parts"]


class _Child:
    """One child process and what it last reported."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.started = time.monotonic()
        self.last_beat: float | None = None
        self.status: dict[str, Any] = {}
        self.reader: threading.Thread | None = None
        self.killed = False
        #: frames written to its stdin (vs. the ``received`` it reports: the rest were lost)
        self.sent = 0


class RtmpOutput(Output):
    kind = "rtmp"

    def __init__(
        self,
        url: str,
        params: AacParams,
        max_delay: float,
        first_delay: float = RECONNECT_FIRST_DELAY,
        stall_timeout: float = STALL_TIMEOUT,
        start_ms: int = 0,
    ) -> None:
        super().__init__(redact_url(url), params)
        self._url = url
        for secret in stream_key_parts(url):
            add_secret(secret)
        self.max_delay = max_delay
        self.first_delay = min(first_delay, max_delay)
        self.stall_timeout = stall_timeout
        #: test knob: FLV timestamp of each connection's first packet (RtmpSession.start_ms)
        self.start_ms = start_ms
        self.stalls = 0
        self.connections = 0
        self._delay = self.first_delay
        self._next_spawn = 0.0
        self._child: _Child | None = None
        self._child_lock = threading.Lock()
        self._closing = threading.Event()
        self._close_deadline = 0.0
        self._stop_watch = threading.Event()
        self._watchdog: threading.Thread | None = None

    # ------------------------------------------------------------------ Output hooks
    def _open(self) -> None:
        self._set_state(OutputState.RECONNECTING)
        self._watchdog = threading.Thread(target=self._watch, name="rtmp-watchdog", daemon=True)
        self._watchdog.start()

    def _audio(self, packet: EncodedPacket) -> None:
        self._send(audio_frame(packet))

    def _metadata(self, payload: TimedPayload) -> None:
        self._send(metadata_frame(payload))

    def _close(self, end_of_stream: bool) -> None:
        child = self._child
        if child is not None:
            with contextlib.suppress(OSError, ValueError):
                stdin = child.proc.stdin
                if stdin is None:
                    raise ValueError("child has no stdin")
                write_frame(stdin, close_frame(end_of_stream))
                stdin.close()
            deadline = self._close_deadline
            while child.proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(0.25)
            self._end_child(child, "closing")

    def _abandon(self) -> None:
        child = self._child
        if child is not None:
            self._end_child(child, "abandoned")

    def close(self, end_of_stream: bool, timeout: float = CLOSE_TIMEOUT) -> None:
        """As ``Output.close``; a stalled child is cut short after ``CLOSING_STALL_TIMEOUT``.

        The child is given until shortly before ``timeout`` to finish its FLV; then killed.
        """
        self._close_deadline = time.monotonic() + max(0.1, timeout - 0.5)
        self._closing.set()
        try:
            super().close(end_of_stream, timeout)
        finally:
            self._stop_watch.set()
            if self._watchdog is not None:
                self._watchdog.join(2.0)

    def status(self) -> dict[str, Any]:
        out = super().status()
        out["stalls"] = self.stalls
        return out

    def child_cpu_seconds(self) -> float:
        """CPU seconds the current connection process reported (for the bench)."""
        child = self._child
        return float(child.status.get("cpu", 0.0)) if child is not None else 0.0

    # ------------------------------------------------------------------ child lifecycle
    def _send(self, frame: bytes) -> None:
        child = self._child
        if child is None and not self._closing.is_set() and time.monotonic() >= self._next_spawn:
            child = self._spawn()
        if child is None or child.proc.stdin is None:
            self._count_drop()
            return
        try:
            write_frame(child.proc.stdin, frame)
            child.proc.stdin.flush()
            child.sent += 1
        except (OSError, ValueError):
            self._count_drop()  # the child is gone (killed or crashed); the watchdog restarts it

    def _spawn(self) -> _Child | None:
        config = {
            "url": self._url,
            "extradata": self.params.extradata.hex(),
            "bit_rate": self.params.bit_rate,
            "max_delay": self.max_delay,
            "first_delay": self.first_delay,
            "start_ms": self.start_ms,
            "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()),
            "log_format": _log_format(),
        }
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mixer_ext.outputs.rtmp_child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,
                env=_child_env(),
            )
            if proc.stdin is None:  # stdin=PIPE always gives one
                raise OSError("RTMP child started without a stdin pipe")
            write_frame(proc.stdin, json.dumps(config).encode())
            proc.stdin.flush()
        except OSError as exc:
            self._count_error()
            log.error("output %s: cannot start its process: %s", self.label, exc.strerror)
            self._backoff()
            return None
        child = _Child(proc)
        child.reader = threading.Thread(
            target=self._read_status, args=(child,), name="rtmp-status", daemon=True
        )
        child.reader.start()
        with self._child_lock:
            self._child = child
        return child

    def _read_status(self, child: _Child) -> None:
        """Child stdout -> status, state and counters (deltas into Prometheus)."""
        stdout: IO[bytes] | None = child.proc.stdout
        if stdout is None:  # stdout=PIPE always gives one
            return
        for line in stdout:
            try:
                status = json.loads(line)
            except ValueError:
                log.warning("output %s: unreadable status line from its process", self.label)
                continue
            self._apply(child, status)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(5)

    def _apply(self, child: _Child, status: dict[str, Any]) -> None:
        last = child.status
        for key, count in (("bytes", self._count_bytes), ("dropped_packets", self._count_drop)):
            delta = int(status.get(key, 0)) - int(last.get(key, 0))
            if delta > 0:
                count(delta)
        delta = int(status.get("errors", 0)) - int(last.get("errors", 0))
        if delta > 0:
            self._count_error(delta)
        new_connections = int(status.get("connections", 0)) - int(last.get("connections", 0))
        if new_connections > 0:
            with self._lock:
                self.connections += new_connections
                reconnects = max(0, self.connections - 1)
                more = reconnects - self.reconnects
                self.reconnects = max(self.reconnects, reconnects)
            if more > 0:
                OUTPUT_RECONNECTS.labels(self.kind).inc(more)
            self._delay = self.first_delay
        child.status = status
        child.last_beat = time.monotonic()
        if self._child is child:
            running = status.get("state") == OutputState.RUNNING.value
            self._set_state(OutputState.RUNNING if running else OutputState.RECONNECTING)

    def _watch(self) -> None:
        while not self._stop_watch.wait(0.25):
            child = self._child
            if child is None:
                continue
            now = time.monotonic()
            limit = CLOSING_STALL_TIMEOUT if self._closing.is_set() else self.stall_timeout
            if child.proc.poll() is not None:
                if not self._closing.is_set():
                    self._count_error()
                    log.warning(
                        "output %s: its process exited (code %s); restarting",
                        self.label,
                        child.proc.returncode,
                    )
                    self._end_child(child, "exited")
                    self._backoff()
                continue
            if child.last_beat is None:
                stalled = now - child.started > STARTUP_GRACE
            else:
                since_beat = now - child.last_beat
                busy_for = float(child.status.get("busy_for", 0.0))
                busy = busy_for + since_beat if busy_for > 0 else 0.0
                stalled = since_beat > limit or busy > limit
            if not stalled:
                continue
            with self._lock:
                self.stalls += 1
            self._count_error()
            log.warning(
                "output %s: no progress for %.0f s (server not answering or not reading); "
                "restarting the connection",
                self.label,
                limit,
            )
            self._end_child(child, "stalled")
            self._backoff()

    def _end_child(self, child: _Child, why: str) -> None:
        with self._child_lock:
            if self._child is child:
                self._child = None
        if child.proc.poll() is None:
            child.killed = True
            child.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(5)
        for pipe in (child.proc.stdin,):
            with contextlib.suppress(OSError, ValueError):
                if pipe is not None:
                    pipe.close()
        if child.reader is not None and child.reader is not threading.current_thread():
            child.reader.join(2.0)
        lost = child.sent - int(child.status.get("received", 0))
        if lost > 0:  # still in the pipe when the process ended
            child.sent -= lost
            self._count_drop(lost)
        self._set_state(OutputState.RECONNECTING)
        log.debug("output %s: process ended (%s)", self.label, why)

    def _backoff(self) -> None:
        self._next_spawn = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self.max_delay)


#: what the RTMP child may see of the worker's environment: it muxes FLV and talks RTMP,
#: so it needs the program search path, locale and time zone, and the library paths of a
#: virtualenv; never the worker's credentials (room secret, API keys, cloud tokens)
CHILD_ENV_NAMES = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "VIRTUAL_ENV")
CHILD_ENV_PREFIXES = ("PYTHON", "SSL_CERT_", "MALLOC_")


def _child_env() -> dict[str, str]:
    """The child's environment: the names above only, with this package importable."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name in CHILD_ENV_NAMES or name.startswith(CHILD_ENV_PREFIXES)
    }
    root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _log_format() -> str:
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, JsonFormatter):
            return "json"
    return "text"
