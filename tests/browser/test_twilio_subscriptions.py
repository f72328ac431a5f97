"""Twilio's Track Subscriptions API: the official ``twilio`` client (9.x) sets a
twilio-video.js subscriber's Subscribe Rules and the SDK in Chromium follows them.

carol connects with ``automaticSubscription: false``; dave (twilio-video.js) and a bot on the
project's own protocol publish.  Rules given over REST subscribe and unsubscribe carol's live
session (the server renegotiates); SubscribedTracks, PublishedTracks/{MT}, Anonymize answer as
Twilio's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from mixer_ext.sim.tracks import ToneTrack
from mixer_ext.testing.wait import until
from tests.support.room_util import client, write_tone_wav
from tests.support.twilio_util import (
    ACCOUNT_SID,
    API_KEY_SECRET,
    API_KEY_SID,
    TwilioRoom,
    browsers,
    twilio_room,
    twilio_token,
)


def video_client(room: TwilioRoom) -> Any:
    c = Client(API_KEY_SID, API_KEY_SECRET, ACCOUNT_SID)
    c.video.base_url = room.rest_url
    return c.video.v1


@pytest.mark.timeout(150)
async def test_subscribe_rules_drive_a_live_sdk_subscriber(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    wav = tmp_path / "mic.wav"
    write_tone_wav(wav, 600.0, 1.0, rate=48_000)
    log = artifacts_dir / "twilio-subscriptions.log"
    async with twilio_room() as room, browsers(room, wav, log) as b:
        api = video_client(room)
        created = await asyncio.to_thread(api.rooms.create, unique_name="subs")
        carol = await b.join(
            room, "c", twilio_token("carol", "subs"), "subs", automaticSubscription=False
        )
        assert "error" not in carol, carol
        dave = await b.join(room, "d", twilio_token("dave", "subs"), "subs")
        assert "error" not in dave, dave
        dave_mt = dave["published"][0]
        bot = client(room.server, "subs", "bot", publish=ToneTrack(900.0), auto_subscribe=False)
        await bot.connect()
        await b.event("c", "participantConnected", identity="bot")
        await until(lambda: room.server.rooms["subs"].participants["bot"].tracks, 15, "bot track")
        people = api.rooms(created.sid).participants
        c_sid = carol["participant"]
        rules = people(c_sid).subscribe_rules

        shown = await asyncio.to_thread(rules.fetch)
        assert shown.rules == [{"type": "exclude", "all": True}]  # automaticSubscription false
        assert await asyncio.to_thread(people(c_sid).subscribed_tracks.list) == []

        # include dave: carol's SDK subscribes to his track, and only his
        await asyncio.to_thread(rules.update, rules=[{"type": "include", "publisher": "dave"}])
        got = await b.event("c", "trackSubscribed", identity="dave", within=30)
        assert got["sid"] == dave_mt
        listed = await asyncio.to_thread(people(c_sid).subscribed_tracks.list)
        assert [(t.sid, t.publisher_sid, t.kind) for t in listed] == [
            (dave_mt, dave["participant"], "audio")
        ]
        one = await asyncio.to_thread(people(c_sid).subscribed_tracks(dave_mt).fetch)
        assert (one.participant_sid, one.publisher_sid) == (c_sid, dave["participant"])
        published = await asyncio.to_thread(
            people(dave["participant"]).published_tracks(dave_mt).fetch
        )
        assert (published.sid, published.kind, published.enabled) == (dave_mt, "audio", True)
        shown = await asyncio.to_thread(rules.fetch)
        assert shown.rules == [{"type": "include", "publisher": "dave"}]

        # everyone but dave: the last matching rule decides
        await asyncio.to_thread(
            rules.update,
            rules=[{"type": "include", "all": True}, {"type": "exclude", "publisher": "dave"}],
        )
        await b.event("c", "trackUnsubscribed", identity="dave", within=30)
        await b.event("c", "trackSubscribed", identity="bot", within=30)
        listed = await asyncio.to_thread(people(c_sid).subscribed_tracks.list)
        assert [t.publisher_sid for t in listed] == [
            room.server.rooms["subs"].participants["bot"].sid
        ]

        # a track published after the update follows the rules too
        eve = client(room.server, "subs", "eve", publish=ToneTrack(1200.0), auto_subscribe=False)
        await eve.connect()
        await b.event("c", "trackSubscribed", identity="eve", within=30)

        with pytest.raises(TwilioRestException) as bad:
            await asyncio.to_thread(rules.update, rules=[{"type": "include", "kind": "smell"}])
        assert bad.value.status == 400 and "kind" in str(bad.value.msg)
        with pytest.raises(TwilioRestException) as connected:
            await asyncio.to_thread(people(c_sid).anonymize().update)
        assert connected.value.status == 400

        await b.command("d", "leave")
        await until(lambda: "dave" not in room.server.rooms["subs"].participants, 15, "dave left")
        anon = await asyncio.to_thread(people(dave["participant"]).anonymize().update)
        assert anon.identity == dave["participant"] and anon.status == "disconnected"
        await bot.disconnect()
        await eve.disconnect()
