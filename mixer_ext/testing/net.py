"""Ports and processes on loopback, for tests and benchmarks."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

#: the checkout (for files the tests and benchmarks use beside the package)
ROOT = Path(__file__).resolve().parent.parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    """Return once ``host:port`` accepts a TCP connection; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on {host}:{port} after {timeout:.0f} s"
                ) from None
            time.sleep(0.05)


def mixer_ext_cmd() -> list[str]:
    """The command that runs this checkout's ``mixer-ext``."""
    return [sys.executable, "-m", "mixer_ext"]
