"""TODO docstring."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixer_ext.core.payload import APP_SOURCE, MetadataPayload
from mixer_ext.encode.fanout import OutputPipeline
from mixer_ext.outputs.carriers import parse_amf0_text_fields
from mixer_ext.testing.feed import feed, flv_tags
from tests.support.env import free_port, require_path, require_program
from tests.support.marks import need

KEY = "sk_live_Zq8VtQ3mP"


NGINX_RTMP = "/usr/lib/nginx/modules/ngx_rtmp_module.so"


class FfmpegListener:
    """``ffmpeg -listen 1`` as an RTMP server that keeps the AMF data (records to FLV)."""

    def __init__(self, port: int, out: Path) -> None:
        need("rtmp", "an ffmpeg RTMP listener")
        ffmpeg = require_program("ffmpeg")
        self.out = out
        self.proc = subprocess.Popen(
            [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
             "-analyzeduration", "1500000", "-listen", "1", "-i", f"rtmp://127.0.0.1:{port}/live/{KEY}",
             "-map", "0", "-c", "copy", "-f", "flv", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip

    def stop(self, timeout: float = 10.0, *, wait_end: float = 0.0) -> None:
        """Let it finish on its own for ``wait_end`` s (publisher gone), else interrupt it."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(wait_end)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # ffmpeg finishes the file on SIGINT
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def _text_tags(self) -> list[tuple[int, dict[str, str]]]:
        out = []
        for tag_type, ts, body in flv_tags(self.out.read_bytes()):
            if tag_type == 18 and body.startswith(b"\x02\x00\x0aonTextData"):
                out.append((ts, parse_amf0_text_fields(body)))
        return out

    def payloads(self) -> list[MetadataPayload]:
        """The mixer's payloads."""
        return [MetadataPayload.from_json(f["text"]) for _, f in self._text_tags() if _mine(f)]

    def payload_times(self) -> list[int]:
        """FLV timestamps (ms) of the mixer's payloads."""
        return [ts for ts, f in self._text_tags() if _mine(f)]

    def app_payloads(self) -> list[tuple[int, str]]:
        """(FLV timestamp in ms, text) of every app payload.

        FFmpeg rebuilds each ``onTextData`` from its ``text`` alone, so the ``source:
        "app"`` marker does not survive this relay: anything that is not a mixer
        payload is an app's.
        """
        return [(ts, f["text"]) for ts, f in self._text_tags() if not _mine(f)]


def _mine(fields: dict[str, str]) -> bool:
    if fields.get("source") == APP_SOURCE:
        return False
    try:
        MetadataPayload.from_json(fields["text"])
    except ValueError:
        return False
    return True


async def wait_connected(pipeline: OutputPipeline, first_tick: int, within: float = 15.0) -> int:
    """Feed real-time audio until every RTMP output is connected; returns the next tick."""
    deadline = time.monotonic() + within
    tick = first_tick
    while time.monotonic() < deadline:
        tick = await feed(pipeline, 0.1, speed=1.0, first_tick=tick)
        if all(o.state.value == "running" for o in pipeline.outputs if o.kind == "rtmp"):
            return tick
    raise AssertionError(f"RTMP never connected: {pipeline.status()}")


class NginxRtmp:
    """Debian nginx + libnginx-mod-rtmp on loopback, recording every stream to ``rec``."""

    def __init__(self, tmp_path: Path, port: int, name: str) -> None:
        need("rtmp", "nginx-rtmp")
        nginx = require_program("nginx", package="nginx libnginx-mod-rtmp")
        require_path(NGINX_RTMP, "libnginx-mod-rtmp is not installed")
        self.rec = tmp_path / f"{name}-rec"
        self.rec.mkdir()
        prefix = tmp_path / name
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(
            f"""
load_module {NGINX_RTMP};
master_process off;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 64; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        application live {{
            live on;
            record all;
            record_path {self.rec};
        }}
    }}
}}
"""
        )
        self.proc = subprocess.Popen(
            [nginx, "-p", str(prefix), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    self.stop()
                    pytest.fail(f"nginx-rtmp did not start: {err}")
                time.sleep(0.05)

    @property
    def recording(self) -> Path:
        return self.rec / f"{KEY}.flv"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def nginx_rtmp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    server = NginxRtmp(tmp_path, port, "nginx")
    try:
        yield port, server.rec
    finally:
        server.stop()
