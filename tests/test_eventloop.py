"""MIXER_EVENT_LOOP: the standard loop by default, uvloop on request, a clear error without it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from mixer_ext import eventloop
from mixer_ext.connectors.base import TrackSubscribed
from mixer_ext.connectors.embedded import RoomClient
from mixer_ext.connectors.factory import make_connector
from mixer_ext.errors import ConfigError
from mixer_ext.roomserver.tokens import mint_token
from mixer_ext.settings import EventLoop, load_settings
from mixer_ext.sim.tracks import ToneTrack
from mixer_ext.testing.net import ROOT, free_port, mixer_ext_cmd
from mixer_ext.testing.spectrum import peak_hz
from tests.support.process_util import processes, start_room_server

SECRET = "eventloop-test-secret-0123456789abcdef"


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_the_default_is_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIXER_EVENT_LOOP", raising=False)
    choice = load_settings().event_loop
    assert choice is EventLoop.ASYNCIO
    assert eventloop.run(_loop_module(), choice) == "asyncio.unix_events"


def test_uvloop_runs_the_coroutine_on_uvloop() -> None:
    assert eventloop.run(_loop_module(), EventLoop.UVLOOP).startswith("uvloop")


def test_uvloop_missing_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    coro = _loop_module()
    with pytest.raises(ConfigError, match=r"MIXER_EVENT_LOOP=uvloop: uvloop is not installed"):
        eventloop.run(coro, EventLoop.UVLOOP)
    assert coro.cr_frame is None  # closed, not left to warn "never awaited"


@pytest.mark.slow
def test_an_unknown_loop_is_refused_before_anything_starts() -> None:
    proc = subprocess.run(
        [*mixer_ext_cmd(), "room-server", "--port", str(free_port())],
        env={"PATH": "/usr/bin:/bin", "MIXER_EVENT_LOOP": "trio", "MIXER_ROOM_SECRET": SECRET},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "MIXER_EVENT_LOOP" in lines[0], proc.stderr


@pytest.mark.slow
async def test_the_room_server_on_uvloop_forwards_a_tone(tmp_path: Path) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    env = {"MIXER_EVENT_LOOP": "uvloop", "MIXER_ROOM_SECRET": SECRET, "MIXER_LOG_LEVEL": "DEBUG"}
    with processes() as procs:
        server = start_room_server(procs, port, env, tmp_path / "room.log")
        alice = RoomClient(
            url, "r1", "alice", mint_token(SECRET, "r1", "alice", 600), publish=ToneTrack(440.0)
        )
        settings = load_settings().model_copy(
            update={"room_url": url, "room_secret": SecretStr(SECRET)}
        )
        bot = make_connector(settings, "r1", "audio-mixer-v1", tap=False)
        try:
            await asyncio.wait_for(alice.connect(), 30)
            await asyncio.wait_for(bot.connect(), 30)
            events = bot.events()
            track = None
            while track is None:
                event = await asyncio.wait_for(anext(events), 30)
                if isinstance(event, TrackSubscribed):
                    track = event.track
            chunks = []
            for _ in range(50):  # 1 s of audio through the uvloop-driven server
                frame = await asyncio.wait_for(track.recv(), 10)
                chunks.append(frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0])
        finally:
            await bot.disconnect()
            await alice.disconnect()
        audio = np.concatenate(chunks[10:]).astype(np.float64)
        heard = peak_hz(audio, 48_000)
        assert abs(heard - 440.0) < 5, heard
        assert "event loop: uvloop" in server.log(), server.log()[-2000:]
