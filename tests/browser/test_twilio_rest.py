"""The Video Rooms REST subset, driven by the official ``twilio`` client (9.x), with
twilio-video.js in Chromium and a participant on the project's own protocol in the room.

The client is synchronous (requests), so it runs in a thread beside the server's loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from twilio.base.exceptions import TwilioRestException

from mixer_ext.connectors.base import Disconnected
from mixer_ext.testing.wait import until
from tests.support.room_util import client, next_event, token, write_tone_wav
from tests.support.twilio_util import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    browsers,
    callback_receiver,
    twilio_room,
    twilio_token,
    video_client,
)

pytestmark = pytest.mark.timeout(150)


async def test_rooms_participants_tracks_and_callbacks(tmp_path: Path, artifacts_dir: Path) -> None:
    wav = tmp_path / "mic.wav"
    write_tone_wav(wav, 500.0, 1.0, rate=48_000)
    hooks, hook_url, seen = await callback_receiver()
    try:
        async with (
            twilio_room() as room,
            browsers(room, wav, artifacts_dir / "twilio-rest.log") as b,
        ):
            api = video_client(room)
            created = await asyncio.to_thread(
                api.rooms.create,
                unique_name="town",
                type="group",
                max_participants=5,
                max_participant_duration=3600,
                empty_room_timeout=2,
                status_callback=hook_url,
            )
            assert created.sid.startswith("RM") and len(created.sid) == 34
            assert (created.status, created.unique_name, created.max_participants) == (
                "in-progress",
                "town",
                5,
            )
            by_name = await asyncio.to_thread(api.rooms("town").fetch)
            assert by_name.sid == created.sid
            with pytest.raises(TwilioRestException) as dup:
                await asyncio.to_thread(api.rooms.create, unique_name="town")
            assert (dup.value.status, dup.value.code) == (400, 53113)

            # a grant naming the room by its SID, as Twilio allows
            alice = await b.join(room, "a", twilio_token("alice", created.sid), "town")
            assert alice.get("sid") == created.sid, alice
            bob = await b.join(room, "b", twilio_token("bob", "town"), "town")
            assert "error" not in bob, bob
            bot = client(room.server, "town", "bot")
            await bot.connect()
            bot_events = bot.events()

            participants = await asyncio.to_thread(api.rooms(created.sid).participants.list)
            assert sorted(p.identity for p in participants) == ["alice", "bob", "bot"]
            a = next(p for p in participants if p.identity == "alice")
            assert a.sid == alice["participant"] and a.status == "connected"
            tracks = await asyncio.to_thread(
                api.rooms(created.sid).participants(a.sid).published_tracks.list
            )
            assert [(t.sid, t.kind) for t in tracks] == [(alice["published"][0], "audio")]

            kicked = await asyncio.to_thread(
                api.rooms(created.sid).participants(a.sid).update, status="disconnected"
            )
            assert kicked.status == "disconnected"
            gone = await b.event("a", "disconnected")
            assert gone["error"] is None  # removed, not an error
            left = await asyncio.to_thread(
                api.rooms(created.sid).participants.list, status="disconnected"
            )
            assert [p.identity for p in left] == ["alice"]

            listed = await asyncio.to_thread(api.rooms.list, status="in-progress")
            assert created.sid in [x.sid for x in listed]
            done = await asyncio.to_thread(api.rooms(created.sid).update, status="completed")
            assert done.status == "completed" and done.end_time is not None
            ended = await b.event("b", "disconnected")
            assert ended["error"]["code"] == 53118
            bye = await next_event(bot_events, Disconnected, within=10)
            assert bye.reason == "room-ended"
            assert (await asyncio.to_thread(api.rooms(created.sid).fetch)).status == "completed"
            with pytest.raises(TwilioRestException) as missing:
                await asyncio.to_thread(api.rooms("town").fetch)
            assert (missing.value.status, missing.value.code) == (404, 20404)

            # paging: the client follows next_page_url
            for n in range(3):
                await asyncio.to_thread(api.rooms.create, unique_name=f"page-{n}")
            names = [x.unique_name for x in await asyncio.to_thread(api.rooms.list, page_size=2)]
            assert sorted(names) == ["page-0", "page-1", "page-2", "town"]

            with pytest.raises(TwilioRestException) as denied:
                await asyncio.to_thread(
                    video_client(room, password="wrong").rooms(created.sid).fetch
                )
            assert (denied.value.status, denied.value.code) == (401, 20003)
            by_token = video_client(room, ACCOUNT_SID, AUTH_TOKEN)
            assert len(await asyncio.to_thread(by_token.rooms.list, limit=1)) == 1

            await until(lambda: any(e == "room-ended" for e, _, _ in seen), 10, "room-ended")
    finally:
        await hooks.cleanup()
    events = [e for e, _, _ in seen]
    assert all(ok for _, _, ok in seen), "a callback's X-Twilio-Signature did not validate"
    assert events[0] == "room-created" and events[-1] == "room-ended"
    connected = [f["ParticipantIdentity"] for e, f, _ in seen if e == "participant-connected"]
    assert sorted(connected) == ["alice", "bob", "bot"]
    assert "track-added" in events and "participant-disconnected" in events
    assert [int(f["SequenceNumber"]) for _, f, _ in seen] == list(range(len(seen)))
    assert token  # (the project's own tokens stay for its own protocol)
