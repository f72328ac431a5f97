"""Recordings, Compositions and CompositionHooks REST (issue 23.5), driven by the official
``twilio`` client 9.x against the real handlers, the real recorder (libopus payloads),
real composition worker processes and real signed callbacks.

The tracks are fed to ``MediaService`` directly (the room server's wiring of published
tracks to it is tested end to end elsewhere); everything after that is what a backend sees.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from mixer_ext.roomserver.compose.workers import CompositionWorkers
from mixer_ext.roomserver.recordings import MediaService, RoomRef
from mixer_ext.roomserver.storage import LocalMediaStore, MediaUrlSigner
from mixer_ext.roomserver.twilio.callbacks import StatusCallbacks
from mixer_ext.roomserver.twilio.media_routes import MediaRoutes
from mixer_ext.roomserver.twilio.sids import new_sid
from mixer_ext.sim.preencoded import encode_tone
from mixer_ext.testing.timeline import decode_timeline, tone_level
from mixer_ext.testing.wait import until as wait_until
from tests.support.twilio_util import ACCOUNT_SID, AUTH_TOKEN, callback_receiver

#: the twilio client blocks: each check runs in a thread
until = partial(wait_until, within=30.0, every=0.1, blocking=True)


pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

FRAME = 960


def authenticate(user: str, password: str) -> bool:
    return user == ACCOUNT_SID and hmac.compare_digest(password, AUTH_TOKEN)


def feed(sink: Any, freq: float, seconds: float) -> None:
    loop = encode_tone(freq, channels=1)
    for n in range(round(seconds / 0.02)):
        sink(loop.payloads[n % len(loop.payloads)], 555 + n * FRAME)


def download(client: Client, url: str) -> bytes:
    resp = client.request("GET", url)
    assert resp.status_code == 302, resp.text
    import json

    location = json.loads(resp.text)["redirect_to"]
    with urllib.request.urlopen(location, timeout=10) as got:
        return bytes(got.read())


async def test_recordings_compositions_and_hooks_with_the_official_client(tmp_path: Path) -> None:
    hooks_runner, hook_url, seen = await callback_receiver()
    callbacks = StatusCallbacks(AUTH_TOKEN)
    workers = CompositionWorkers(1)
    service = MediaService(
        LocalMediaStore(tmp_path / "media", min_free_bytes=0),
        workers,
        account_sid=ACCOUNT_SID,
        send=callbacks.send,
        next_sequence=callbacks.next_sequence,
    )
    app = web.Application()
    MediaRoutes(service, MediaUrlSigner(b"k" * 32, ttl=60), authenticate).add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    client = Client(ACCOUNT_SID, AUTH_TOKEN)
    client.video.base_url = base
    api = client.video.v1
    try:
        hook = await asyncio.to_thread(
            api.composition_hooks.create,
            friendly_name="every-room",
            audio_sources=["*"],
            format="webm",
            status_callback=hook_url,
        )
        assert hook.sid.startswith("HK") and hook.enabled is True

        room = RoomRef(new_sid("RM"), "town", time.monotonic(), status_callback=hook_url)
        alice = service.start_recording(room, new_sid("PA"), "alice", new_sid("MT"), "alice-mic")
        assert alice is not None
        feed(alice, 440, 3.0)
        await asyncio.sleep(1.5)
        bob = service.start_recording(room, new_sid("PA"), "bob", new_sid("MT"), "bob-mic")
        assert bob is not None
        feed(bob, 1000, 2.0)
        in_progress = await asyncio.to_thread(api.rooms(room.sid).recordings.list)
        assert {r.status for r in in_progress} == {"processing"}
        service.room_completed(room)

        def all_completed() -> list[Any]:
            recs = api.rooms(room.sid).recordings.list(page_size=1)  # paging through both
            return recs if len(recs) == 2 and {r.status for r in recs} == {"completed"} else []

        recs = await until(all_completed)
        by_name = {r.track_name: r for r in recs}
        a, b = by_name["alice-mic"], by_name["bob-mic"]
        assert (a.duration, b.duration) == (3, 2)
        assert a.container_format == "mka" and a.codec == "OPUS" and a.type == "audio"
        assert a.grouping_sids["room_sid"] == room.sid
        assert 1300 <= b.offset - a.offset <= 2500, (a.offset, b.offset)
        # account-level list with Twilio's filters
        only_b = await asyncio.to_thread(api.recordings.list, source_sid=b.source_sid)
        assert [r.sid for r in only_b] == [b.sid]
        grouped = await asyncio.to_thread(api.recordings.list, grouping_sid=[room.sid])
        assert {r.sid for r in grouped} == {a.sid, b.sid}
        fetched = await asyncio.to_thread(api.recordings(a.sid).fetch)
        assert fetched.status == "completed" and fetched.size > 1000

        # media: a redirect to a signed URL; the file decodes to its own tone
        path = tmp_path / "a.mka"
        path.write_bytes(
            await asyncio.to_thread(download, client, f"{base}/v1/Recordings/{a.sid}/Media")
        )
        pcm = decode_timeline(path)
        assert tone_level(pcm, 440, 0.2, 2.8) > 0.2 and tone_level(pcm, 1000, 0.2, 2.8) < 0.01
        with pytest.raises(urllib.error.HTTPError) as forged:
            await asyncio.to_thread(
                urllib.request.urlopen,
                f"{base}/media/recordings/{room.sid}/{a.sid}.mka?Expires=9999999999&Signature=00",
            )
        assert forged.value.code == 403

        # the hook composed the room when its recordings completed
        def hooked() -> list[Any]:
            done = api.compositions.list(room_sid=room.sid, status="completed")
            return done

        from_hook = (await until(hooked))[0]
        span = max(3.0, (b.offset - a.offset) / 1000 + 2.0)  # alice to the end of bob
        assert from_hook.format == "webm" and abs(from_hook.duration - span) <= 1

        # a composition by REST: mp4, on the room's timeline, bob excluded in a second one
        comp = await asyncio.to_thread(
            api.compositions.create,
            room_sid=room.sid,
            audio_sources=["*"],
            format="mp4",
            trim=False,
            status_callback=hook_url,
        )
        assert comp.status == "enqueued" and comp.sid.startswith("CJ")
        done = await until(
            lambda: (c := api.compositions(comp.sid).fetch()).status == "completed" and c
        )
        assert done.format == "mp4" and done.size > 0
        media = tmp_path / "c.mp4"
        media.write_bytes(
            await asyncio.to_thread(download, client, f"{base}/v1/Compositions/{comp.sid}/Media")
        )
        pcm = decode_timeline(media, keep_start=True)
        a0, b0 = a.offset / 1000, b.offset / 1000
        assert tone_level(pcm, 440, a0 + 0.2, a0 + 1.2) > 0.2
        assert tone_level(pcm, 1000, a0 + 0.2, b0 - 0.1) < 0.01  # bob not there yet
        assert tone_level(pcm, 1000, b0 + 0.2, b0 + 1.8) > 0.2
        # its levels (ours: links.levels): the live stream's payloads, per participant
        assert done.links["levels"].endswith(f"/v1/Compositions/{comp.sid}/Levels")
        levels = json.loads(
            await asyncio.to_thread(download, client, f"{base}/v1/Compositions/{comp.sid}/Levels")
        )
        v = {
            name: [p["payload"]["p"][name]["v"] for p in levels["payloads"]]
            for name in ("alice", "bob")
        }
        assert len(levels["payloads"]) == round(done.duration / 0.5)
        times = [p["t"] for p in levels["payloads"]]
        at = {name: [t for t, x in zip(times, v[name], strict=True) if x > 3000] for name in v}
        assert a0 < at["alice"][0] <= a0 + 1.0 and at["alice"][-1] <= a0 + 3.5
        assert b0 < at["bob"][0] <= b0 + 1.0 and at["bob"][-1] <= b0 + 2.5
        assert v["bob"][0] == -1  # no recording of bob yet

        excluded = await asyncio.to_thread(
            api.compositions.create,
            room_sid=room.sid,
            audio_sources=["*"],
            audio_sources_excluded=["bob*"],
            format="webm",
        )
        await until(lambda: api.compositions(excluded.sid).fetch().status == "completed")
        media = tmp_path / "x.webm"
        media.write_bytes(
            await asyncio.to_thread(
                download, client, f"{base}/v1/Compositions/{excluded.sid}/Media"
            )
        )
        pcm = decode_timeline(media, keep_start=True)
        assert tone_level(pcm, 440, 0.2, 2.8) > 0.2
        assert tone_level(pcm, 1000, 0.0, len(pcm) / 48_000) < 0.01

        # refused: a video layout, an unknown room
        with pytest.raises(TwilioRestException) as refused:
            await asyncio.to_thread(
                api.compositions.create,
                room_sid=room.sid,
                audio_sources=["*"],
                video_layout={"grid": {"video_sources": ["*"]}},
            )
        assert refused.value.status == 400 and refused.value.code == 53121
        assert "VideoLayout" in refused.value.msg
        with pytest.raises(TwilioRestException) as unknown:
            await asyncio.to_thread(
                api.compositions.create, room_sid=new_sid("RM"), audio_sources=["*"]
            )
        assert unknown.value.status == 404

        # delete: metadata stays as deleted, the media is gone
        assert await asyncio.to_thread(api.rooms(room.sid).recordings(b.sid).delete) is True
        gone = await asyncio.to_thread(api.recordings(b.sid).fetch)
        assert gone.status == "deleted"
        resp = await asyncio.to_thread(client.request, "GET", f"{base}/v1/Recordings/{b.sid}/Media")
        assert resp.status_code == 404
        assert await asyncio.to_thread(api.compositions(comp.sid).delete) is True
        assert (await asyncio.to_thread(api.compositions(comp.sid).fetch)).status == "deleted"

        # hooks: update, list, delete
        updated = await asyncio.to_thread(
            api.composition_hooks(hook.sid).update, "renamed", enabled=False
        )
        assert updated.enabled is False and updated.friendly_name == "renamed"
        listed = await asyncio.to_thread(api.composition_hooks.list, enabled=False)
        assert [h.sid for h in listed] == [hook.sid]
        assert await asyncio.to_thread(api.composition_hooks(hook.sid).delete) is True
        with pytest.raises(TwilioRestException) as missing:
            await asyncio.to_thread(api.composition_hooks(hook.sid).fetch)
        assert missing.value.status == 404
        with pytest.raises(TwilioRestException) as settings:
            await asyncio.to_thread(api.recording_settings().fetch)
        assert settings.value.code == 53122

        # callbacks: signed, in order per resource
        await until(lambda: sum(1 for e, *_ in seen if e == "composition-available") >= 2)
        assert all(ok for *_, ok in seen)
        room_events = [
            (e, f["RecordingSid"])
            for e, f, _ in seen
            if f.get("RoomSid") == room.sid and "RecordingSid" in f
        ]
        for rec in (a, b):
            mine = [e for e, sid in room_events if sid == rec.sid]
            assert mine == ["recording-started", "recording-completed"], mine
        mine = [e for e, f, _ in seen if f.get("CompositionSid") == comp.sid]
        assert mine[0] == "composition-enqueued" and mine[1] == "composition-started"
        assert mine[-1] == "composition-available"
        assert set(mine[2:-1]) <= {"composition-progress"}
        seqs = [int(f["SequenceNumber"]) for _, f, _ in seen if "SequenceNumber" in f]
        assert seqs == sorted(seqs)
    finally:
        await service.stop()
        await callbacks.stop()
        await runner.cleanup()
        await hooks_runner.cleanup()


async def test_a_full_disk_fails_the_recording_with_a_reason_and_a_callback(
    tmp_path: Path,
) -> None:
    hooks_runner, hook_url, seen = await callback_receiver()
    callbacks = StatusCallbacks(AUTH_TOKEN)
    service = MediaService(
        LocalMediaStore(tmp_path / "media", min_free_bytes=1 << 62),  # never enough
        CompositionWorkers(1),
        account_sid=ACCOUNT_SID,
        send=callbacks.send,
        next_sequence=callbacks.next_sequence,
    )
    app = web.Application()
    MediaRoutes(service, MediaUrlSigner(b"k" * 32), authenticate).add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    client = Client(ACCOUNT_SID, AUTH_TOKEN)
    client.video.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        room = RoomRef(new_sid("RM"), "full", time.monotonic(), status_callback=hook_url)
        sink = service.start_recording(room, new_sid("PA"), "alice", new_sid("MT"), "mic")
        assert sink is None  # nothing is written
        recs = await asyncio.to_thread(client.video.v1.recordings.list, status="failed")
        assert len(recs) == 1 and recs[0].track_name == "mic"
        await until(lambda: [f for e, f, ok in seen if e == "recording-failed" and ok])
        failed = next(f for e, f, _ in seen if e == "recording-failed")
        assert "MIXER_RECORDINGS_MIN_FREE_MB" in failed["FailedOperation"]
        assert not list((tmp_path / "media").rglob("*.mka"))
    finally:
        await service.stop()
        await callbacks.stop()
        await runner.cleanup()
        await hooks_runner.cleanup()
