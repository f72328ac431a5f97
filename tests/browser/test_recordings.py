"""Issue 23 done-when with twilio-video.js: a speaker in headless Chromium (the SDK 2.36.0)
and one on the project's protocol, in a room the official ``twilio`` client created with
``RecordParticipantsOnConnect=True``; after the room completes each recording decodes to its
speaker's tone, and a composition of the room holds both.  The SDK's ``room.isRecording``
and ``recordingStarted``/``recordingStopped`` follow the room's recordings."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from twilio.rest import Client

from mixer_ext.sim.tracks import ToneTrack
from mixer_ext.testing.timeline import decode_timeline, tone_level
from mixer_ext.testing.wait import until as wait_until
from tests.support.room_util import client, write_tone_wav
from tests.support.twilio_util import (
    ACCOUNT_SID,
    API_KEY_SECRET,
    API_KEY_SID,
    browsers,
    twilio_room,
    twilio_token,
)

#: the twilio client blocks: each check runs in a thread
until = partial(wait_until, within=30.0, every=0.2, blocking=True)


pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


def download(c: Client, url: str, to: Path) -> Path:
    resp = c.request("GET", url)
    assert resp.status_code == 302, resp.text
    with urllib.request.urlopen(json.loads(resp.text)["redirect_to"], timeout=10) as got:
        to.write_bytes(got.read())
    return to


async def test_twilio_video_js_and_own_protocol_speakers_recorded(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    wav = tmp_path / "mic.wav"
    write_tone_wav(wav, 500.0, 1.0, rate=48_000)
    media = {"MIXER_RECORDINGS_DIR": str(tmp_path / "media"), "MIXER_RECORDINGS_MIN_FREE_MB": "0"}
    with mock.patch.dict(os.environ, media):
        room_cm = twilio_room()
        room = await room_cm.__aenter__()
    try:
        async with browsers(room, wav, artifacts_dir / "twilio-recordings.log") as b:
            c = Client(API_KEY_SID, API_KEY_SECRET, ACCOUNT_SID)
            c.video.base_url = room.rest_url
            api = c.video.v1
            created = await asyncio.to_thread(
                api.rooms.create, unique_name="webrec", record_participants_on_connect=True
            )
            web = await b.join(room, "w", twilio_token("web", "webrec"), "webrec")
            assert "error" not in web, web
            # the SDK's room.isRecording follows the room's recordings (its track is being
            # recorded by the time connect() resolves)
            assert web["isRecording"] is True
            alice = client(
                room.server, "webrec", "alice", publish=ToneTrack(1000.0), auto_subscribe=False
            )
            await alice.connect()
            await asyncio.sleep(4.0)
            # Recording Rules excluding everyone: the SDK sees the recording stop
            await asyncio.to_thread(
                api.rooms(created.sid).recording_rules.update,
                rules=[{"type": "exclude", "all": True}],
            )
            stopped = await b.event("w", "recordingStopped")
            assert stopped["isRecording"] is False
            await asyncio.to_thread(
                api.rooms(created.sid).recording_rules.update,
                rules=[{"type": "include", "all": True}],
            )
            restarted = await b.event("w", "recordingStarted")
            assert restarted["isRecording"] is True
            await asyncio.sleep(1.0)
            await asyncio.to_thread(api.rooms(created.sid).update, status="completed")
            await alice.disconnect()

            def completed() -> list[Any]:
                recs = api.rooms(created.sid).recordings.list()
                ok = len(recs) == 4 and all(r.status == "completed" for r in recs)
                return recs if ok else []

            recs = sorted(await until(completed), key=lambda r: r.offset)
            web_pa = web["participant"]
            from_web = next(r for r in recs if r.grouping_sids["participant_sid"] == web_pa)
            from_alice = next(r for r in recs if r.grouping_sids["participant_sid"] != web_pa)
            assert from_web.source_sid == web["published"][0]
            pw = decode_timeline(
                await asyncio.to_thread(
                    download, c, f"{room.rest_url}/v1/Recordings/{from_web.sid}/Media",
                    tmp_path / "web.mka",
                )
            )  # fmt: skip
            pa = decode_timeline(
                await asyncio.to_thread(
                    download, c, f"{room.rest_url}/v1/Recordings/{from_alice.sid}/Media",
                    tmp_path / "alice.mka",
                )
            )  # fmt: skip
            end_w, end_a = len(pw) / 48_000, len(pa) / 48_000
            assert end_w >= 2.5 and end_a >= 2.5, (end_w, end_a)
            assert tone_level(pw, 500, 1.0, end_w - 0.3) > 0.02
            assert tone_level(pw, 1000, 1.0, end_w - 0.3) < 0.005
            assert tone_level(pa, 1000, 0.5, end_a - 0.3) > 0.1
            assert tone_level(pa, 500, 0.5, end_a - 0.3) < 0.005

            comp = await asyncio.to_thread(
                api.compositions.create, room_sid=created.sid, audio_sources=["*"], format="webm"
            )
            await until(lambda: api.compositions(comp.sid).fetch().status == "completed")
            pcm = decode_timeline(
                await asyncio.to_thread(
                    download, c, f"{room.rest_url}/v1/Compositions/{comp.sid}/Media",
                    tmp_path / "c.webm",
                ),
                keep_start=True,
            )  # fmt: skip
            # both were recorded in alice's first two seconds
            t0 = from_alice.offset / 1000 - recs[0].offset / 1000  # trimmed: from the first
            assert tone_level(pcm, 500, t0 + 0.5, t0 + 2.5) > 0.02
            assert tone_level(pcm, 1000, t0 + 0.5, t0 + 2.5) > 0.1
    finally:
        await room_cm.__aexit__(None, None, None)
