"""RTMP output against real receivers on loopback: nginx-rtmp and ffmpeg's RTMP listener."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mixer_ext.context import parse_output
from mixer_ext.encode.fanout import OutputPipeline
from mixer_ext.log import RedactingFilter, TextFormatter
from mixer_ext.metrics import OUTPUT_RECONNECTS
from mixer_ext.settings import Settings
from mixer_ext.testing.feed import feed, flv_tags
from tests.support.env import free_port, require_program
from tests.support.hls_reader import read_hls
from tests.support.rtmp import KEY, FfmpegListener, NginxRtmp, wait_connected

pytestmark = pytest.mark.rtmp


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log record (ours, aiohttp's, FFmpeg's via PyAV) as production formats it."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buf
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def ffprobe(path: Path, entries: str) -> dict[str, Any]:
    probe = subprocess.run(
        [require_program("ffprobe", package="ffmpeg"), "-v", "error", "-show_entries", entries,
         "-of", "json", str(path)],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(probe.stdout)
    return result


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert KEY not in text, (
            f"stream key leaked: ...{text[max(0, text.find(KEY) - 200) :][:300]}"
        )


async def test_ffmpeg_listener_receives_every_payload_in_order(
    tmp_path: Path, captured_logs: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    listener = FfmpegListener(port, tmp_path / "got.flv")
    url = f"rtmp://127.0.0.1:{port}/live/{KEY}"
    pipeline = OutputPipeline(
        [parse_output(url)], 96, Settings(rtmp_reconnect_max_delay=1.0), rtmp_first_delay=0.2
    )
    await pipeline.start()
    try:
        tick = await wait_connected(pipeline, 0)
        await feed(pipeline, 5.0, first_tick=tick, wait_rtmp=True)
    finally:
        await pipeline.close()
    listener.stop(wait_end=5.0)
    assert listener.proc.returncode == 0, (
        listener.proc.stderr.read() if listener.proc.stderr else ""
    )
    got = listener.payloads()
    seqs = [p.seq for p in got]
    assert len(seqs) >= 9, seqs
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "payloads lost or out of order"
    assert seqs[-1] == (tick + 250) // 25 - 1  # the last payload fed arrived
    streams = ffprobe(listener.out, "stream=codec_name,sample_rate,channels")["streams"]
    assert {"codec_name": "aac", "sample_rate": "48000", "channels": 2} in streams
    status = json.dumps(pipeline.status())
    logs = captured_logs.getvalue() + "".join(capfd.readouterr())
    assert "connected (connection 1)" in logs  # the RTMP process's log lines are captured too
    assert_no_key(logs, status)
    assert "rtmp://127.0.0.1" in status  # the label is there, redacted


async def test_nginx_rtmp_receives_the_audio(
    tmp_path: Path,
    nginx_rtmp: tuple[int, Path],
    captured_logs: io.StringIO,
    capfd: pytest.CaptureFixture[str],
) -> None:
    port, rec = nginx_rtmp
    url = f"rtmp://127.0.0.1:{port}/live/{KEY}"
    pipeline = OutputPipeline([parse_output(url)], 128, Settings(), rtmp_first_delay=0.2)
    await pipeline.start()
    try:
        tick = await wait_connected(pipeline, 0)
        await feed(pipeline, 4.0, first_tick=tick, speed=4.0)
    finally:
        await pipeline.close()
    recorded = rec / f"{KEY}.flv"  # nginx-rtmp creates it when the stream is published
    info = ffprobe(recorded, "format=duration:stream=codec_name,sample_rate,channels")
    assert info["streams"] == [{"codec_name": "aac", "sample_rate": "48000", "channels": 2}]
    assert float(info["format"]["duration"]) == pytest.approx(4.0 + (tick * 0.02), abs=0.3)
    assert_no_key(captured_logs.getvalue() + "".join(capfd.readouterr()))


async def test_receiver_restart_reconnects_while_hls_goes_on(
    tmp_path: Path, captured_logs: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    url = f"rtmp://127.0.0.1:{port}/live/{KEY}"
    settings = Settings(hls_dir=tmp_path / "hls", rtmp_reconnect_max_delay=1.0)
    before = OUTPUT_RECONNECTS.labels("rtmp")._value.get()
    first = NginxRtmp(tmp_path, port, "first")
    pipeline = OutputPipeline(
        [parse_output("hls:main"), parse_output(url)], 96, settings, rtmp_first_delay=0.2
    )
    await pipeline.start()
    second: NginxRtmp | None = None
    try:
        tick = await wait_connected(pipeline, 0)
        tick = await feed(pipeline, 2.0, first_tick=tick, speed=2.0)
        first.stop()  # the receiver goes away mid-stream
        tick = await feed(pipeline, 2.0, first_tick=tick, speed=2.0)
        rtmp_state = next(o for o in pipeline.outputs if o.kind == "rtmp").state.value
        assert rtmp_state == "reconnecting"
        second = NginxRtmp(tmp_path, port, "second")
        tick = await wait_connected(pipeline, tick)
        tick = await feed(pipeline, 2.0, first_tick=tick, speed=2.0)
    finally:
        await pipeline.close()
        first.stop()
        if second is not None:
            second.stop()
    rtmp = next(o for o in pipeline.status()["outputs"] if o["kind"] == "rtmp")
    assert rtmp["reconnects"] == 1
    assert rtmp["dropped_packets"] > 0  # what could not be sent while down
    assert OUTPUT_RECONNECTS.labels("rtmp")._value.get() == before + 1
    # both servers received audio: before the drop, and again after the reconnect
    assert second is not None
    for server, at_least in ((first, 1.5), (second, 1.5)):
        tags = [(t, ts) for t, ts, _b in flv_tags(server.recording.read_bytes()) if t == 8]
        received = (tags[-1][1] - tags[0][1]) / 1000
        assert received >= at_least, f"{server.rec.name}: {received:.2f} s of audio"
    # HLS never noticed: every payload, and all the audio, without a gap
    hls = read_hls(tmp_path / "hls" / "main")
    assert [p.seq for _t, p in hls.payloads] == list(range(tick // 25))
    assert hls.duration == pytest.approx(tick * 0.02, abs=0.1)
    logs = captured_logs.getvalue() + "".join(capfd.readouterr())
    assert_no_key(logs, json.dumps(pipeline.status()))
    assert "connection lost" in logs


class SilentServer:
    """Accepts TCP connections and then neither answers nor reads: a stalled ingest."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


async def test_stalled_server_is_cut_off_and_never_stalls_hls(
    tmp_path: Path, captured_logs: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    server = SilentServer()
    url = f"rtmp://127.0.0.1:{server.port}/live/{KEY}"
    settings = Settings(hls_dir=tmp_path / "hls", rtmp_reconnect_max_delay=0.5)
    pipeline = OutputPipeline(
        [parse_output("hls:main"), parse_output(url)],
        64,
        settings,
        rtmp_first_delay=0.2,
        rtmp_stall_timeout=1.0,
    )
    await pipeline.start()
    try:
        tick = await feed(pipeline, 6.0, speed=1.0)
        t0 = time.monotonic()
    finally:
        await pipeline.close()
        server.close()
    closing = time.monotonic() - t0
    rtmp = next(o for o in pipeline.status()["outputs"] if o["kind"] == "rtmp")
    assert rtmp["stalls"] >= 1 and rtmp["reconnects"] == 0
    assert len(server.accepted) >= 2, "the output never retried after the stall"
    assert rtmp["dropped_packets"] > 100
    assert closing < 10.0, f"close() took {closing:.1f} s"
    hls = read_hls(tmp_path / "hls" / "main")
    assert [p.seq for _t, p in hls.payloads] == list(range(tick // 25))
    assert hls.duration == pytest.approx(tick * 0.02, abs=0.1)
    logs = captured_logs.getvalue() + "".join(capfd.readouterr())
    assert "no progress" in logs
    assert_no_key(logs)


def self_signed_cert(tmp_path: Path) -> tuple[Path, Path]:
    openssl = require_program("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


async def test_rtmps_through_a_tls_front_reaches_nginx(
    tmp_path: Path,
    nginx_rtmp: tuple[int, Path],
    captured_logs: io.StringIO,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """RTMPS = RTMP inside TLS: a TLS front (as ingest services run) relays to nginx-rtmp."""
    import ssl

    port, rec = nginx_rtmp
    cert, key = self_signed_cert(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    handshakes = 0

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def front(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        nonlocal handshakes
        handshakes += 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(relay(client_r, up_w), relay(up_r, client_w))

    server = await asyncio.start_server(front, "127.0.0.1", 0, ssl=ctx)
    tls_port = server.sockets[0].getsockname()[1]
    pipeline = OutputPipeline(
        [parse_output(f"rtmps://127.0.0.1:{tls_port}/live/{KEY}")],
        128,
        Settings(),
        rtmp_first_delay=0.2,
    )
    await pipeline.start()
    try:
        tick = await wait_connected(pipeline, 0)
        await feed(pipeline, 3.0, first_tick=tick, speed=4.0)
    finally:
        await pipeline.close()
        server.close()
    assert handshakes >= 1
    info = ffprobe(rec / f"{KEY}.flv", "format=duration:stream=codec_name,sample_rate")
    assert info["streams"] == [{"codec_name": "aac", "sample_rate": "48000"}]
    assert float(info["format"]["duration"]) == pytest.approx(3.0 + tick * 0.02, abs=0.3)
    assert_no_key(captured_logs.getvalue() + "".join(capfd.readouterr()))


def test_a_bare_stream_key_in_an_ffmpeg_log_line_is_scrubbed(captured_logs: io.StringIO) -> None:
    """FFmpeg may print the key alone (no URL around it): registered keys are scrubbed too."""
    from mixer_ext.encode.encoder import AacParams
    from mixer_ext.outputs.rtmp import RtmpOutput

    key = "bare_key_Xy7Qp2"
    output = RtmpOutput(f"rtmps://ingest.example/app/{key}?token=t0ps3cret", AacParams(b"", 1), 1.0)
    assert output.label == "rtmps://ingest.example/app/***?***"
    logging.getLogger("libav.rtmps").error("Publishing stream %s failed", key)
    logging.getLogger("libav.rtmps").error("Server error: t0ps3cret rejected")
    text = captured_logs.getvalue()
    assert "Publishing stream *** failed" in text
    assert key not in text and "t0ps3cret" not in text
