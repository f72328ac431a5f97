"""Start the project's own commands as real processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from mixer_ext.testing.net import ROOT, mixer_ext_cmd, wait_for_port
from tests.support.marks import need

__all__ = ["wait_for_port"]


class Proc:
    """A ``mixer-ext`` subprocess whose output goes to a log file (read with ``.log()``)."""

    def __init__(self, args: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        if list(args[:1]) == ["run"]:
            need("slow", "a worker process (mixer-ext run)", or_any_lane_mark=True)
        self._start([*mixer_ext_cmd(), *args], {**os.environ, **env}, log_path)

    def _start(self, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        """Start ``argv`` with exactly ``env``, its output into ``log_path``."""
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            list(argv), env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode


@contextmanager
def processes() -> Iterator[list[Proc]]:
    """A list to append ``Proc``s to; every one is stopped on exit."""
    procs: list[Proc] = []
    try:
        yield procs
    finally:
        for p in reversed(procs):
            p.stop()


def start_room_server(procs: list[Proc], port: int, env: dict[str, str], log: Path) -> Proc:
    """``mixer-ext room-server`` on 127.0.0.1:``port``, appended to ``procs``, once it listens."""
    server = Proc(["room-server", "--host", "127.0.0.1", "--port", str(port)], env, log)
    procs.append(server)
    wait_for_port(port)
    return server


def start_talker(
    procs: list[Proc],
    env: dict[str, str],
    log: Path,
    room: str,
    identity: str,
    tone: float,
    seconds: float | None = None,
) -> Proc:
    """``mixer-ext talker`` sending a sine of ``tone`` Hz into ``room`` as ``identity``."""
    argv = ["talker", "--room", room, "--identity", identity, "--tone", str(tone)]
    if seconds is not None:
        argv += ["--duration", str(seconds)]
    talker = Proc(argv, env, log)
    procs.append(talker)
    return talker


def metrics_text(port: int) -> str:
    """A process's Prometheus ``/metrics`` on loopback; "" while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""
