"""Launchers: how a MediaProcessor's worker is started, stopped, watched and re-adopted.

One small interface (``Launcher``) with a handle that is plain JSON, kept by the store,
so that an API restarted in between can still find and stop a worker it started.

``LocalLauncher`` runs each worker as a ``mixer-ext run`` child process in its own
session (a Ctrl-C or a restart of the API does not reach it).  The context, which may
hold RTMP stream keys, goes into a private 0600 file, never into argv.  A worker is
identified by its pid *and* its start time from ``/proc``, so a recycled pid is never
mistaken for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

#: the API's settings a worker must not see (secrets) or share (listening ports)
_NOT_INHERITED = {
    "MIXER_AUTH_TOKEN",
    "MIXER_ROOM_ADMIN_TOKEN",  # ends rooms: a worker never needs it
    "MIXER_API_KEYS",
    "MIXER_HTTP_PORT",
    "MIXER_METRICS_PORT",
    "MIXER_API_DATABASE",
}


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What a local worker inherits: the API's environment minus its own secrets and ports."""
    return {k: v for k, v in environ.items() if k.upper() not in _NOT_INHERITED}


class Launcher(Protocol):
    name: str

    def start(self, sid: str, context_text: str, env: dict[str, str]) -> dict[str, Any]:
        """Launch the worker; returns its handle. Raises OSError when it cannot."""

    def stop(self, handle: dict[str, Any]) -> None:
        """Ask the worker to finish (SIGTERM: it finalizes its outputs and exits)."""

    def alive(self, handle: dict[str, Any]) -> bool:
        """Is this worker still running?"""

    def adopt(self, handle: dict[str, Any]) -> bool:
        """After an API restart: take the worker back; False when it is gone."""


class WorkerLauncher(Protocol):
    """What the control plane uses: every call returns at once (none blocks the loop)."""

    name: str
    #: where relative ``file:`` outputs of a processor land (``work / SID / path``)
    work: Path

    def start(self, sid: str, context_text: str, env: dict[str, str]) -> dict[str, Any]: ...
    def stop(self, handle: dict[str, Any]) -> None: ...
    def kill(self, handle: dict[str, Any]) -> None: ...
    def alive(self, handle: dict[str, Any]) -> bool: ...
    def adopt(self, handle: dict[str, Any]) -> bool: ...
    def exit_code(self, handle: dict[str, Any]) -> int | None: ...
    def forget(self, sid: str, handle: dict[str, Any]) -> None: ...

    async def refresh(self) -> None:
        """Bring the launcher's view of its workers up to date (before adopt/alive)."""

    def stream_base(self, handle: dict[str, Any]) -> str | None:
        """The worker's own HTTP base serving its ``/hls/``, when the API must proxy to it
        (None: its HLS is in the API's data directory)."""


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited already
        return None
    return int(fields[19])


class LocalLauncher:
    name = "local"

    def __init__(self, data_dir: Path) -> None:
        self.private = data_dir / "private"
        self.logs = data_dir / "logs"
        self.work = data_dir / "work"
        for d in (self.private, self.logs, self.work):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.private, 0o700)
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def context_path(self, sid: str) -> Path:
        return self.private / f"{sid}.json"

    def start(self, sid: str, context_text: str, env: dict[str, str]) -> dict[str, Any]:
        path = self.context_path(sid)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(context_text)
        workdir = self.work / sid
        workdir.mkdir(exist_ok=True)
        log_path = self.logs / f"{sid}.log"
        inherited = worker_environment(os.environ)
        with open(log_path, "ab") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "mixer_ext", "run", "--context", str(path)],
                env={**inherited, **env},
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._children[child.pid] = child
        return {"pid": child.pid, "start_time": process_start_time(child.pid), "log": str(log_path)}

    def _same_process(self, handle: dict[str, Any]) -> bool:
        pid = int(handle["pid"])
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:  # reaps our own child
            return False
        started = process_start_time(pid)
        return started is not None and started == handle.get("start_time")

    def stop(self, handle: dict[str, Any]) -> None:
        if self._same_process(handle):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(handle["pid"]), signal.SIGTERM)

    def kill(self, handle: dict[str, Any]) -> None:
        """SIGKILL: only for a worker that ignored SIGTERM for too long."""
        if self._same_process(handle):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(handle["pid"]), signal.SIGKILL)

    def alive(self, handle: dict[str, Any]) -> bool:
        return self._same_process(handle)

    def adopt(self, handle: dict[str, Any]) -> bool:
        return self._same_process(handle)

    def exit_code(self, handle: dict[str, Any]) -> int | None:
        child = self._children.get(int(handle["pid"]))
        return None if child is None else child.poll()

    async def refresh(self) -> None:
        """Nothing to fetch: ``/proc`` answers at once."""

    def stream_base(self, handle: dict[str, Any]) -> str | None:
        return None

    def forget(self, sid: str, handle: dict[str, Any]) -> None:
        """The worker is done: drop its private context file."""
        self._children.pop(int(handle["pid"]), None)
        with contextlib.suppress(FileNotFoundError):
            self.context_path(sid).unlink()
