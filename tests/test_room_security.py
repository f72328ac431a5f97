"""Room server security (issue 16, items 1-4): failing tests first, real server and peers.

Each test is ``xfail(strict=True)`` until its fix lands (in
``mixer_ext/roomserver/app.py`` and ``tokens.py``);
strict, so a fix that makes one pass must also remove its marker.  The limits
they expect are those of ``mixer_ext.roomserver.limits``.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import jwt
import pytest

from mixer_ext.connectors.base import TrackSubscribed
from mixer_ext.connectors.embedded import EmbeddedRoomConnector
from mixer_ext.roomserver import protocol as p
from mixer_ext.roomserver.app import RoomServer
from mixer_ext.roomserver.tokens import TokenError, verify_token
from mixer_ext.sim.tracks import ToneTrack
from tests.room_util import (
    SECRET,
    client,
    next_event,
    record,
    room_server,
    settings,
    spectrum_peak,
    token,
)

pytestmark = pytest.mark.timeout(60)

ADMIN = "admin-token-0123456789abcdef0123456789"
MIXER = "audio-mixer-v1"


def role_token(room: str, identity: str, role: str, ttl: float = 600) -> str:
    """A token with a ``role`` claim, as the fixed ``mint_token(..., role=...)`` will make."""
    now = time.time()
    claims = {"iss": "mixer-ext", "room": room, "sub": identity, "role": role}
    return jwt.encode({**claims, "iat": int(now), "exp": now + ttl}, SECRET, algorithm="HS256")


def issue16(what: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"issue 16: {what}")


@issue16("a set-enabled flood fills the victims' outboxes and disconnects them")
async def test_set_enabled_flood_disconnects_only_the_flooder() -> None:
    async with room_server() as server:
        bot = EmbeddedRoomConnector(server.url, "f1", MIXER, role_token("f1", MIXER, "mixer"))
        await bot.connect()
        events = bot.events()
        alice = client(server, "f1", "alice", publish=ToneTrack(440.0), auto_subscribe=False)
        bob = client(server, "f1", "bob", publish=ToneTrack(660.0), auto_subscribe=False)
        flooder = client(server, "f1", "mallory", publish=ToneTrack(1000.0), auto_subscribe=False)
        for c in (alice, bob, flooder):
            await c.connect()
        tracks = {}
        while len(tracks) < 3:
            ev = await next_event(events, TrackSubscribed)
            tracks[ev.identity] = ev.track
        # one write burst of toggles, as one 64 KiB read hands them to the server
        toggles = [p.encode(p.SetEnabled(enabled=i % 2 == 0)) for i in range(3000)]
        started = time.monotonic()
        await asyncio.gather(*(flooder.send_raw(t) for t in toggles), return_exceptions=True)
        reason = await asyncio.wait_for(flooder.wait_closed(), 5)
        assert time.monotonic() - started < 1.5, f"flooder still connected ({reason})"
        await asyncio.sleep(1.0)
        present = set(server.rooms["f1"].participants)
        assert present == {MIXER, "alice", "bob"}, present
        for who, hz in (("alice", 440.0), ("bob", 660.0)):
            samples = await record(tracks[who], 1.0)
            peak, rms = spectrum_peak(samples[len(samples) // 4 :])
            assert abs(peak - hz) < 8 and rms > 0.05, (who, peak, rms)
        for c in (alice, bob):
            await c.disconnect()
        await bot.disconnect()


async def test_open_mode_refuses_the_mixer_identity() -> None:
    async with room_server(open_mode=True) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as http:
            body = {"room": "o1", "identity": MIXER}
            async with http.post(f"{base}/v1/token", json=body) as resp:
                assert resp.status == 403
        # and a participant token for that identity is refused at join
        intruder = client(server, "o1", MIXER, tok=token("o1", MIXER))
        with pytest.raises(Exception, match=r"unauthorized|reserved"):
            await intruder.connect()
        await intruder.disconnect()


@issue16("REST reads of a room need no credential")
async def test_rest_reads_need_a_room_token_or_the_admin_token() -> None:
    server = RoomServer(settings(room_admin_token=ADMIN), "127.0.0.1", 0)
    await server.start()
    try:
        a = client(server, "g1", "a")
        await a.connect()
        url = f"http://127.0.0.1:{server.port}/v1/rooms/g1/participants"
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as resp:
                assert resp.status == 401
            other_room = {"Authorization": f"Bearer {token('g2', 'x')}"}
            async with http.get(url, headers=other_room) as resp:
                assert resp.status in (401, 403)
            for bearer in (token("g1", "x"), ADMIN):
                async with http.get(url, headers={"Authorization": f"Bearer {bearer}"}) as resp:
                    assert resp.status == 200
        await a.disconnect()
    finally:
        await server.stop()


@issue16("ending a room takes the signing secret instead of an admin credential")
async def test_ending_a_room_needs_the_admin_token() -> None:
    server = RoomServer(settings(room_admin_token=ADMIN), "127.0.0.1", 0)
    await server.start()
    try:
        a = client(server, "e1", "a")
        await a.connect()
        url = f"http://127.0.0.1:{server.port}/v1/rooms/e1/end"
        async with aiohttp.ClientSession() as http:
            for bearer in (SECRET, token("e1", "a"), role_token("e1", MIXER, "mixer")):
                async with http.post(url, headers={"Authorization": f"Bearer {bearer}"}) as resp:
                    assert resp.status in (401, 403)
            async with http.post(url, headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
                assert resp.status == 200
        assert await asyncio.wait_for(a.wait_closed(), 10) == "room-ended"
    finally:
        await server.stop()


def test_verify_refuses_a_token_that_lives_too_long() -> None:
    long_lived = role_token("t1", "alice", "participant", ttl=40 * 86_400)
    with pytest.raises(TokenError, match="lifetime"):
        verify_token(SECRET, long_lived, "t1")


@issue16("an unjoined socket may stay 10 s and send errors for ever")
async def test_join_timeout_and_errors_before_join_close_the_socket() -> None:
    server = RoomServer(
        settings(room_join_timeout=1.0, room_max_errors_before_join=3), "127.0.0.1", 0
    )
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            silent = await http.ws_connect(server.url + p.SIGNAL_PATH)
            started = time.monotonic()
            while not (await silent.receive(timeout=5)).type.name.startswith("CLOS"):
                pass
            assert time.monotonic() - started < 2.0
            noisy = await http.ws_connect(server.url + p.SIGNAL_PATH)
            for _ in range(3):
                await noisy.send_str("not json")
            kinds = []
            for _ in range(5):
                kinds.append((await noisy.receive(timeout=3)).type.name)
                if kinds[-1].startswith("CLOS"):
                    break
            assert kinds[-1].startswith("CLOS"), kinds
    finally:
        await server.stop()
