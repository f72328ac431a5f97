"""Issue 23 done-when, end to end: the official ``twilio`` client creates a room with
``RecordParticipantsOnConnect=True``, two participants on the project's protocol talk
tones over real WebRTC (aiortc) into the room server, Recording Rules stop and restart
alice's recording mid-room, the room completes; the client lists the recordings
(``completed``), downloads each through the ``…/Media`` redirect, each decodes to its own
tone at its offset (alice muted for a while: a gap of silence); a composition hook and a
composition by REST of the room reach ``completed`` with both tones at their times; the
recording callbacks arrive signed.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from twilio.rest import Client

from mixer_ext.roomserver.server import RoomServer
from mixer_ext.sim.tracks import ToneTrack
from mixer_ext.testing.timeline import decode_timeline, tone_level
from mixer_ext.testing.wait import until as wait_until
from tests.support.room_util import client, settings
from tests.support.twilio_util import (
    ACCOUNT_SID,
    API_KEY_SECRET,
    API_KEY_SID,
    AUTH_TOKEN,
    callback_receiver,
)

#: the twilio client blocks: each check runs in a thread
until = partial(wait_until, within=30.0, every=0.2, blocking=True)


pytestmark = pytest.mark.timeout(120)


def download(c: Client, url: str, to: Path) -> Path:
    resp = c.request("GET", url)
    assert resp.status_code == 302, resp.text
    assert resp.headers["Location"] == json.loads(resp.text)["redirect_to"]
    with urllib.request.urlopen(resp.headers["Location"], timeout=10) as got:
        to.write_bytes(got.read())
    return to


async def test_room_recorded_downloaded_and_composed(tmp_path: Path) -> None:
    hooks, hook_url, seen = await callback_receiver()
    credentials = {
        "MIXER_ACCOUNT_SID": ACCOUNT_SID,
        "MIXER_API_KEYS": f"{API_KEY_SID}:{API_KEY_SECRET}",
        "MIXER_AUTH_TOKEN": AUTH_TOKEN,
    }
    with mock.patch.dict(os.environ, credentials):
        server = RoomServer(
            settings(recordings_dir=tmp_path / "media", recordings_min_free_mb=0),
            "127.0.0.1",
            0,
        )
    await server.start()
    c = Client(API_KEY_SID, API_KEY_SECRET, ACCOUNT_SID)
    base = f"http://127.0.0.1:{server.port}"
    c.video.base_url = base
    api = c.video.v1
    talkers = []

    async def fetch(path: str, to: Path) -> Path:
        return await asyncio.to_thread(download, c, base + path, to)

    try:
        room = await asyncio.to_thread(
            api.rooms.create,
            unique_name="recorded",
            record_participants_on_connect=True,
            status_callback=hook_url,
        )
        assert room.record_participants_on_connect is True
        hook = await asyncio.to_thread(
            api.composition_hooks.create,
            friendly_name="all-rooms",
            audio_sources=["*"],
            format="webm",
            status_callback=hook_url,
        )
        alice = client(server, "recorded", "alice", publish=ToneTrack(440.0), auto_subscribe=False)
        talkers.append(alice)
        await alice.connect()
        await asyncio.sleep(1.5)
        bob = client(server, "recorded", "bob", publish=ToneTrack(1000.0), auto_subscribe=False)
        talkers.append(bob)
        await bob.connect()
        await asyncio.sleep(2.0)
        await alice.set_enabled(False)  # 1.5 s muted: a gap in her recording
        await asyncio.sleep(1.5)
        await alice.set_enabled(True)
        await asyncio.sleep(1.5)
        # Recording Rules: stop alice's recording mid-room, then record her again
        rules = await asyncio.to_thread(api.rooms(room.sid).recording_rules.fetch)
        assert rules.rules == [{"type": "include", "all": True}]
        await asyncio.to_thread(
            api.rooms(room.sid).recording_rules.update,
            rules=[{"type": "include", "all": True}, {"type": "exclude", "publisher": "alice"}],
        )
        await asyncio.sleep(1.5)
        await asyncio.to_thread(
            api.rooms(room.sid).recording_rules.update, rules=[{"type": "include", "all": True}]
        )
        await asyncio.sleep(2.0)
        done = await asyncio.to_thread(api.rooms(room.sid).update, status="completed")
        assert done.status == "completed"

        def completed() -> list[Any]:
            recs = api.rooms(room.sid).recordings.list()
            return recs if len(recs) == 3 and all(r.status == "completed" for r in recs) else []

        recs = sorted(await until(completed), key=lambda r: r.offset)
        a, b, a2 = recs  # alice, bob 1.5 s later, alice again after the exclusion
        assert a.grouping_sids["participant_sid"] == a2.grouping_sids["participant_sid"]
        assert a.source_sid == a2.source_sid != b.source_sid
        assert 900 <= b.offset - a.offset <= 3000, (a.offset, b.offset)
        # alice's first recording ended at the exclusion; her second began 1.5 s later
        # (durations are whole seconds, as Twilio's: +-0.5 s)
        gap = a2.offset - (a.offset + 1000 * a.duration)
        assert 500 <= gap <= 3500, (a.offset, a.duration, a2.offset)
        durations = (a.duration, b.duration, a2.duration)
        assert durations[0] >= 5 and durations[1] >= 6 and durations[2] >= 1, durations
        assert a.codec == "OPUS" and a.container_format == "mka"

        pa = decode_timeline(await fetch(f"/v1/Recordings/{a.sid}/Media", tmp_path / "a.mka"))
        pb = decode_timeline(await fetch(f"/v1/Recordings/{b.sid}/Media", tmp_path / "b.mka"))
        pa2 = decode_timeline(await fetch(f"/v1/Recordings/{a2.sid}/Media", tmp_path / "a2.mka"))
        assert tone_level(pa, 440, 0.5, 3.0) > 0.1 and tone_level(pa, 1000, 0.5, 3.0) < 0.01
        assert tone_level(pb, 1000, 0.5, 1.8) > 0.1 and tone_level(pb, 440, 0.5, 1.8) < 0.01
        assert tone_level(pa2, 440, 0.2, len(pa2) / 48_000 - 0.2) > 0.1
        # alice's mute: about 3.5..5.0 s into her track, nothing was forwarded: a silent gap
        assert tone_level(pa, 440, 3.9, 4.6) < 0.01
        assert tone_level(pa, 440, len(pa) / 48_000 - 1.2, len(pa) / 48_000 - 0.2) > 0.1

        comp = await asyncio.to_thread(
            api.compositions.create,
            room_sid=room.sid,
            audio_sources=["*"],
            format="mp4",
            trim=False,
        )
        await until(lambda: api.compositions(comp.sid).fetch().status == "completed")
        pcm = decode_timeline(
            await fetch(f"/v1/Compositions/{comp.sid}/Media", tmp_path / "c.mp4"),
            keep_start=True,
        )
        a0, b0 = a.offset / 1000, b.offset / 1000
        assert tone_level(pcm, 440, a0 + 0.3, b0 - 0.1) > 0.1
        assert tone_level(pcm, 1000, a0 + 0.3, b0 - 0.1) < 0.01  # bob not there yet
        assert tone_level(pcm, 1000, b0 + 0.3, b0 + 1.8) > 0.1

        # the hook composed the room once its recordings completed; signed callbacks in order
        from_hook = await until(
            lambda: [x for x in api.compositions.list(room_sid=room.sid) if x.sid != comp.sid]
        )
        await until(lambda: api.compositions(from_hook[0].sid).fetch().status == "completed")

        def hooked() -> list[str]:
            return [e for e, f, _ in seen if f.get("CompositionHookSid") == hook.sid]

        await until(lambda: "composition-available" in hooked())
        assert hooked()[:2] == ["composition-enqueued", "composition-started"], hooked()
        assert hooked()[-1] == "composition-available", hooked()

        await until(lambda: sum(1 for e, *_ in seen if e == "recording-completed") == 3)
        events = [e for e, f, _ in seen if "RecordingSid" in f]
        assert sorted(events) == ["recording-completed"] * 3 + ["recording-started"] * 3
        assert all(ok for *_, ok in seen)
    finally:
        for t in talkers:
            await t.disconnect()
        await server.stop()
        await hooks.cleanup()


def server_log(path: Path, sid: str) -> str:
    """The lines of a server's log that name ``sid``."""
    return "\n".join(line for line in path.read_text().splitlines() if sid in line)


async def test_a_sigkilled_room_server_leaves_decodable_recordings(tmp_path: Path) -> None:
    """``mixer-ext room-server`` recording two talkers is killed with SIGKILL: each track's
    file decodes to its own tone up to about its last second, and a new server on the same
    directory lists them ``completed`` (the records left ``processing`` finished from the
    files' own tags) and composes them.  A CompositionHook enabled before the kill composes
    the room the killed server never completed, once, on the next start (reconciliation
    over the media records); a half-written composition (``.part``) left by a killed
    worker is swept at that start.  (Before the recorder's live Matroska options a killed
    writer left undecodable files: ``roomserver/test_recorder.py``.)"""
    import signal

    from mixer_ext.connectors.embedded import RoomClient
    from mixer_ext.testing.net import free_port
    from tests.support.process_util import processes, start_room_server
    from tests.support.room_util import SECRET, token

    media = tmp_path / "media"
    port = free_port()
    env = {
        "MIXER_ROOM_SECRET": SECRET,
        "MIXER_ACCOUNT_SID": ACCOUNT_SID,
        "MIXER_API_KEYS": f"{API_KEY_SID}:{API_KEY_SECRET}",
        "MIXER_AUTH_TOKEN": AUTH_TOKEN,
        "MIXER_RECORD_PARTICIPANTS_ON_CONNECT": "true",
        "MIXER_RECORDINGS_DIR": str(media),
        "MIXER_RECORDINGS_MIN_FREE_MB": "0",
    }
    url = f"ws://127.0.0.1:{port}"
    talkers = [
        RoomClient(
            url, "adhoc", who, token("adhoc", who), publish=ToneTrack(hz), auto_subscribe=False
        )
        for who, hz in (("alice", 440.0), ("bob", 1000.0))
    ]
    with processes() as procs:
        server = start_room_server(procs, port, env, tmp_path / "server.log")
        c = Client(API_KEY_SID, API_KEY_SECRET, ACCOUNT_SID)
        c.video.base_url = f"http://127.0.0.1:{port}"
        hook = await asyncio.to_thread(
            c.video.v1.composition_hooks.create,
            friendly_name="after-a-crash",
            audio_sources=["*"],
            format="webm",
        )
        try:
            connected = []
            for t in talkers:
                await t.connect()
                connected.append(time.monotonic())
            await asyncio.sleep(6.0)
            killed = time.monotonic()
            server.popen.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(server.wait, 10) == -signal.SIGKILL
        finally:
            for t in talkers:
                await t.disconnect()
    files = sorted(media.glob("recordings/RM*/RT*.mka"))
    assert len(files) == 2, server.log()[-2000:]
    heard = set()
    for f in files:
        pcm = decode_timeline(f)
        seconds = len(pcm) / 48_000
        # connected -> media flowing takes up to ~1 s (ICE, DTLS); at most the last cluster
        # (1 s) and the packet in flight are lost to the kill
        talked = killed - max(connected)
        assert seconds >= talked - 3.0, f"{f.name}: {seconds:.2f} s decodable of {talked:.2f}"
        for hz in (440, 1000):
            if tone_level(pcm, hz, 0.3, seconds - 0.1) > 0.1:
                heard.add(hz)
    assert heard == {440, 1000}
    # what a composition worker killed mid-way leaves (the output under a temporary name)
    leftover = media / "compositions" / ".CJ0123456789abcdef0123456789abcdef.webm.4242.part"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"\x1aE\xdf\xa3 half a webm")

    # a new server on the same directory adopts them: listed completed, composable
    port2 = free_port()
    with processes() as procs:
        start_room_server(procs, port2, env, tmp_path / "server2.log")
        c = Client(API_KEY_SID, API_KEY_SECRET, ACCOUNT_SID)
        c.video.base_url = f"http://127.0.0.1:{port2}"
        api = c.video.v1
        recs = await until(lambda: (x := api.recordings.list(status="completed")) and x)
        assert sorted(f"{r.sid}.mka" for r in recs) == sorted(f.name for f in files)
        room_sid = recs[0].grouping_sids["room_sid"]
        assert {r.grouping_sids["room_sid"] for r in recs} == {room_sid}
        assert {r.source_sid[:2] for r in recs} == {"TR"}  # the talkers' track SIDs
        comp = await asyncio.to_thread(
            api.compositions.create, room_sid=room_sid, audio_sources=["*"], format="webm"
        )
        done = await until(
            lambda: (x := api.compositions(comp.sid).fetch()).status == "completed" and x
        )
        assert done.duration >= 2
        # the hook composed the room the killed server left (once), and the leftover is gone
        hooked = await until(
            lambda: [x for x in api.compositions.list(room_sid=room_sid) if x.sid != comp.sid]
        )
        assert len(hooked) == 1
        await until(lambda: api.compositions(hooked[0].sid).fetch().status == "completed")
        assert hook.sid in server_log(tmp_path / "server2.log", hooked[0].sid)
        assert not leftover.exists()
        assert api.recordings.list(status="processing") == []
