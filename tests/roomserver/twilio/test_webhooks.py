"""Room status callbacks as Twilio sent them, to a real webhook receiver on loopback that
fails at first, and the Video REST lists filtered as Twilio filtered them.

The room is driven by the official ``twilio`` client (9.x) and two participants on the
project's own protocol (one mutes and unmutes); the receiver checks each request's
``X-Twilio-Signature`` with the client's ``RequestValidator``.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from mixer_ext import metrics
from mixer_ext.roomserver.twilio import callbacks as cb
from mixer_ext.sim.tracks import ToneTrack
from mixer_ext.testing.wait import until
from tests.support.room_util import client
from tests.support.twilio_util import (
    ACCOUNT_SID,
    API_KEY_SECRET,
    API_KEY_SID,
    AUTH_TOKEN,
    TwilioRoom,
    twilio_room,
)

pytestmark = pytest.mark.timeout(120)


def video_client(room: TwilioRoom) -> Any:
    c = Client(API_KEY_SID, API_KEY_SECRET, ACCOUNT_SID)
    c.video.base_url = room.rest_url
    return c.video.v1


class FlakyReceiver:
    """A webhook endpoint whose first answer is HTTP 500 and whose second never comes in
    time (it outwaits the sender's request timeout); every later request gets 204."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.requests = 0
        #: (event, form, signature valid) of each request answered 2xx, in arrival order
        self.accepted: list[tuple[str, dict[str, str], bool]] = []
        self.validator = RequestValidator(AUTH_TOKEN)

    async def hook(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests += 1
        if self.requests == 1:
            return web.Response(status=500)
        if self.requests == 2:
            await asyncio.sleep(self.hold)
            return web.Response(status=204)
        sig = request.headers.get("X-Twilio-Signature", "")
        ok = self.validator.validate(str(request.url), form, sig)
        self.accepted.append((form["StatusCallbackEvent"], form, ok))
        return web.Response(status=204)


@pytest.mark.slow
async def test_webhooks_retried_in_order_signed_and_lists_as_twilio() -> None:
    receiver = FlakyReceiver(hold=cb.REQUEST_TIMEOUT + 2)
    app = web.Application()
    app.router.add_post("/hook", receiver.hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    hook_url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        async with twilio_room() as room:
            api = video_client(room)
            before = datetime.now(UTC) - timedelta(seconds=2)
            created = await asyncio.to_thread(
                api.rooms.create, unique_name="hooks", status_callback=hook_url
            )
            alice = client(room.server, "hooks", "alice", publish=ToneTrack(440.0))
            await alice.connect()
            a = await asyncio.to_thread(api.rooms(created.sid).participants("alice").fetch)
            assert a.identity == "alice" and a.status == "connected"  # an identity works
            await until(lambda: room.gateway.ledger.rooms[created.sid].participants[a.sid].tracks)
            bob = client(room.server, "hooks", "bob", auto_subscribe=False)
            await bob.connect()
            await alice.set_enabled(False)
            await until(
                lambda: (
                    not next(
                        iter(
                            room.gateway.ledger.rooms[created.sid]
                            .participants[a.sid]
                            .tracks.values()
                        )
                    ).enabled
                )
            )
            await alice.set_enabled(True)
            await bob.disconnect()
            await until(lambda: "bob" not in room.server.rooms["hooks"].participants)

            # lists: without Status only who is in the room; Status, dates as Twilio's
            people = api.rooms(created.sid).participants
            assert [p.identity for p in await asyncio.to_thread(people.list)] == ["alice"]
            left = await asyncio.to_thread(people.list, status="disconnected")
            assert [p.identity for p in left] == ["bob"]
            # an identity names who left too (main answered 404 unless connected)
            gone = await asyncio.to_thread(people("bob").fetch)
            assert (gone.sid, gone.status) == (left[0].sid, "disconnected")
            later = datetime.now(UTC) + timedelta(seconds=2)
            assert await asyncio.to_thread(people.list, date_created_after=later) == []
            during = await asyncio.to_thread(
                people.list, date_created_after=before, date_created_before=later
            )
            assert [p.identity for p in during] == ["alice"]
            rooms = await asyncio.to_thread(api.rooms.list, date_created_after=later)
            assert rooms == []
            rooms = await asyncio.to_thread(api.rooms.list, date_created_before=later)
            assert created.sid in [x.sid for x in rooms]
            # every 404 under /v1/Rooms is Twilio's JSON, which the client raises with 20404
            for fetch in (
                api.rooms("RM" + "0" * 32).fetch,
                people("nobody").fetch,
                people(a.sid).published_tracks("MT" + "0" * 32).fetch,
            ):
                with pytest.raises(TwilioRestException) as missing:
                    await asyncio.to_thread(fetch)
                assert (missing.value.status, missing.value.code) == (404, 20404)
            auth = {"Authorization": aiohttp.encode_basic_auth(API_KEY_SID, API_KEY_SECRET)}
            url = f"{room.rest_url}/v1/Rooms/x/Nothing/here"
            async with aiohttp.ClientSession(headers=auth) as http, http.get(url) as resp:
                assert resp.status == 404
                assert (await resp.json())["code"] == 20404

            await asyncio.to_thread(api.rooms(created.sid).update, status="completed")
            done = await asyncio.to_thread(people.list)  # a completed room: who was in it
            assert sorted(p.identity for p in done) == ["alice", "bob"]
            await alice.disconnect()
            await until(
                lambda: any(e == "room-ended" for e, _, _ in receiver.accepted), 60, "room-ended"
            )
            stats = room.gateway.callbacks
            assert (stats.retries, stats.failed, stats.dropped) == (2, 0, 0)
    finally:
        await runner.cleanup()
    events = [e for e, _, _ in receiver.accepted]
    assert events == [
        "room-created",
        "participant-connected",
        "track-added",
        "participant-connected",
        "track-disabled",
        "track-enabled",
        "participant-disconnected",
        "track-removed",
        "participant-disconnected",
        "room-ended",
    ], events
    assert all(ok for _, _, ok in receiver.accepted), "an X-Twilio-Signature did not validate"
    seqs = [int(f["SequenceNumber"]) for _, f, _ in receiver.accepted]
    assert seqs == list(range(len(seqs)))
    disabled = next(f for e, f, _ in receiver.accepted if e == "track-disabled")
    assert disabled["ParticipantIdentity"] == "alice" and disabled["TrackKind"] == "audio"
    added = next(f for e, f, _ in receiver.accepted if e == "track-added")
    assert disabled["TrackSid"] == added["TrackSid"] and disabled["RoomSid"] == created.sid
    assert receiver.requests == len(events) + 2


def test_retry_policy_bounds() -> None:
    policy = cb.RetryPolicy(max_attempts=4, base=0.5, cap=2.0, max_seconds=10.0)
    rng = random.Random(7)
    for attempt in range(1, 8):
        for _ in range(200):
            assert 0.0 <= policy.delay(attempt, rng) <= min(2.0, 0.5 * 2 ** (attempt - 1))
    assert policy.next_delay(4, 0.0, rng) is None  # attempts used up
    assert policy.next_delay(1, 10.5, rng) is None  # past the event's time
    assert 0.0 <= (policy.next_delay(3, 1.0, rng) or 0.0) <= 2.0
    assert policy.next_delay(3, 1.0, rng) is not None
    assert [cb.RetryPolicy.retryable(s) for s in (None, 200, 404, 429, 500, 503)] == [
        True,
        False,
        False,
        True,
        True,
        True,
    ]


async def test_a_slow_receiver_keeps_a_bounded_queue() -> None:
    """A receiver that never answers in time: the room's queue stays at its size, the oldest
    go (``dropped``), and another room's callbacks are not held up."""
    stalled = asyncio.Event()
    fast: list[str] = []

    async def slow(request: web.Request) -> web.Response:
        await stalled.wait()
        return web.Response(status=204)

    async def quick(request: web.Request) -> web.Response:
        fast.append((await request.post())["StatusCallbackEvent"])  # type: ignore[arg-type]
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/slow", slow)
    app.router.add_post("/quick", quick)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    sender = cb.StatusCallbacks(AUTH_TOKEN, request_timeout=30.0, queue_size=10)
    counted = metrics.ROOM_SERVER_STATUS_CALLBACKS.labels("dropped")._value.get()
    try:
        for n in range(100):
            sender.send(
                f"{base}/slow", "POST", {"RoomSid": "RMslow", "StatusCallbackEvent": f"e{n}"}
            )
        sender.send(f"{base}/quick", "POST", {"RoomSid": "RMquick", "StatusCallbackEvent": "q"})
        await until(lambda: fast == ["q"], 10, "the other room's callback")
        assert sender.pending() == 10 and sender.dropped == 90
        assert metrics.ROOM_SERVER_STATUS_CALLBACKS.labels("dropped")._value.get() == counted + 90
    finally:
        stalled.set()
        await sender.stop()
        await runner.cleanup()


def test_sequence_numbers_are_per_room_and_bounded() -> None:
    sender = cb.StatusCallbacks(AUTH_TOKEN)
    assert [sender.next_sequence("RMa"), sender.next_sequence("RMa")] == [0, 1]
    assert sender.next_sequence("RMb") == 0
    for n in range(cb.SEQUENCE_ROOMS + 5):
        sender.next_sequence(f"RM{n}")
    assert len(sender._seq) == cb.SEQUENCE_ROOMS
