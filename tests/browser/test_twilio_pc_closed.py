"""A closed server-side peer connection is a departure (issue 21.6), whatever closed it.

Three twilio-video.js 2.36.0 clients in a room; the server's peer connection of one of
them is closed under it (as aiortc does when it gives up on a path, or a crowd starves the
loop).  The other two stay connected and see it leave (``participantDisconnected``), the
Video REST no longer lists it as connected, it is told (``disconnected`` with an error),
and a renegotiation afterwards (a fourth client joins, everyone subscribes to it) costs
nobody else their session.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.support.room_util import write_tone_wav
from tests.support.twilio_util import browsers, twilio_room, twilio_token, video_client

pytestmark = pytest.mark.timeout(150)

ROOM = "crowd"


async def test_a_closed_peer_connection_is_a_departure(tmp_path: Path, artifacts_dir: Path) -> None:
    wav = tmp_path / "mic.wav"
    write_tone_wav(wav, 440.0, 1.0, rate=48_000)
    async with (
        twilio_room() as room,
        browsers(room, wav, artifacts_dir / "twilio-pc-closed.log") as b,
    ):
        api = video_client(room)
        names = {"a": "alice", "b": "bob", "c": "carol"}
        for pid, name in names.items():
            joined = await b.join(room, pid, twilio_token(name, ROOM), ROOM)
            assert "error" not in joined, joined
        for pid, name in (("a", "carol"), ("b", "carol"), ("c", "alice")):
            await b.event(pid, "trackSubscribed", identity=name)

        carol = room.server.sessions[(ROOM, "carol")]
        await carol.pc.close()  # type: ignore[attr-defined]

        # at once: not when the client's own ICE checks notice, seconds later
        deadline = time.monotonic() + 2
        while True:
            listed = await asyncio.to_thread(api.rooms(ROOM).participants.list, status="connected")
            if sorted(p.identity for p in listed) == ["alice", "bob"]:
                break
            assert time.monotonic() < deadline, [p.identity for p in listed]
            await asyncio.sleep(0.1)
        for pid in ("a", "b"):
            await b.event(pid, "participantDisconnected", identity="carol", within=3)
        told = await b.event("c", "disconnected", within=3)
        assert told["error"] is not None, told

        dave = await b.join(room, "d", twilio_token("dave", ROOM), ROOM)
        assert "error" not in dave, dave
        assert sorted(dave["participants"]) == ["alice", "bob"]
        for pid in ("a", "b"):
            await b.event(pid, "trackSubscribed", identity="dave", within=20)
        await asyncio.sleep(2)
        ended = [e for e in b.events if e["event"] == "disconnected" and e["id"] != "c"]
        assert ended == [], ended
