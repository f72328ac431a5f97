"""Data tracks between twilio-video.js 2.36.0 participants in Chromium (issue 22.1).

Alice publishes two ``LocalDataTrack``s (a reliable ordered "chat", an unordered
"cursor" with ``maxRetransmits: 2``); Bob receives strings and binary messages as
``RemoteDataTrack`` ``message`` events, in order on "chat", and his tracks carry the
publisher's delivery settings.  A flooder loses what is over its rate limit alone: Bob's
messages still reach Alice, and Alice's later messages pass again.  Unpublishing a data
track unsubscribes it; the other goes on.  ``room.isRecording``
is false (nothing records in this room).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from mixer_ext.testing.wait import until
from tests.support.room_util import write_tone_wav
from tests.support.twilio_util import Browsers, browsers, twilio_room, twilio_token, video_client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

#: collects every data message the page receives, as text ("bin:1,2,3" for binary)
LISTEN = """() => {
  window.got = [];
  const hook = (p) => p.on("trackSubscribed", (t) => {
    if (t.kind !== "data") return;
    window.got.push({ track: t.name, subscribed: true, ordered: t.ordered,
      maxRetransmits: t.maxRetransmits, maxPacketLifeTime: t.maxPacketLifeTime });
    t.on("message", (m) => window.got.push({ track: t.name, from: p.identity,
      m: typeof m === "string" ? m : "bin:" + Array.from(new Uint8Array(m)).join(",") }));
  });
  window.room.participants.forEach(hook);
  window.room.on("participantConnected", hook);
  return true;
}"""

PUBLISH = """async () => {
  const lp = window.room.localParticipant;
  window.chat = new Twilio.Video.LocalDataTrack({ name: "chat" });
  window.cursor = new Twilio.Video.LocalDataTrack(
    { name: "cursor", ordered: false, maxRetransmits: 2 });
  const pubs = [await lp.publishTrack(window.chat), await lp.publishTrack(window.cursor)];
  return pubs.map((p) => p.trackSid);
}"""

SAY = "() => { window.chat.send('TEXT'); return true; }"


async def _got(b: Browsers, pid: str) -> list[dict[str, Any]]:
    got = await b.command(pid, "eval", expr="() => window.got")
    assert isinstance(got, list), got
    return got


async def _page_until(
    b: Browsers, pid: str, check: Any, within: float = 20.0
) -> list[dict[str, Any]]:
    got = await until(lambda: _got(b, pid), within, f"{pid}'s page to match", ok=check, every=0.3)
    return list(got)


async def test_data_tracks_reach_the_other_browser_and_a_flooder_is_limited(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    wav = tmp_path / "a.wav"
    write_tone_wav(wav, 520.0, 2.0, rate=48_000)
    async with (
        twilio_room() as room,
        browsers(room, wav, artifacts_dir / "twilio-data.log") as b,
    ):
        bob = await b.join(room, "b", twilio_token("bob", "data"), "data")
        assert "error" not in bob, bob
        assert bob["isRecording"] is False  # nothing records in this room (issue 22.7)
        assert await b.command("b", "eval", expr=LISTEN) is True
        alice = await b.join(room, "a", twilio_token("alice", "data"), "data")
        assert "error" not in alice, alice
        assert alice["isRecording"] is False
        assert await b.command("a", "eval", expr=LISTEN) is True

        sids = await b.command("a", "eval", within=30, expr=PUBLISH)
        assert isinstance(sids, list) and all(str(s).startswith("MT") for s in sids), sids
        got = await _page_until(b, "b", lambda g: sum(1 for x in g if x.get("subscribed")) == 2)
        settings = {x["track"]: x for x in got if x.get("subscribed")}
        assert settings["chat"]["ordered"] is True
        assert settings["chat"]["maxRetransmits"] is None
        assert settings["cursor"]["ordered"] is False
        assert settings["cursor"]["maxRetransmits"] == 2
        # the official client lists them as Twilio did: kind "data", beside the audio
        api = video_client(room)
        listed = await asyncio.to_thread(
            api.rooms(alice["sid"]).participants("alice").published_tracks.list
        )
        assert sorted((t.kind, t.name) for t in listed if t.kind == "data") == [
            ("data", "chat"),
            ("data", "cursor"),
        ], [(t.kind, t.name) for t in listed]

        send = """() => {
          for (let i = 0; i < 20; i++) window.chat.send("chat " + i);
          window.chat.send(new Uint8Array([1, 2, 3, 250]).buffer);
          for (let i = 0; i < 5; i++) window.cursor.send("xy " + i);
          return true;
        }"""
        assert await b.command("a", "eval", expr=send) is True
        got = await _page_until(b, "b", lambda g: sum(1 for x in g if "m" in x) >= 26)
        chat = [x["m"] for x in got if x.get("track") == "chat" and "m" in x]
        assert chat == [f"chat {i}" for i in range(20)] + ["bin:1,2,3,250"], chat
        cursor = sorted(x["m"] for x in got if x.get("track") == "cursor" and "m" in x)
        assert cursor == [f"xy {i}" for i in range(5)], cursor
        assert all(x["from"] == "alice" for x in got if "m" in x)

        # Alice floods: 400 messages at once, far over the burst (60 by default, 26 spent)
        flood = """() => {
          for (let i = 0; i < 400; i++) window.chat.send("flood " + i);
          return true;
        }"""
        assert await b.command("a", "eval", expr=flood) is True
        await asyncio.sleep(2.0)
        flooded = [x for x in await _got(b, "b") if str(x.get("m", "")).startswith("flood ")]
        assert 10 <= len(flooded) <= 120, len(flooded)
        # ... Bob is not limited by it: his track reaches Alice
        bob_publish = """async () => {
          window.chat = new Twilio.Video.LocalDataTrack({ name: "chat" });
          await window.room.localParticipant.publishTrack(window.chat);
          return true;
        }"""
        assert await b.command("b", "eval", within=30, expr=bob_publish) is True
        await _page_until(b, "a", lambda g: any(x.get("subscribed") for x in g))
        assert await b.command("b", "eval", expr=SAY.replace("TEXT", "hi alice"))
        await _page_until(b, "a", lambda g: any(x.get("m") == "hi alice" for x in g))
        # ... and Alice, once her bucket refilled, is heard again; she stayed connected
        assert await b.command("a", "eval", expr=SAY.replace("TEXT", "after"))
        await _page_until(b, "b", lambda g: any(x.get("m") == "after" for x in g))
        # Alice unpublishes "cursor": Bob's RemoteDataTrack goes (trackUnsubscribed)
        unpublish = """() => {
          window.room.localParticipant.unpublishTrack(window.cursor);
          return true;
        }"""
        assert await b.command("a", "eval", expr=unpublish) is True
        deadline = time.monotonic() + 20
        while not any(
            e["id"] == "b" and e["event"] == "trackUnsubscribed" and e.get("name") == "cursor"
            for e in b.events
        ):
            assert time.monotonic() < deadline, b.events
            await asyncio.sleep(0.2)
        assert await b.command("a", "eval", expr=SAY.replace("TEXT", "still here")) is True
        await _page_until(b, "b", lambda g: any(x.get("m") == "still here" for x in g))
        assert not [e for e in b.events if e["event"] == "disconnected"], b.events
