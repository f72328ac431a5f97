"""A peer that sends malformed Opus over real WebRTC: dropped and counted, nobody else hurt.

Real room server, real ``mixer-ext run`` worker (HLS out), one good talker
(``talker --tone 440``) and one hostile participant in this process whose
track yields ``av.Packet``\\ s of random bytes that libopus refuses (each one
checked against a real decoder first).  aiortc's sender only packetizes
packets, and the embedded room forwards Opus payloads untouched
(``mixer_ext.roomserver.forward``), so the garbage reaches the mixer's
decoder.  The worker must keep running, count the drops in
``mixer_input_malformed_frames_total``, log them once then periodically (not
50 lines a second), and mix the good talker as if nothing happened: its tone
in the HLS (FFT) and its level in the metadata.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from mixer_ext.connectors.embedded import RoomClient
from mixer_ext.roomserver.tokens import mint_token
from mixer_ext.sim.preencoded import FRAME_SAMPLES, PTIME, TIME_BASE
from mixer_ext.testing.spectrum import tone_levels
from mixer_ext.testing.wait import until
from tests.support.env import free_port
from tests.support.hls_reader import read_hls
from tests.support.process_util import (
    Proc,
    metrics_text,
    processes,
    start_room_server,
    start_talker,
)

SECRET = "malformed-secret-not-for-production-0123456789"
ROOM = "RM-malformed"
TONE = 440.0
HOSTILE_SECONDS = 8.0


def garbage_payloads(count: int, seed: int = 7) -> list[bytes]:
    """``count`` random payloads (20..120 bytes) that libopus refuses to decode."""
    rng = np.random.default_rng(seed)
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate = 48_000
    decoder.layout = "stereo"
    decoder.format = "s16"
    out: list[bytes] = []
    while len(out) < count:
        data = rng.integers(0, 256, int(rng.integers(20, 120)), dtype=np.uint8).tobytes()
        try:
            decoder.decode(av.Packet(data))
        except av.FFmpegError:
            out.append(data)
    return out


class GarbageOpusTrack(MediaStreamTrack):
    """Sends malformed Opus payloads, paced like a real talker (50 packets a second)."""

    kind = "audio"

    def __init__(self, payloads: list[bytes]) -> None:
        super().__init__()
        self.payloads = payloads
        self.sent = 0
        self._start: float | None = None

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self.sent * PTIME
        if due > now:
            await asyncio.sleep(due - now)
        packet = av.Packet(self.payloads[self.sent % len(self.payloads)])
        packet.pts = self.sent * FRAME_SAMPLES
        packet.time_base = TIME_BASE
        self.sent += 1
        return packet


def _value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def _scrape_until(port: int, ok: Any, within: float) -> str:
    return await until(
        lambda: metrics_text(port),
        within,
        "/metrics to pass the check",
        ok=ok,
        every=0.3,
        blocking=True,
    )


async def test_malformed_opus_peer_is_dropped_counted_and_harmless(tmp_path: Path) -> None:
    room_port = free_port()
    metrics_port = free_port()
    env = {
        "MIXER_ROOM_SECRET": SECRET,
        "MIXER_ROOM_URL": f"ws://127.0.0.1:{room_port}",
    }
    hls_dir = tmp_path / "hls"
    context = {"room": {"name": ROOM}, "outputs": ["hls:m"], "maxParticipantDuration": 60}
    track = GarbageOpusTrack(garbage_payloads(50))
    hostile: RoomClient | None = None
    with processes() as procs:
        start_room_server(procs, room_port, env, tmp_path / "server.log")
        start_talker(procs, env, tmp_path / "talker.log", ROOM, "alice", TONE)
        worker_env = {
            **env,
            "MIXER_HLS_DIR": str(hls_dir),
            "MIXER_HLS_PLAYLIST_TYPE": "event",
            "MIXER_METRICS_PORT": str(metrics_port),
        }
        worker = Proc(["run", "--context", json.dumps(context)], worker_env, tmp_path / "w.log")
        procs.append(worker)
        await _scrape_until(metrics_port, lambda t: "mixer_inputs 1.0" in t, within=40)

        tok = mint_token(SECRET, ROOM, "mallory", 600)
        hostile = RoomClient(f"ws://127.0.0.1:{room_port}", ROOM, "mallory", tok)
        # RoomClient wraps what it publishes in a MutingTrack, which only passes decoded
        # frames; the hostile peer sends packets straight to aiortc's sender instead.
        hostile._publish = track  # type: ignore[assignment]
        await hostile.connect()
        try:
            metrics = await _scrape_until(
                metrics_port,
                lambda t: (
                    "mixer_inputs 2.0" in t
                    and _value(t, "mixer_input_malformed_frames_total") >= 50
                ),
                within=20,
            )
            await asyncio.sleep(HOSTILE_SECONDS)
            metrics = await _scrape_until(metrics_port, lambda t: "mixer_inputs 2.0" in t, 5)
            assert worker.popen.poll() is None, worker.log()[-3000:]
            sent = track.sent
        finally:
            await hostile.disconnect()
        assert worker.stop() == 0, worker.log()[-3000:]
        wlog = worker.log()

    malformed = _value(metrics, "mixer_input_malformed_frames_total")
    # the garbage reached the mixer's decoder and was counted (about 50 a second)
    assert malformed >= 0.5 * (HOSTILE_SECONDS * 50), (malformed, sent)  # loose: shared CPU
    assert malformed <= sent
    # the log says so once, then at most every 10 s: not once per packet
    lines = [ln for ln in wlog.splitlines() if "decode" in ln]
    assert 1 <= len(lines) <= 3, lines[:10]
    assert "undecodable" in lines[0], lines[0]

    hls = read_hls(hls_dir / "m")
    assert hls.ended, hls.playlist
    levels = tone_levels(hls.audio, hls.sample_rate, [TONE, 550.0])
    assert levels[TONE] > 0.02 and levels[TONE] > 20 * levels[550.0], levels
    alice = [p.levels["alice"] for _, p in hls.payloads if "alice" in p.levels]
    assert len(alice) >= 2 * HOSTILE_SECONDS, alice
    assert all(v > 1000 for v in alice[2:]), alice
    # the hostile participant is in the payloads, silent (its audio never decoded)
    mallory = [p.levels["mallory"] for _, p in hls.payloads if "mallory" in p.levels]
    assert mallory and max(mallory) <= 0, mallory
    assert SECRET not in wlog
