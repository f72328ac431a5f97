"""``setup_logging`` logs through a queue (issue 16.13): real processes, real pipes.

A logging call only enqueues; one listener thread redacts and writes stderr.  So a
stderr nobody reads does not block the caller, and every queued line is still
written when the process exits (``stop_logging`` at exit) -- also a worker's last.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.env import ROOT, mixer_ext_cmd

KEY = "sk_live_Zq8VtQ3mPw"

CHILD = f"""
import logging, sys, time
from mixer_ext.log import setup_logging
setup_logging("INFO", "text")
log = logging.getLogger("child")
t0 = time.perf_counter()
for i in range(2000):
    log.info("line %d publishing to rtmp://host/live/{KEY} %s", i, "x" * 1000)
print(f"logged {{time.perf_counter() - t0:.3f}}", flush=True)
log.warning("the last line")
raise SystemExit(3)
"""


@pytest.mark.slow
def test_a_stderr_nobody_reads_blocks_no_logging_call_and_no_line_is_lost() -> None:
    # 2000 lines of 1 KB: 30 times what a pipe holds.  Written on the caller's thread,
    # the loop would block on the full pipe until the parent reads, and never print.
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(30)  # stderr is not read meanwhile
    try:
        assert first and first[0].startswith("logged "), "logging blocked on a full stderr"
        took = float(first[0].split()[1])
        assert took < 10, f"2000 log calls took {took:.1f} s"
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    lines = err.splitlines()
    assert sum(" child: line " in ln for ln in lines) == 2000, "lines lost"
    assert lines[-1].endswith("child: the last line"), lines[-1][:200]
    assert KEY not in err, "redaction is done by the listener"


F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032  # Linux fcntl commands


@pytest.mark.slow
def test_a_workers_last_log_lines_are_written_when_it_exits(tmp_path: Path) -> None:
    # The worker fails fast (its HTTP port is taken) while its stderr is stalled: a pipe
    # already full, as when a log shipper lags.  Its run is not held up by that, and it
    # waits at exit until its last lines are written instead of dropping them.
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    os.set_blocking(write_end, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write_end, b"#" * 512)
    os.set_blocking(write_end, True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIXER_")}
        context = json.dumps({"room": {"name": "RM1"}, "outputs": ["hls:main"]})
        proc = subprocess.Popen(
            [*mixer_ext_cmd(), "run", "--context", context],
            stdout=subprocess.DEVNULL,
            stderr=write_end,
            cwd=ROOT,
            env={
                **env,
                "MIXER_HLS_DIR": str(tmp_path / "hls"),
                "MIXER_ROOM_SECRET": "worker-secret-0123456789abcdef01234567",
                "MIXER_HTTP_PORT": str(taken.getsockname()[1]),
            },
        )
        os.close(write_end)
        try:
            deadline = time.monotonic() + 30
            while not (tmp_path / "hls" / "main").exists() and time.monotonic() < deadline:
                time.sleep(0.05)  # its outputs started: the failing run is under way
            time.sleep(1.5)
            assert proc.poll() is None, "the worker exited without writing its queued lines"
        finally:
            chunks = []
            while chunk := os.read(read_end, 65536):
                chunks.append(chunk)
            os.close(read_end)
            rc = proc.wait(30)
    assert rc != 0
    text = b"".join(chunks).decode(errors="replace").lstrip("#")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines and "run failed" in lines[-1] and "cannot listen" in lines[-1], text[-2000:]
    assert "outputs closed" in text
