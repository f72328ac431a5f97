"""Real names through every path they travel (issue 21.3), as apps write them.

Twilio-video.js 2.36.0 speakers in Chromium named "Alice Smith", "José", "山田 太郎" and
"🎧 DJ" join a room created over the Video REST (official ``twilio`` client) as
"Daily Standup"; ``mixer-ext run`` joins it by that name.  Each name comes back exactly:
in the SDK's ``participantConnected``, in REST (listed, and fetched by identity and by
unique name in percent-encoded URLs), in the signed status callbacks, and as the keys of
the mix's metadata parsed from the HLS a player receives.  Names beyond Twilio's length
are refused with the same codes as before (53200 / 53100 to the SDK, 400/53100 over REST).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from twilio.base.exceptions import TwilioRestException

from mixer_ext.testing.wait import until
from tests.support.env import free_port
from tests.support.hls_reader import read_hls
from tests.support.process_util import Proc, metrics_text, processes
from tests.support.room_util import write_tone_wav
from tests.support.twilio_util import (
    browsers,
    callback_receiver,
    mixer_env,
    twilio_room,
    twilio_token,
    video_client,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROOM = "Daily Standup"
SPEAKERS = ["Alice Smith", "José", "山田 太郎", "🎧 DJ"]
MAX_DURATION = 14


async def test_real_names_round_trip_everywhere(tmp_path: Path, artifacts_dir: Path) -> None:
    wav = tmp_path / "mic.wav"
    write_tone_wav(wav, 600.0, 2.0, rate=48_000)
    hls_dir = tmp_path / "hls"
    hooks, hook_url, seen = await callback_receiver()
    try:
        async with (
            twilio_room() as room,
            browsers(room, wav, artifacts_dir / "twilio-names.log") as b,
        ):
            api = video_client(room)
            created = await asyncio.to_thread(
                api.rooms.create, unique_name=ROOM, status_callback=hook_url
            )
            assert created.unique_name == ROOM
            assert (await asyncio.to_thread(api.rooms(ROOM).fetch)).sid == created.sid
            cjk = await asyncio.to_thread(api.rooms.create, unique_name="会議室 🎉")
            assert (await asyncio.to_thread(api.rooms("会議室 🎉").fetch)).sid == cjk.sid
            listed = await asyncio.to_thread(api.rooms.list, unique_name="会議室 🎉")
            assert [r.sid for r in listed] == [cjk.sid]
            with pytest.raises(TwilioRestException) as long_name:
                await asyncio.to_thread(api.rooms.create, unique_name="会" * 65)
            assert (long_name.value.status, long_name.value.code) == (400, 53100)

            for n, name in enumerate(SPEAKERS):
                joined = await b.join(room, f"p{n}", twilio_token(name, ROOM), ROOM)
                assert joined.get("sid") == created.sid, joined
                assert joined["participants"] == SPEAKERS[:n]
            for name in SPEAKERS[1:]:
                await b.event("p0", "participantConnected", identity=name)
            reply = await b.join(room, "x", twilio_token("x" * 129, ROOM), ROOM)
            assert reply["error"]["code"] == 53200, reply
            reply = await b.join(room, "y", twilio_token("y", "r" * 129), "r" * 129)
            assert reply["error"]["code"] == 53100, reply

            participants = await asyncio.to_thread(api.rooms(ROOM).participants.list)
            assert sorted(p.identity for p in participants) == sorted(SPEAKERS)
            jose = await asyncio.to_thread(api.rooms(created.sid).participants("José").fetch)
            assert jose.identity == "José" and jose.status == "connected"

            metrics_port = free_port()
            env = mixer_env(room, hls_dir, metrics_port)
            context = {
                "room": {"name": ROOM},
                "outputs": ["hls:standup"],
                "maxParticipantDuration": MAX_DURATION,
            }
            with processes() as procs:
                worker = Proc(["run", "--context", json.dumps(context)], env, tmp_path / "w.log")
                procs.append(worker)
                deadline = time.monotonic() + 40
                while "mixer_inputs 4.0" not in (
                    await asyncio.to_thread(metrics_text, metrics_port)
                ):
                    assert time.monotonic() < deadline, worker.log()[-3000:]
                    await asyncio.sleep(0.5)
                rc = await asyncio.to_thread(worker.wait, 60)
                (artifacts_dir / "twilio-names-worker.log").write_text(worker.log())
                assert rc == 0, worker.log()[-3000:]
            await asyncio.to_thread(api.rooms(created.sid).update, status="completed")
            await until(lambda: any(e == "room-ended" for e, _, _ in seen), 10, "room-ended")
    finally:
        await hooks.cleanup()

    hls = read_hls(hls_dir / "standup")
    payloads = [p for _, p in hls.payloads]
    for name in SPEAKERS:
        assert any(p.levels.get(name, -1) > 1000 for p in payloads), (name, payloads[-1])
    assert all(ok for _, _, ok in seen), "a callback's X-Twilio-Signature did not validate"
    assert all(f["RoomName"] == ROOM for _, f, _ in seen)
    connected = [f["ParticipantIdentity"] for e, f, _ in seen if e == "participant-connected"]
    assert sorted(connected) == sorted([*SPEAKERS, "audio-mixer-v1"])
