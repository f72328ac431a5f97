"""Issue 16.10: RTMP across FLV's 2^24 ms extended-timestamp boundary.

FLV and RTMP carry a timestamp in 24 bits plus an extension: a connection that
lasts 4 h 39 m 37 s (inside the default 4 h run plus its margin, and well inside a
24 h one) crosses 2^24 ms = 16 777 216 ms.  Rather than wait for it, the
connection's timeline starts 3 s before it (the output's ``start_ms`` knob) and
6 s of audio and payloads go through the real output (its child process, FFmpeg's
RTMP client) to a real receiver, ``ffmpeg -listen 1``, which keeps the AMF data and
records what it reads with the timestamps it read (``-copyts``).  The recording
must hold audio and ``onTextData`` on both sides of the boundary, with timestamps
that go on rising smoothly and every payload, in order.
"""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pytest

from mixer_ext.context import parse_output
from mixer_ext.core.payload import MetadataPayload
from mixer_ext.encode.fanout import OutputPipeline
from mixer_ext.outputs.carriers import parse_amf0_on_text_data
from mixer_ext.settings import Settings
from mixer_ext.testing.feed import feed, flv_tags
from tests.support.env import free_port, require_program
from tests.support.rtmp import KEY, FfmpegListener, wait_connected

pytestmark = pytest.mark.rtmp

BOUNDARY_MS = 1 << 24
START_MS = BOUNDARY_MS - 3000


class CopytsListener(FfmpegListener):
    """The same listener, recording the timestamps it received unchanged."""

    def __init__(self, port: int, out: Path) -> None:
        ffmpeg = require_program("ffmpeg")
        self.out = out
        self.proc = subprocess.Popen(
            [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-copyts",
             "-analyzeduration", "1500000", "-listen", "1",
             "-i", f"rtmp://127.0.0.1:{port}/live/{KEY}",
             "-map", "0", "-c", "copy", "-f", "flv", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip


async def stream_across_the_boundary(port: int) -> None:
    """6 s of the mix to ``rtmp://127.0.0.1:port``, starting 3 s before 2^24 ms; no reconnect."""
    pipeline = OutputPipeline(
        [parse_output(f"rtmp://127.0.0.1:{port}/live/{KEY}")],
        96,
        Settings(rtmp_reconnect_max_delay=1.0),
        rtmp_first_delay=0.2,
        rtmp_start_ms=START_MS,
    )
    await pipeline.start()
    try:
        tick = await wait_connected(pipeline, 0)
        await feed(pipeline, 6.0, first_tick=tick, wait_rtmp=True)
    finally:
        await pipeline.close()
    assert pipeline.outputs[0].reconnects == 0


def assert_audio_crosses_the_boundary(tags: list[tuple[int, int, bytes]]) -> None:
    """The received AAC frames cross 2^24 ms, their stamps rise smoothly, none went missing."""
    # AAC frames (AACPacketType 1; the sequence header, type 0, is stamped 0)
    audio = [ts for kind, ts, body in tags if kind == 8 and body[1:2] == b"\x01"]
    assert audio, "no audio reached the receiver"
    assert audio[0] < BOUNDARY_MS - 1000 and audio[-1] > BOUNDARY_MS + 2000, (audio[0], audio[-1])
    steps = [b - a for a, b in itertools.pairwise(audio)]
    assert min(steps) >= 0 and max(steps) <= 50, (min(steps), max(steps), audio[:3], audio[-3:])
    assert len(audio) >= 0.95 * (audio[-1] - audio[0]) / (1024 / 48)  # no audio lost


async def test_audio_and_payloads_cross_the_extended_timestamp_boundary(tmp_path: Path) -> None:
    port = free_port()
    listener = CopytsListener(port, tmp_path / "got.flv")
    await stream_across_the_boundary(port)
    listener.stop(wait_end=5.0)
    err = listener.proc.stderr.read().decode(errors="replace") if listener.proc.stderr else ""
    assert listener.proc.returncode == 0, err

    tags = flv_tags(listener.out.read_bytes())
    assert_audio_crosses_the_boundary(tags)

    texts = [
        (ts, MetadataPayload.from_json(parse_amf0_on_text_data(body)))
        for kind, ts, body in tags
        if kind == 18 and body.startswith(b"\x02\x00\x0aonTextData")
    ]
    assert any(ts < BOUNDARY_MS for ts, _p in texts)
    assert sum(ts > BOUNDARY_MS for ts, _p in texts) >= 3
    seqs = [p.seq for _ts, p in texts]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    # each payload sits with the audio it describes: its stamp follows the audio's clock
    stamps = [ts for ts, _p in texts]
    assert all(480 <= b - a <= 520 for a, b in itertools.pairwise(stamps)), stamps


async def test_nginx_rtmp_records_audio_across_the_boundary(
    tmp_path: Path, nginx_rtmp: tuple[int, Path]
) -> None:
    """Debian's nginx-rtmp (the common self-hosted ingest) keeps receiving audio across it.

    It records what it received with the timestamps it read (AMF data is dropped by
    this module, so audio only): they cross 2^24 ms, rise smoothly, and no audio went
    missing at the boundary.
    """
    port, rec = nginx_rtmp
    await stream_across_the_boundary(port)
    assert_audio_crosses_the_boundary(flv_tags((rec / f"{KEY}.flv").read_bytes()))
