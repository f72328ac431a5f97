"""``mixer-ext talker`` as a user runs it, against a real in-process room server."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mixer_ext.connectors.base import ParticipantLeft, TrackEnabledChanged, TrackSubscribed
from tests.support.env import free_port, mixer_ext_cmd
from tests.support.room_util import (
    SECRET,
    client,
    next_event,
    record,
    room_server,
    spectrum_peak,
    write_tone_wav,
)

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


def talker_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXER_")}
    env.update({"MIXER_ROOM_URL": url, "MIXER_ROOM_SECRET": SECRET, **extra})
    return env


async def start_talker(url: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *mixer_ext_cmd(),
        "talker",
        *args,
        env=talker_env(url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_talker_tone_mute_unmute_leave() -> None:
    async with room_server() as server:
        listener = client(server, "t1", "listener")
        await listener.connect()
        events = listener.events()
        proc = await start_talker(
            server.url,
            *("--room", "t1", "--identity", "tony", "--tone", "880", "--level", "0.3"),
            *("--mute-at", "3", "--unmute-at", "4.5", "--leave-at", "6.5"),
        )
        try:
            sub = await next_event(events, TrackSubscribed, identity="tony", within=30)
            samples = await record(sub.track, 1.5)
            peak, rms = spectrum_peak(samples[len(samples) // 3 :])
            assert abs(peak - 880) < 8 and rms > 0.1, (peak, rms)
            assert not (await next_event(events, TrackEnabledChanged, identity="tony")).enabled
            assert (await next_event(events, TrackEnabledChanged, identity="tony")).enabled
            left = await next_event(events, ParticipantLeft, identity="tony", within=15)
            assert left.reason == "left"
            rc = await asyncio.wait_for(proc.wait(), 20)
            stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
            assert rc == 0, stderr
            assert SECRET not in stderr
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await listener.disconnect()


async def test_talker_plays_a_wav_file(tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    write_tone_wav(wav, 1200.0, 1.0)
    async with room_server() as server:
        listener = client(server, "t2", "listener")
        await listener.connect()
        events = listener.events()
        proc = await start_talker(
            server.url, "--room", "t2", "--identity", "wavy", "--wav", str(wav), "--duration", "5"
        )
        try:
            sub = await next_event(events, TrackSubscribed, identity="wavy", within=30)
            samples = await record(sub.track, 1.5)
            peak, rms = spectrum_peak(samples[len(samples) // 3 :])
            assert abs(peak - 1200) < 8 and rms > 0.1, (peak, rms)
            assert await asyncio.wait_for(proc.wait(), 20) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await listener.disconnect()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--tone", "5"], {}, "tone frequency must be 20..20000 Hz"),
        (["--wav", "/nonexistent.wav"], {}, "--wav: /nonexistent.wav is not a file"),
        (["--tone", "440", "--unmute-at", "2"], {}, "--unmute-at needs --mute-at"),
        (["--tone", "440"], {"MIXER_ROOM_SECRET": ""}, "MIXER_ROOM_SECRET is not set"),
        (["--tone", "440"], {"MIXER_ROOM_URL": "ws://127.0.0.1:PORT"}, "cannot reach"),
        (["--tone", "440", "--token", "forged"], {}, "unauthorized"),
    ],
)
async def test_talker_bad_input_is_one_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    async with room_server() as server:
        env = {k: v.replace("PORT", str(free_port())) for k, v in env.items()}
        proc = await asyncio.create_subprocess_exec(
            *mixer_ext_cmd(),
            "talker",
            "--room",
            "t3",
            "--identity",
            "x",
            *args,
            env=talker_env(server.url, **env),
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        lines = err.decode().strip().splitlines()
        assert proc.returncode == 2
        assert len(lines) == 1 and message in lines[0], lines
