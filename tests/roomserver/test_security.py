"""Room server security (issue 16, items 1-4): failing tests first, real server and peers.

Each test was a strict xfail until its fix landed (in ``mixer_ext/roomserver/``,
``session.py`` and ``tokens.py``); the limits they expect are those of
``mixer_ext.roomserver.limits``, set by the ``MIXER_ROOM_*`` settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp
import jwt
import pytest

from mixer_ext.connectors.base import TrackEnabledChanged, TrackSubscribed
from mixer_ext.connectors.embedded import EmbeddedRoomConnector
from mixer_ext.redact import redact_text
from mixer_ext.roomserver import protocol as p
from mixer_ext.roomserver.server import LOG_LINES_PER_KIND, RoomServer
from mixer_ext.roomserver.tokens import TokenError, verify_token
from mixer_ext.sim.tracks import ToneTrack
from mixer_ext.testing.wait import until
from tests.support.room_util import (
    ADMIN,
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

MIXER = "audio-mixer-v1"


def role_token(room: str, identity: str, role: str, ttl: float = 600) -> str:
    """A token with a ``role`` claim, as the fixed ``mint_token(..., role=...)`` will make."""
    now = time.time()
    claims = {"iss": "mixer-ext", "room": room, "sub": identity, "role": role}
    return jwt.encode({**claims, "iat": int(now), "exp": now + ttl}, SECRET, algorithm="HS256")


@pytest.mark.slow
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
            tracks[ev.identity] = ev.source  # the mixer's connector: encoded payloads
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
        # whoever logs them (a library printing a header), the credentials are scrubbed
        assert ADMIN not in redact_text(f"Authorization: Bearer {ADMIN}")
        assert SECRET not in redact_text(f"secret {SECRET}")
    finally:
        await server.stop()


def test_verify_refuses_a_token_that_lives_too_long() -> None:
    long_lived = role_token("t1", "alice", "participant", ttl=40 * 86_400)
    with pytest.raises(TokenError, match="lifetime"):
        verify_token(SECRET, long_lived, "t1")


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


@pytest.mark.slow
async def test_coalesced_state_updates_keep_receivers_through_a_flood() -> None:
    # a burst large enough that the rate limit never cuts in: coalescing alone must hold
    server = RoomServer(
        settings(room_message_burst=10_000, room_message_rate=10_000.0), "127.0.0.1", 0
    )
    await server.start()
    try:
        bot = EmbeddedRoomConnector(server.url, "c1", MIXER, role_token("c1", MIXER, "mixer"))
        await bot.connect()
        events = bot.events()
        alice = client(server, "c1", "alice", publish=ToneTrack(440.0), auto_subscribe=False)
        toggler = client(server, "c1", "mallory", publish=ToneTrack(1000.0), auto_subscribe=False)
        await alice.connect()
        await toggler.connect()
        seen = set()
        while len(seen) < 2:
            seen.add((await next_event(events, TrackSubscribed)).identity)
        # 3000 toggles in a few reads: without coalescing each one is a queued message
        # in every receiver's outbox (256), which then disconnects the receiver
        toggles = [p.encode(p.SetEnabled(enabled=i % 2 == 0)) for i in range(3000)]
        await asyncio.gather(*(toggler.send_raw(t) for t in toggles))
        state = server.rooms["c1"].participants["mallory"]
        await until(
            lambda: server.signal.open_sockets and all(not t.enabled for t in state.tracks.values())
        )
        changes = []
        with contextlib.suppress(TimeoutError):
            while True:  # what the mixer hears until the room is quiet for a second
                changes.append(await next_event(events, TrackEnabledChanged, within=1.0))
        assert changes and changes[-1].enabled is False, changes[-3:]  # the last toggle wins
        assert len(changes) < 256, f"{len(changes)} updates reached the mixer, not coalesced"
        assert set(server.rooms["c1"].participants) == {MIXER, "alice", "mallory"}
        for c in (alice, toggler):
            await c.disconnect()
        await bot.disconnect()
    finally:
        await server.stop()


async def test_per_address_and_pending_socket_caps_refuse_with_503() -> None:
    server = RoomServer(
        settings(room_max_connections_per_address=3, room_max_pending_connections=2),
        "127.0.0.1",
        0,
    )
    await server.start()
    url = server.url + p.SIGNAL_PATH
    try:
        async with aiohttp.ClientSession() as http:
            first = await http.ws_connect(url)
            second = await http.ws_connect(url)
            # two sockets not joined yet: the pending cap refuses the third
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url)
            assert refused.value.status == 503
            async with http.get(url) as resp:  # the same refusal, read as plain HTTP
                assert resp.status == 503
                assert "MIXER_ROOM_MAX_PENDING_CONNECTIONS" in (await resp.json())["error"]
            await first.close()
            await until(lambda: server.connections.pending == 1, within=5, what="slot freed")
            # a joined socket is no longer pending, but still counts for its address
            joined = client(server, "p1", "alice")
            await joined.connect()
            third = await http.ws_connect(url)
            assert server.connections.by_address["127.0.0.1"] == 3
            async with http.get(url) as resp:
                assert resp.status == 503
                assert "MIXER_ROOM_MAX_CONNECTIONS_PER_ADDRESS" in (await resp.json())["error"]
            for ws in (second, third):
                await ws.close()
            await joined.disconnect()
            await until(lambda: not server.connections.by_address, within=5, what="all closed")
    finally:
        await server.stop()


async def test_refused_messages_are_logged_at_a_bounded_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with room_server() as server:
        noisy = client(server, "l1", "noisy")
        await noisy.connect()
        with caplog.at_level(logging.WARNING, logger="mixer_ext.roomserver.server"):
            for _ in range(40):  # within the rate limit's burst: refused, not disconnected
                await noisy.send_raw("not json")
            await asyncio.sleep(0.5)
        refused = [r for r in caplog.records if "message refused" in r.getMessage()]
        assert 1 <= len(refused) <= LOG_LINES_PER_KIND, len(refused)
        assert set(server.rooms["l1"].participants) == {"noisy"}
        await noisy.disconnect()


async def test_a_slow_teardown_of_a_replaced_session_holds_no_other_join() -> None:
    async with room_server() as server:
        first = client(server, "s1", "alice")
        await first.connect()
        old = server.sessions[("s1", "alice")]
        real_close = old.close
        released = asyncio.Event()

        async def slow_close(reason: str | None, message: str = "") -> None:
            # stands in for a teardown stuck on a dead peer (a stub of our own method)
            await asyncio.wait_for(released.wait(), 10)
            await real_close(reason, message)

        old.close = slow_close  # type: ignore[method-assign]
        again = client(server, "s1", "alice")
        other = client(server, "s2", "bob")
        started = time.monotonic()
        await again.connect()
        await other.connect()
        took = time.monotonic() - started
        released.set()
        assert took < 2.0, f"joins waited {took:.1f} s for a replaced session's teardown"
        assert await asyncio.wait_for(first.wait_closed(), 10) == "duplicate-identity"
        for c in (again, other):
            await c.disconnect()


def test_docs_list_every_room_server_setting_and_the_limits() -> None:
    from pathlib import Path

    from mixer_ext.settings import Settings

    docs = Path(__file__).resolve().parents[2] / "docs"
    page = (docs / "reference" / "settings.md").read_text()
    table = page.split("<!-- section: settings -->")[1].split("<!-- /section: settings -->")[0]
    missing = [
        f"MIXER_{name.upper()}"
        for name in Settings.model_fields
        if name.startswith("room_") and f"`MIXER_{name.upper()}`" not in table
    ]
    assert not missing, f"the settings table (docs/reference/settings.md) lacks {missing}"
    reliability = (docs / "topics" / "reliability.md").read_text()
    limits = reliability.split("## Room server limits")[1].split("\n## ")[0]
    for name in ("message_rate", "message_burst", "max_pending_connections", "join_timeout"):
        assert f"`MIXER_ROOM_{name.upper()}`" in limits, name


@pytest.mark.slow
async def test_answers_to_the_servers_offers_are_not_rate_limited() -> None:
    # a tight budget: a listener answering the re-offer for each publisher that joins
    # would run dry after two; answers to the server's own offers cost nothing
    server = RoomServer(settings(room_message_burst=2, room_message_rate=0.5), "127.0.0.1", 0)
    await server.start()
    try:
        listener = client(server, "a1", "listener")
        await listener.connect()
        events = listener.events()
        publishers = [
            client(server, "a1", f"p{i}", publish=ToneTrack(300.0 + 100 * i), auto_subscribe=False)
            for i in range(6)
        ]
        for c in publishers:
            await c.connect()
            await next_event(events, TrackSubscribed, identity=c.identity)
        assert set(server.rooms["a1"].participants) == {
            "listener",
            *(c.identity for c in publishers),
        }
        # and what the client sends of its own accord is still limited
        for _ in range(3):
            await listener.send_raw(p.encode(p.SetEnabled(enabled=True)))
        assert await asyncio.wait_for(listener.wait_closed(), 5) == "rate-limited"
        for c in publishers:
            await c.disconnect()
    finally:
        await server.stop()


def test_a_short_admin_token_is_refused_in_one_line_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mixer_ext.errors import ConfigError
    from mixer_ext.settings import load_settings

    monkeypatch.setenv("MIXER_ROOM_ADMIN_TOKEN", "hunter2-short")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith("MIXER_ROOM_ADMIN_TOKEN:") and "16" in message, message
    assert "hunter2" not in message and "\n" not in message
