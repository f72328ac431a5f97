"""``mixer-ext run`` mixes two twilio-video.js speakers (Chromium, fake-mic tones) into HLS.

The speakers join through ``/signaling`` with helper-library tokens; the bot joins the same
room on the project's protocol; the HLS a player would receive holds both tones, both
identities in the timed metadata, and ``-1`` while one of them has ``track.disable()``d.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import pytest

from mixer_ext.testing.spectrum import tone_levels
from tests.support.env import free_port
from tests.support.hls_reader import read_hls, runs_where
from tests.support.process_util import Proc, metrics_text, processes
from tests.support.room_util import write_tone_wav
from tests.support.twilio_util import browsers, mixer_env, twilio_room, twilio_token

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

TONES = {"alice": 520.0, "bob": 780.0}
NO_VOICE_PROCESSING = {
    "echoCancellation": False,
    "noiseSuppression": False,
    "autoGainControl": False,
}
MAX_DURATION = 16


async def test_mixer_mixes_twilio_video_speakers(tmp_path: Path, artifacts_dir: Path) -> None:
    wavs = {}
    for name, hz in TONES.items():
        wavs[name] = tmp_path / f"{name}.wav"
        write_tone_wav(wavs[name], hz, 2.0, rate=48_000)
    hls_dir = tmp_path / "hls"
    async with (
        twilio_room() as room,
        browsers(room, wavs["alice"], artifacts_dir / "twilio-mix-a.log") as ba,
        browsers(room, wavs["bob"], artifacts_dir / "twilio-mix-b.log") as bb,
    ):
        sids = set()
        for b, name in ((ba, "alice"), (bb, "bob")):
            # alice lets the SDK take the microphone and the camera itself, as most apps do
            # (the camera fails alone, 21.2), with the voice processing off as an audio app
            # asks for it: with the browser's defaults the fake tone fades to a tenth of bob's
            # and sits at this test's threshold (test_twilio_camera covers the bare defaults)
            camera = {"audio": NO_VOICE_PROCESSING, "video": True} if name == "alice" else {}
            joined = await b.join(room, name, twilio_token(name, "town"), "town", **camera)
            assert "error" not in joined, joined
            sids.add(joined["sid"])
        (room_sid,) = sids
        metrics_port = free_port()
        env = mixer_env(room, hls_dir, metrics_port)
        context = {
            "room": {"name": room_sid},  # the RM SID, as the hosted extension was given
            "outputs": ["hls:town"],
            "maxParticipantDuration": MAX_DURATION,
        }
        with processes() as procs:
            worker = Proc(["run", "--context", json.dumps(context)], env, tmp_path / "w.log")
            procs.append(worker)
            deadline = time.monotonic() + 40
            while "mixer_inputs 2.0" not in (await asyncio.to_thread(metrics_text, metrics_port)):
                assert time.monotonic() < deadline, worker.log()[-3000:]
                await asyncio.sleep(0.5)
            await asyncio.sleep(3)
            await ba.command("alice", "disable")
            await asyncio.sleep(3)
            await ba.command("alice", "enable")
            rc = await asyncio.to_thread(worker.wait, 60)
            (artifacts_dir / "twilio-mix-worker.log").write_text(worker.log())
            assert rc == 0, worker.log()[-3000:]

    shutil.copytree(hls_dir, artifacts_dir / "twilio-mix-hls", dirs_exist_ok=True)
    hls = read_hls(hls_dir / "town")
    assert hls.ended, hls.playlist
    levels = tone_levels(hls.audio, hls.sample_rate, [*TONES.values(), 650.0])
    noise = levels.pop(650.0)
    for hz, amplitude in levels.items():
        assert amplitude > 0.02 and amplitude > 20 * noise, (hz, levels, noise)
    payloads = [p for _, p in hls.payloads]
    for name in TONES:
        assert any(p.levels.get(name, -1) > 1000 for p in payloads), name
    alice = [p.levels.get("alice", -2) for p in payloads]
    talking = next(i for i, v in enumerate(alice) if v > 1000)
    muted = runs_where(alice[talking:], lambda v: v == -1)
    assert any(length >= 4 for _, length in muted), alice  # ~3 s: about 6 payloads of -1
    assert alice[-1] > 1000, "alice talks again after enable()"
