"""Issue 23: a room server restart loses no media record.

``mixer-ext room-server`` records two talkers; through the official ``twilio`` client a
composition hook is made, a composition completes, one recording is deleted, and a
second composition is created; the server is killed with SIGKILL while that composition
is ``enqueued`` or ``processing``.  A new server on the same directory lists the same
recordings (the deleted one still ``deleted``), compositions and hook, with the same
statuses; the interrupted composition is run again and completes, without the deleted
recording's tone.
"""

from __future__ import annotations

import asyncio
import signal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from twilio.rest import Client

from mixer_ext.connectors.embedded import RoomClient
from mixer_ext.sim.tracks import ToneTrack
from mixer_ext.testing.net import free_port
from mixer_ext.testing.timeline import decode_timeline, tone_level
from mixer_ext.testing.wait import until as wait_until
from tests.support.process_util import processes, start_room_server
from tests.support.room_util import SECRET, token
from tests.support.twilio_util import ACCOUNT_SID, API_KEY_SECRET, API_KEY_SID, AUTH_TOKEN

#: the twilio client blocks: each check runs in a thread
until = partial(wait_until, within=40.0, every=0.2, blocking=True)


pytestmark = pytest.mark.timeout(150)


def client(port: int) -> Any:
    c = Client(API_KEY_SID, API_KEY_SECRET, ACCOUNT_SID)
    c.video.base_url = f"http://127.0.0.1:{port}"
    return c.video.v1


def snapshot(api: Any) -> dict[str, Any]:
    """What a user of the official client sees of the media resources."""
    return {
        "recordings": {r.sid: r.status for r in api.recordings.list()},
        "compositions": {c.sid: c.status for c in api.compositions.list()},
        "hooks": {
            h.sid: (h.friendly_name, h.enabled, h.audio_sources, h.format)
            for h in api.composition_hooks.list()
        },
    }


def tones(path: Path) -> set[int]:
    pcm = decode_timeline(path)
    seconds = len(pcm) / 48_000
    return {hz for hz in (440, 1000) if tone_level(pcm, hz, 0.3, seconds - 0.1) > 0.1}


async def test_restart_keeps_recordings_compositions_and_hooks(tmp_path: Path) -> None:
    media = tmp_path / "media"
    env = {
        "MIXER_ROOM_SECRET": SECRET,
        "MIXER_ACCOUNT_SID": ACCOUNT_SID,
        "MIXER_API_KEYS": f"{API_KEY_SID}:{API_KEY_SECRET}",
        "MIXER_AUTH_TOKEN": AUTH_TOKEN,
        "MIXER_RECORD_PARTICIPANTS_ON_CONNECT": "true",
        "MIXER_RECORDINGS_DIR": str(media),
        "MIXER_RECORDINGS_MIN_FREE_MB": "0",
    }
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    talkers = [
        RoomClient(
            url, "kept", who, token("kept", who), publish=ToneTrack(hz), auto_subscribe=False
        )
        for who, hz in (("alice", 440.0), ("bob", 1000.0))
    ]
    with processes() as procs:
        server = start_room_server(procs, port, env, tmp_path / "server.log")
        api = client(port)
        try:
            for t in talkers:
                await t.connect()
            await asyncio.sleep(4.0)
        finally:
            for t in talkers:
                await t.disconnect()
        recs = await until(lambda: (x := api.recordings.list(status="completed"))[1:] and x)
        assert len(recs) == 2, server.log()[-2000:]
        room_sid = recs[0].grouping_sids["room_sid"]
        hook = await asyncio.to_thread(
            api.composition_hooks.create,
            friendly_name="every room",
            audio_sources=["*"],
            format="mp4",
            enabled=False,
        )
        first = await asyncio.to_thread(
            api.compositions.create, room_sid=room_sid, audio_sources=["*"], format="mp4"
        )
        await until(lambda: api.compositions(first.sid).fetch().status == "completed")
        gone = recs[0]
        gone_tones = tones(media / "recordings" / room_sid / f"{gone.sid}.mka")
        assert len(gone_tones) == 1
        await asyncio.to_thread(api.recordings(gone.sid).delete)
        second = await asyncio.to_thread(
            api.compositions.create, room_sid=room_sid, audio_sources=["*"], format="webm"
        )
        before = await asyncio.to_thread(snapshot, api)
        server.popen.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(server.wait, 10) == -signal.SIGKILL
    interrupted = before["compositions"].pop(second.sid)
    assert interrupted in ("enqueued", "processing")
    assert before["recordings"][gone.sid] == "deleted"
    assert before["compositions"] == {first.sid: "completed"}
    assert hook.sid in before["hooks"]

    port2 = free_port()
    with processes() as procs:
        server2 = start_room_server(procs, port2, env, tmp_path / "server2.log")
        api = client(port2)
        after = await asyncio.to_thread(snapshot, api)
        again = after["compositions"].pop(second.sid, None)
        assert after == before, server2.log()[-2000:]
        assert again in ("enqueued", "processing", "completed")
        done = await until(
            lambda: (
                (x := api.compositions(second.sid).fetch()).status in ("completed", "failed") and x
            )
        )
        assert done.status == "completed", server2.log()[-2000:]
        assert "run again after a restart" in server2.log()
        # composed again from the kept records: the deleted recording is left out
        heard = tones(media / "compositions" / f"{second.sid}.webm")
        assert heard == {440, 1000} - gone_tones
        # the completed composition's media is still served
        resp = await asyncio.to_thread(
            Client(API_KEY_SID, API_KEY_SECRET, ACCOUNT_SID).request,
            "GET",
            f"http://127.0.0.1:{port2}/v1/Compositions/{first.sid}/Media",
        )
        assert resp.status_code == 302
