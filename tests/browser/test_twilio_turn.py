"""TURN: a real coturn (Debian's ``turnserver``) on loopback with a shared secret, the room
server handing out time-limited credentials in the ``iced`` answer, and twilio-video.js in
Chromium forced to relay (``iceTransportPolicy: 'relay'``): its tone is heard by a listener
on the project's own protocol (FFT), and coturn logs the allocation of the credential made
for ``expiry:alice``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path
from unittest import mock

import aiohttp
import pytest

from mixer_ext.connectors.base import TrackSubscribed
from mixer_ext.connectors.factory import make_connector
from mixer_ext.testing.net import free_port
from mixer_ext.testing.wait import until
from tests.support.env import require_program
from tests.support.room_util import (
    bearer,
    client,
    next_event,
    record,
    settings,
    spectrum_peak,
    token,
    write_tone_wav,
)
from tests.support.twilio_util import browsers, twilio_room, twilio_token

TONE_HZ = 650.0


@pytest.mark.timeout(150)
async def test_a_relayed_sdk_speaker_is_heard(tmp_path: Path, artifacts_dir: Path) -> None:
    turnserver = require_program("turnserver", package="coturn")
    port = free_port()
    relay_lo = free_port()
    secret = secrets.token_hex(16)
    conf = tmp_path / "turnserver.conf"
    log = tmp_path / "turn.log"
    # the secret goes in a file, never on argv
    conf.write_text(
        "\n".join(
            [
                "listening-ip=127.0.0.1",
                "relay-ip=127.0.0.1",
                f"listening-port={port}",
                f"min-port={relay_lo}",
                f"max-port={min(65535, relay_lo + 200)}",
                "use-auth-secret",
                f"static-auth-secret={secret}",
                "realm=mixer-ext.test",
                "no-tls",
                "no-dtls",
                "no-cli",
                "allow-loopback-peers",
                "fingerprint",
                "simple-log",
                "verbose",
                f"log-file={log}",
                f"pidfile={tmp_path / 'turn.pid'}",
                f"userdb={tmp_path / 'turndb'}",
                "no-stdout-log",
                "",
            ]
        )
    )
    proc = await asyncio.create_subprocess_exec(
        turnserver,
        "-c",
        str(conf),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while "Total General servers" not in (log.read_text() if log.exists() else ""):
            assert proc.returncode is None, "turnserver exited"
            assert time.monotonic() < deadline, "turnserver did not start"
            await asyncio.sleep(0.1)

        wav = tmp_path / "mic.wav"
        write_tone_wav(wav, TONE_HZ, 2.0, rate=48_000)
        env = {
            "MIXER_ICE_TURN_URLS": f"turn:127.0.0.1:{port}?transport=udp",
            "MIXER_ICE_TURN_SECRET": secret,
        }
        ice_settings = {
            "ice_turn_urls": env["MIXER_ICE_TURN_URLS"],
            "ice_turn_secret": secret,
        }
        with mock.patch.dict(os.environ, env):
            room_cm = twilio_room()
            room = await room_cm.__aenter__()
        try:
            async with browsers(room, wav, artifacts_dir / "twilio-turn.log") as b:
                listener = client(room.server, "relayed", "listener")
                await listener.connect()
                events = listener.events()
                alice = await b.join(
                    room,
                    "a",
                    twilio_token("alice", "relayed"),
                    "relayed",
                    iceTransportPolicy="relay",
                )
                assert "error" not in alice, alice
                sub = await next_event(events, TrackSubscribed, identity="alice", within=40)
                samples = await record(sub.track, 2.5)
                peak, rms = spectrum_peak(samples[len(samples) // 3 :])
                assert abs(peak - TONE_HZ) < 8, f"heard {peak:.1f} Hz through TURN"
                assert rms > 0.02, f"tone too quiet (rms {rms:.4f})"
                await listener.disconnect()

                # the project's own clients: /v1/config, TURN only with a valid room token
                config_url = f"{room.server.url}/v1/config?room=relayed"
                async with aiohttp.ClientSession() as http:
                    async with http.get(config_url) as resp:
                        anonymous = (await resp.json())["iceServers"]
                    async with http.get(
                        config_url, headers=bearer(token("relayed", "zoe"))
                    ) as resp:
                        named = (await resp.json())["iceServers"]
                assert anonymous == []
                assert named[0]["urls"] == [f"turn:127.0.0.1:{port}?transport=udp"]
                assert named[0]["username"].endswith(":zoe")

                # the mixer's own connection (as mixer-ext run makes it) allocates on coturn
                mixer = make_connector(
                    settings(room_url=room.server.url, **ice_settings), "relayed", "audio-mixer-v1"
                )
                await mixer.connect()
                await until(
                    lambda: (
                        ":audio-mixer-v1>: incoming packet ALLOCATE processed, success"
                        in log.read_text()
                    ),
                    20,
                    "the mixer's TURN allocation",
                )
                await mixer.disconnect()
        finally:
            await room_cm.__aexit__(None, None, None)
        text = log.read_text()
        assert ":alice>: incoming packet ALLOCATE processed, success" in text, text[-3000:]
        assert ":alice>: incoming packet CHANNEL_BIND processed, success" in text
        assert secret not in text
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
