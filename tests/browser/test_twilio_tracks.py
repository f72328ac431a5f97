"""Track lifecycle as apps write it (issue 21.5), twilio-video.js 2.36.0 in Chromium.

Alice switches microphones the way the SDK's docs show (``unpublishTrack`` the old one,
``publishTrack`` a new ``LocalAudioTrack``), then publishes a second audio track and
``restart()``s one.  Every ``publishTrack`` settles; Bob sees ``trackUnpublished`` /
``trackPublished`` and is subscribed to the new tracks; the Video REST's PublishedTracks
follow; ``mixer-ext run`` mixes both of Alice's tracks into her one metadata entry.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import free_port
from tests.support.hls_reader import read_hls
from tests.support.process_util import Proc, metrics_text, processes
from tests.support.room_util import write_tone_wav
from tests.support.twilio_util import browsers, mixer_env, twilio_room, twilio_token, video_client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SETTLE = "15000"  # ms a publishTrack gets before the page calls it unsettled

SWITCH = """async () => {
  try {
    const lp = window.room.localParticipant;
    const [old] = [...lp.audioTracks.values()];
    const oldSid = old.trackSid;
    lp.unpublishTrack(old.track);
    old.track.stop();
    const t = await Twilio.Video.createLocalAudioTrack({ name: "mic-2" });
    const pub = await Promise.race([lp.publishTrack(t), new Promise((_, no) =>
      setTimeout(() => no(new Error("publishTrack did not settle")), SETTLE_MS))]);
    return { oldSid, newSid: pub.trackSid };
  } catch (err) { return { error: { code: err.code || null, message: String(err.message) } }; }
}""".replace("SETTLE_MS", SETTLE)

SECOND = """async () => {
  try {
    const lp = window.room.localParticipant;
    const t = await Twilio.Video.createLocalAudioTrack({ name: "music" });
    const pub = await Promise.race([lp.publishTrack(t), new Promise((_, no) =>
      setTimeout(() => no(new Error("publishTrack did not settle")), SETTLE_MS))]);
    return { sid: pub.trackSid };
  } catch (err) { return { error: { code: err.code || null, message: String(err.message) } }; }
}""".replace("SETTLE_MS", SETTLE)

RESTART = """async () => {
  try {
    const lp = window.room.localParticipant;
    const pub = [...lp.audioTracks.values()].find((p) => p.trackName === "mic-2");
    await pub.track.restart();
    return { sid: pub.trackSid, state: pub.track.mediaStreamTrack.readyState };
  } catch (err) { return { error: { code: err.code || null, message: String(err.message) } }; }
}"""


async def _published(api: Any, room_sid: str, identity: str) -> list[str]:
    tracks = await asyncio.to_thread(
        api.rooms(room_sid).participants(identity).published_tracks.list
    )
    return sorted(t.sid for t in tracks)


async def test_switch_microphone_second_track_and_restart(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    wav_a, wav_b = tmp_path / "a.wav", tmp_path / "b.wav"
    write_tone_wav(wav_a, 520.0, 2.0, rate=48_000)
    write_tone_wav(wav_b, 780.0, 2.0, rate=48_000)
    hls_dir = tmp_path / "hls"
    async with (
        twilio_room() as room,
        browsers(room, wav_a, artifacts_dir / "twilio-tracks-a.log") as ba,
        browsers(room, wav_b, artifacts_dir / "twilio-tracks-b.log") as bb,
    ):
        api = video_client(room)
        alice = await ba.join(room, "a", twilio_token("alice", "tracks"), "tracks")
        assert "error" not in alice, alice
        bob = await bb.join(room, "b", twilio_token("bob", "tracks"), "tracks")
        assert "error" not in bob, bob
        room_sid, (first,) = alice["sid"], alice["published"]
        await bb.event("b", "trackSubscribed", identity="alice")

        switched = await ba.command("a", "eval", within=30, expr=SWITCH)
        assert "error" not in switched, switched
        assert switched["oldSid"] == first and switched["newSid"] != first
        await bb.event("b", "remoteTrackUnpublished", identity="alice", sid=first)
        await bb.event("b", "remoteTrackPublished", identity="alice", sid=switched["newSid"])
        await bb.event("b", "trackSubscribed", identity="alice", sid=switched["newSid"])
        assert await _published(api, room_sid, "alice") == [switched["newSid"]]

        second = await ba.command("a", "eval", within=30, expr=SECOND)
        assert "error" not in second, second
        await bb.event("b", "remoteTrackPublished", identity="alice", sid=second["sid"])
        await bb.event("b", "trackSubscribed", identity="alice", sid=second["sid"])
        assert await _published(api, room_sid, "alice") == sorted(
            [switched["newSid"], second["sid"]]
        )

        restarted = await ba.command("a", "eval", within=30, expr=RESTART)
        assert restarted == {"sid": switched["newSid"], "state": "live"}, restarted

        metrics_port = free_port()
        env = mixer_env(room, hls_dir, metrics_port)
        context = {"room": {"name": "tracks"}, "outputs": ["hls:tracks"]}
        context["maxParticipantDuration"] = 12
        with processes() as procs:
            worker = Proc(["run", "--context", json.dumps(context)], env, tmp_path / "w.log")
            procs.append(worker)
            deadline = time.monotonic() + 40
            while "mixer_inputs 3.0" not in (await asyncio.to_thread(metrics_text, metrics_port)):
                assert time.monotonic() < deadline, worker.log()[-3000:]
                await asyncio.sleep(0.5)
            rc = await asyncio.to_thread(worker.wait, 60)
            (artifacts_dir / "twilio-tracks-worker.log").write_text(worker.log())
            assert rc == 0, worker.log()[-3000:]
        gone = [e for e in bb.events if e["event"] == "remoteTrackUnpublished"]
        assert [e["sid"] for e in gone] == [first], "restart() unpublished nothing"
        left = [e for e in bb.events if e["event"] == "participantDisconnected"]
        assert all(e["identity"] == "audio-mixer-v1" for e in left), left  # the bot's end

    hls = read_hls(hls_dir / "tracks")
    payloads = [p for _, p in hls.payloads]
    assert payloads and all(set(p.levels) <= {"alice", "bob"} for p in payloads)
    assert any(p.levels.get("alice", -1) > 1000 for p in payloads)
