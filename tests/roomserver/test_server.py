"""The embedded room server end to end: real server, real aiortc peers on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp
import jwt
import pytest
from aiortc.mediastreams import MediaStreamError

from mixer_ext import metrics
from mixer_ext.connectors.base import (
    Disconnected,
    ParticipantJoined,
    ParticipantLeft,
    RoomConnectError,
    TrackEnabledChanged,
    TrackSubscribed,
    TrackUnsubscribed,
)
from mixer_ext.connectors.embedded import EmbeddedRoomConnector, RoomClient
from mixer_ext.roomserver import protocol as p
from mixer_ext.sim.talker import Schedule, Talker
from mixer_ext.sim.tracks import ToneTrack
from mixer_ext.testing.wait import until
from tests.support.env import free_port, mixer_ext_cmd
from tests.support.room_util import (
    ADMIN,
    SECRET,
    bearer,
    client,
    next_event,
    record,
    room_server,
    spectrum_peak,
    token,
)

pytestmark = pytest.mark.timeout(90)

TONES = {"alice": 440.0, "bob": 660.0, "carol": 1000.0}


def rejected(code: str) -> float:
    return float(metrics.ROOM_SERVER_REJECTED_MESSAGES.labels(code)._value.get())


async def assert_hears(track: object, hz: float, seconds: float = 1.5) -> float:
    samples = await record(track, seconds)  # type: ignore[arg-type]
    samples = samples[len(samples) // 4 :]  # skip the jitter buffer's start-up
    peak, rms = spectrum_peak(samples)
    assert abs(peak - hz) < 8, f"expected {hz} Hz, strongest component at {peak:.1f} Hz"
    assert rms > 0.05, f"tone at {hz} Hz too quiet (rms {rms:.4f})"
    return rms


@pytest.mark.slow
async def test_three_talkers_heard_by_a_fourth_client() -> None:
    async with room_server() as server:
        talkers = [
            Talker(server.url, "r1", who, token("r1", who), ToneTrack(hz), Schedule(leave_at=30))
            for who, hz in TONES.items()
        ]
        runs = [asyncio.create_task(t.run(), name=f"test-talker:{t.identity}") for t in talkers]
        try:
            bot = EmbeddedRoomConnector(
                server.url, "r1", "audio-mixer-v1", token("r1", "audio-mixer-v1", role="mixer")
            )
            await bot.connect()
            events = bot.events()
            subscribed: dict[str, TrackSubscribed] = {}
            while len(subscribed) < 3:
                ev = await next_event(events, TrackSubscribed)
                subscribed[ev.identity] = ev
            assert all(ev.enabled for ev in subscribed.values())
            assert len({ev.track_sid for ev in subscribed.values()}) == 3
            await asyncio.gather(
                *(assert_hears(subscribed[who].source, hz) for who, hz in TONES.items())
            )
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{server.port}/v1/rooms/r1/participants"
                async with http.get(url, headers=bearer(token("r1", "ops"))) as resp:
                    roster = await resp.json()
            assert sorted(x["identity"] for x in roster) == sorted([*TONES, "audio-mixer-v1"])
            for entry in roster:
                kinds = [t["kind"] for t in entry["tracks"]]
                assert kinds == ([] if entry["identity"] == "audio-mixer-v1" else ["audio"])
            # a talker leaving: left with reason, its track unsubscribed
            runs[0].cancel()
            left = await next_event(events, ParticipantLeft, identity="alice")
            assert left.reason == "left"
            await bot.disconnect()
            assert isinstance(await next_event(events, Disconnected), Disconnected)
        finally:
            for run in runs:
                run.cancel()
            await asyncio.gather(*runs, return_exceptions=True)


@pytest.mark.slow
async def test_mute_unmute_events_and_silence() -> None:
    async with room_server() as server:
        alice = client(server, "r2", "alice", publish=ToneTrack(523.0), auto_subscribe=False)
        listener = client(server, "r2", "listener")
        await alice.connect()
        await listener.connect()
        events = listener.events()
        sub = await next_event(events, TrackSubscribed, identity="alice")
        await assert_hears(sub.track, 523.0, 1.0)

        await alice.set_enabled(False)
        muted = await next_event(events, TrackEnabledChanged, identity="alice")
        assert (muted.enabled, muted.track_sid) == (False, sub.track_sid)
        await record(sub.track, 0.4)  # what was in flight when the mute happened
        quiet = await record(sub.track, 1.0)
        # muted: the room forwards nothing at all (alice's client still sends silence)
        assert len(quiet) == 0, f"{len(quiet)} samples forwarded from a muted publisher"
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{server.port}/v1/rooms/r2/participants"
            async with http.get(url, headers=bearer(ADMIN)) as resp:
                roster = {x["identity"]: x for x in await resp.json()}
        assert roster["alice"]["tracks"][0]["enabled"] is False

        await alice.set_enabled(True)
        unmuted = await next_event(events, TrackEnabledChanged, identity="alice")
        assert unmuted.enabled is True
        await assert_hears(sub.track, 523.0, 1.0)

        await alice.disconnect()
        assert (await next_event(events, TrackUnsubscribed)).identity == "alice"
        with pytest.raises(MediaStreamError):  # the ended track wakes its reader up
            for _ in range(100):
                await asyncio.wait_for(sub.track.recv(), 5)
        await listener.disconnect()


@pytest.mark.slow
async def test_a_mute_right_after_joining_forwards_nothing() -> None:
    """A client may mute before its track reached the server: the track starts muted."""
    async with room_server() as server:
        alice = client(server, "r2m", "alice", publish=ToneTrack(523.0), auto_subscribe=False)
        await alice.connect()
        await alice.set_enabled(False)  # before the server has alice's track
        assert not alice.errors
        listener = client(server, "r2m", "listener")
        await listener.connect()
        events = listener.events()
        sub = await next_event(events, TrackSubscribed, identity="alice")
        assert sub.enabled is False
        quiet = await record(sub.track, 1.5)
        assert len(quiet) == 0, f"{len(quiet)} samples forwarded from a muted publisher"
        await alice.set_enabled(True)
        assert (await next_event(events, TrackEnabledChanged, identity="alice")).enabled
        await assert_hears(sub.track, 523.0, 1.0)  # the timeline goes on after the gap
        await alice.disconnect()
        await listener.disconnect()


@pytest.mark.slow
@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
async def test_g711_publishers_are_accepted(codec: str) -> None:
    async with room_server() as server:
        alice = client(
            server,
            "g711",
            "alice",
            publish=ToneTrack(440.0),
            publish_codec=codec,
            auto_subscribe=False,
        )
        listener = client(server, "g711", "listener")
        await alice.connect()
        await listener.connect()
        sub = await next_event(listener.events(), TrackSubscribed, identity="alice")
        await assert_hears(sub.track, 440.0, 1.0)
        # what alice agreed to send: only the G.711 codec asked for
        answer = alice.pc.localDescription.sdp
        rtpmaps = [line.split(" ", 1)[1] for line in answer.splitlines() if "a=rtpmap:" in line]
        assert rtpmaps == [f"{codec}/8000"]
        await alice.disconnect()
        await listener.disconnect()


async def test_joins_and_leaves_carry_reasons() -> None:
    async with room_server() as server:
        observer = client(server, "r3", "observer")
        await observer.connect()
        events = observer.events()
        a = client(server, "r3", "a")
        await a.connect()
        assert (await next_event(events, ParticipantJoined)).identity == "a"
        await a.disconnect()
        assert (await next_event(events, ParticipantLeft, identity="a")).reason == "left"
        assert a.disconnect_reason == "left"

        b = client(server, "r3", "b")
        await b.connect()
        await next_event(events, ParticipantJoined, identity="b")
        assert b._ws is not None
        await b._ws.close()  # the socket goes away without a leave message
        assert (await next_event(events, ParticipantLeft, identity="b")).reason == "connection-lost"
        assert await b.wait_closed() == "connection-lost"
        await observer.disconnect()


async def test_a_closed_peer_connection_is_a_departure() -> None:
    """Whatever closes a participant's server-side peer connection, it leaves (issue 21.6)."""
    async with room_server() as server:
        observer = client(server, "r3c", "observer")
        await observer.connect()
        events = observer.events()
        c = client(server, "r3c", "c", publish=ToneTrack(440.0))
        await c.connect()
        await next_event(events, ParticipantJoined, identity="c")
        await until(lambda: server.sessions[("r3c", "c")].pc is not None, what="c's pc")
        pc = server.sessions[("r3c", "c")].pc  # type: ignore[attr-defined]
        await pc.close()
        left = await next_event(events, ParticipantLeft, identity="c", within=3)
        assert left.reason == "connection-lost"
        assert set(server.rooms["r3c"].participants) == {"observer"}
        await observer.disconnect()


@pytest.mark.slow
async def test_bad_tokens_refused_others_unaffected() -> None:
    async with room_server() as server:
        alice = client(server, "r4", "alice", publish=ToneTrack(440.0), auto_subscribe=False)
        listener = client(server, "r4", "listener")
        await alice.connect()
        await listener.connect()
        events = listener.events()
        sub = await next_event(events, TrackSubscribed, identity="alice")

        now = time.time()
        expired = jwt.encode(
            {"iss": "mixer-ext", "room": "r4", "sub": "mallory", "exp": now - 5}, SECRET, "HS256"
        )
        forged = jwt.encode(
            {"iss": "mixer-ext", "room": "r4", "sub": "mallory", "exp": now + 60}, "x" * 32, "HS256"
        )
        cases = {
            "missing": ("", "missing token"),
            "forged": (forged, "forged"),
            "expired": (expired, "expired"),
            "other room": (token("elsewhere", "mallory"), "for room 'elsewhere'"),
            "garbage": ("not.a.jwt", "invalid token"),
        }
        for name, (tok, why) in cases.items():
            bad = RoomClient(server.url, "r4", "mallory", tok)
            with pytest.raises(RoomConnectError) as info:
                await bad.connect()
            assert info.value.reason == "unauthorized", name
            assert why in str(info.value), f"{name}: {info.value}"
            assert tok == "" or tok not in str(info.value)
        # nobody else noticed anything: no joins, audio keeps flowing
        await assert_hears(sub.track, 440.0, 1.0)
        assert server.rooms["r4"].participants.keys() == {"alice", "listener"}
        assert listener.participants == {"alice"}
        await alice.disconnect()
        await listener.disconnect()


async def test_max_participant_duration_disconnects_with_reason() -> None:
    async with room_server(max_participant_duration=1.5) as server:
        c = client(server, "r5", "short")
        started = time.monotonic()
        await c.connect()
        events = c.events()
        ev = await next_event(events, Disconnected, within=10)
        assert ev.reason == "max-participant-duration"
        assert ev.permanent
        assert time.monotonic() - started >= 1.4
        assert (
            "short" not in server.rooms.get("r5", type("E", (), {"participants": {}})).participants
        )


async def test_max_participants_enforced() -> None:
    async with room_server(max_participants=2) as server:
        a, b = client(server, "r6", "a"), client(server, "r6", "b")
        await a.connect()
        await b.connect()
        third = client(server, "r6", "c")
        with pytest.raises(RoomConnectError) as info:
            await third.connect()
        assert info.value.reason == "room-full"
        await b.disconnect()
        again = client(server, "r6", "c")
        await again.connect()  # a place is free again
        assert set(server.rooms["r6"].participants) == {"a", "c"}
        await a.disconnect()
        await again.disconnect()


@pytest.mark.slow
async def test_malformed_and_oversized_messages_refused() -> None:
    # the socket's cut-off also leaves room for the SDP of the largest room (4 KiB a head)
    async with room_server(max_message_bytes=2048, max_participants=3) as server:
        alice = client(server, "r7", "alice", publish=ToneTrack(440.0), auto_subscribe=False)
        listener = client(server, "r7", "listener")
        await alice.connect()
        await listener.connect()
        events = listener.events()
        sub = await next_event(events, TrackSubscribed, identity="alice")
        before = {c: rejected(c) for c in ("malformed", "oversized", "version", "unexpected")}

        await alice.send_raw("this is not json")
        await alice.send_raw('{"v": 1, "type": "teleport"}')
        await alice.send_raw('{"v": 1, "type": "set-enabled", "enabled": "maybe"}')
        await alice.send_raw('{"v": 7, "type": "leave"}')
        await alice.send_raw(p.encode(p.Join(room="r7", token="x")))
        # over the cap plus the 4 KiB her one m-line may add
        await alice.send_raw('{"v": 1, "type": "answer", "sdp": "' + "a" * 7000 + '"}')
        await until(lambda: len(alice.errors) >= 6, what="six error replies")
        assert [e.code for e in alice.errors] == [
            "malformed",
            "malformed",
            "malformed",
            "version",
            "unexpected",
            "oversized",
        ]
        assert rejected("malformed") - before["malformed"] == 3
        assert rejected("oversized") - before["oversized"] == 1
        # alice is still in and still works; the listener noticed nothing but her mute
        await alice.set_enabled(False)
        assert (await next_event(events, TrackEnabledChanged)).enabled is False
        await alice.set_enabled(True)
        await next_event(events, TrackEnabledChanged, enabled=True)
        await assert_hears(sub.track, 440.0, 1.0)

        # far beyond the cap the socket itself is cut: only alice goes
        await alice.send_raw("x" * 2048 * 16)
        assert (await next_event(events, ParticipantLeft, identity="alice")).reason == (
            "connection-lost"
        )
        assert rejected("oversized") - before["oversized"] == 2
        await alice.disconnect()

        # a raw socket sending garbage before its join is refused, then may still join
        signal = f"http://127.0.0.1:{server.port}{p.SIGNAL_PATH}"
        async with aiohttp.ClientSession() as http, http.ws_connect(signal) as ws:
            await ws.send_str("{]")
            refusal = p.parse_server_message((await ws.receive(timeout=5)).data)
            assert isinstance(refusal, p.ErrorMsg) and refusal.code == "malformed"
            await ws.send_str(p.encode(p.Join(room="r7", token=token("r7", "raw"))))
            joined = p.parse_server_message((await ws.receive(timeout=5)).data)
            assert isinstance(joined, p.Joined)
            assert [x.identity for x in joined.participants] == ["listener"]
        await next_event(events, ParticipantJoined, identity="raw")
        await listener.disconnect()


async def test_duplicate_identity_replaces_the_first() -> None:
    async with room_server() as server:
        observer = client(server, "r8", "observer")
        await observer.connect()
        events = observer.events()
        first = client(server, "r8", "alice")
        await first.connect()
        await next_event(events, ParticipantJoined, identity="alice")
        second = client(server, "r8", "alice")
        await second.connect()
        assert await asyncio.wait_for(first.wait_closed(), 10) == "duplicate-identity"
        left = await next_event(events, ParticipantLeft, identity="alice")
        assert left.reason == "duplicate-identity"
        await next_event(events, ParticipantJoined, identity="alice")
        assert list(server.rooms["r8"].participants) == ["observer", "alice"]
        await second.disconnect()
        await observer.disconnect()


async def test_rest_endpoints_and_ending_a_room() -> None:
    async with room_server(empty_timeout=0.5) as server:
        base = f"http://127.0.0.1:{server.port}"
        a, b = client(server, "r9", "a"), client(server, "r9", "b")
        await a.connect()
        await b.connect()
        admin = bearer(ADMIN)
        async with aiohttp.ClientSession(headers=admin) as http:
            async with http.get(f"{base}/v1/rooms/nope") as resp:
                assert resp.status == 404
            async with http.get(f"{base}/v1/rooms/nope/participants") as resp:
                assert resp.status == 404
            async with http.get(f"{base}/v1/rooms/r9", headers=bearer(token("r9", "x"))) as resp:
                room = await resp.json()
            assert room["name"] == "r9" and room["num_participants"] == 2
            async with http.get(f"{base}/v1/rooms/r9/participants") as resp:
                roster = await resp.json()
            assert [x["identity"] for x in roster] == ["a", "b"]
            assert all(x["joined_at"].endswith("Z") and x["tracks"] == [] for x in roster)
            async with http.post(f"{base}/v1/token", json={"room": "r9", "identity": "x"}) as resp:
                assert resp.status == 403  # not in open mode
            for wrong in ("wrong", SECRET, token("r9", "a")):
                async with http.post(f"{base}/v1/rooms/r9/end", headers=bearer(wrong)) as resp:
                    assert resp.status == 401
            assert len(server.rooms["r9"].participants) == 2
            headers = admin
            async with http.post(f"{base}/v1/rooms/r9/end", headers=headers) as resp:
                assert resp.status == 200
                assert (await resp.json())["disconnected"] == 2
            assert await asyncio.wait_for(a.wait_closed(), 10) == "room-ended"
            assert await asyncio.wait_for(b.wait_closed(), 10) == "room-ended"
            async with http.get(f"{base}/v1/rooms/r9") as resp:
                assert resp.status == 404
            async with http.post(f"{base}/v1/rooms/r9/end", headers=headers) as resp:
                assert resp.status == 404
            # the empty-room timeout closes a room its last participant left
            c = client(server, "r10", "c")
            await c.connect()
            await c.disconnect()
            await until(lambda: "r10" not in server.rooms, what="empty room closed")
            async with http.get(f"{base}/v1/rooms/r10") as resp:
                assert resp.status == 404


async def test_open_mode_hands_out_tokens() -> None:
    async with room_server(open_mode=True) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/v1/config") as resp:
                assert (await resp.json())["open"] is True
            async with http.post(f"{base}/v1/token", json={"room": "r11", "identity": "x"}) as resp:
                assert resp.status == 200
                tok = (await resp.json())["token"]
            async with http.post(f"{base}/v1/token", json={"room": "bad room"}) as resp:
                assert resp.status == 400
        c = RoomClient(server.url, "r11", "x", tok)
        await c.connect()
        await c.disconnect()


@pytest.mark.slow
async def test_room_server_cli_serves_page_and_stops_cleanly() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXER_")}
    env["MIXER_ROOM_SECRET"] = SECRET
    env["MIXER_ROOM_ADMIN_TOKEN"] = ADMIN  # from the environment only: never in argv
    proc = await asyncio.create_subprocess_exec(
        *mixer_ext_cmd(),
        *("room-server", "--host", "127.0.0.1", "--port", str(port), "--max-participants", "5"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.decode().strip() == f"room server listening on ws://127.0.0.1:{port}"
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/") as resp:
                assert "<h1>Speaker</h1>" in await resp.text()
            async with http.get(f"{base}/static/speaker.js") as resp:
                assert resp.status == 200
        c = RoomClient(f"ws://127.0.0.1:{port}", "cli", "a", token("cli", "a"))
        await c.connect()
        url = f"{base}/v1/rooms/cli"
        async with aiohttp.ClientSession() as http, http.get(url, headers=bearer(ADMIN)) as resp:
            assert (await resp.json())["max_participants"] == 5
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(c.wait_closed(), 15) == "server-shutdown"
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        stderr = (await proc.stderr.read()).decode()
        assert "joined" in stderr and "stopped" in stderr
        assert ADMIN not in stderr and SECRET not in stderr
        assert SECRET not in stderr and token("cli", "a")[:40] not in stderr

        # the port is taken now by someone else: one line, exit 2
        async with room_server() as other:
            busy = await asyncio.create_subprocess_exec(
                *mixer_ext_cmd(),
                *("room-server", "--port", str(other.port)),
                env=env,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(busy.communicate(), 30)
            assert busy.returncode == 2
            lines = err.decode().strip().splitlines()
            assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{other.port}" in lines[0]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_mixer_identity_takes_a_mixer_role_token() -> None:
    """Only a mixer-role token joins as the mixer, or replaces a mixer (issue 16.2)."""
    async with room_server() as server:
        bot = client(
            server, "m1", "audio-mixer-v1", tok=token("m1", "audio-mixer-v1", role="mixer")
        )
        await bot.connect()
        intruder = client(server, "m1", "audio-mixer-v1")  # a participant token
        with pytest.raises(RoomConnectError, match="reserved for the mixer"):
            await intruder.connect()
        await intruder.disconnect()
        assert "audio-mixer-v1" in server.rooms["m1"].participants  # the mixer kept its seat
        await bot.disconnect()
