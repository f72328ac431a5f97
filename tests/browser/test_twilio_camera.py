"""A camera never costs a twilio-video.js session (issue 21.2).

Apps connect with the SDK's default tracks (microphone *and* camera); the room server
carries audio only, so each video publication fails alone with 53125 while the audio keeps
reaching the others, whatever the SDK renegotiates afterwards (a camera at connect, one
published later, a screen share, the refused tracks removed again by the SDK).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mixer_ext.connectors.base import TrackSubscribed
from mixer_ext.testing.wait import until
from tests.support.room_util import client, next_event, record, spectrum_peak, write_tone_wav
from tests.support.twilio_util import Browsers, browsers, twilio_room, twilio_token

pytestmark = pytest.mark.timeout(150)

TONE_HZ = 660.0

#: what an app does to share a screen, reduced to a canvas (headless Chromium has no screen
#: to pick): a video MediaStreamTrack published under a name; the SDK offers it like a camera
SCREEN_SHARE = """async () => {
  const canvas = Object.assign(document.createElement("canvas"), { width: 320, height: 180 });
  const ctx = canvas.getContext("2d");
  setInterval(() => {
    ctx.fillStyle = `hsl(${Date.now() % 360},50%,50%)`;
    ctx.fillRect(0, 0, 320, 180);
  }, 100);
  const media = canvas.captureStream(10).getVideoTracks()[0];
  const track = new Twilio.Video.LocalVideoTrack(media, { name: "screen" });
  try { await window.room.localParticipant.publishTrack(track); return { ok: true }; }
  catch (err) { return { code: err.code || null }; }
}"""

CAMERA_LATER = """async () => {
  const track = await Twilio.Video.createLocalVideoTrack({ name: "camera" });
  try { await window.room.localParticipant.publishTrack(track); return { ok: true }; }
  catch (err) { return { code: err.code || null }; }
}"""


async def _hears(track: Any, seconds: float) -> None:
    samples = await record(track, seconds)
    peak, rms = spectrum_peak(samples[len(samples) // 4 :])
    assert abs(peak - TONE_HZ) < 8, f"heard {peak:.1f} Hz"
    assert rms > 0.02, f"tone too quiet (rms {rms:.4f})"


def _failures(b: Browsers) -> list[tuple[str, str]]:
    return [(e["name"], e["kind"]) for e in b.events if e["event"] == "trackPublicationFailed"]


def _left(b: Browsers) -> list[dict[str, Any]]:
    return [e for e in b.events if e["event"] in ("disconnected", "participantDisconnected")]


async def test_default_connect_with_a_camera_keeps_the_audio(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    wav = tmp_path / "mic.wav"
    write_tone_wav(wav, TONE_HZ, 2.0, rate=48_000)
    log = artifacts_dir / "twilio-camera.log"
    async with twilio_room() as room, browsers(room, wav, log) as b:
        listener = client(room.server, "studio", "listener")
        await listener.connect()
        events = listener.events()
        # alice alone first, then bob joins a room with someone to subscribe to: the server's
        # own offer and the SDK's re-offer after the refused camera cross
        for pid, name in (("a", "alice"), ("b", "bob")):
            joined = await b.join(
                room, pid, twilio_token(name, "studio"), "studio", defaultTracks=True
            )
            assert "error" not in joined, joined
            failed = await b.event(pid, "trackPublicationFailed", within=20)
            assert failed["kind"] == "video" and failed["error"]["code"] == 53125, failed
        await b.event("b", "trackSubscribed", identity="alice", kind="audio", within=30)
        await b.event("a", "trackSubscribed", identity="bob", kind="audio", within=30)
        sub = await next_event(events, TrackSubscribed, identity="bob", within=30)
        # ~12 s of the session after the refusal: the audio goes on, nobody leaves
        for _ in range(3):
            await _hears(sub.track, 3.0)
            await asyncio.sleep(1.0)
        assert not _left(b), _left(b)
        for pid in ("a", "b"):
            pubs = await b.command(pid, "eval", expr="async () => window.publications()")
            assert [p["kind"] for p in pubs] == ["audio"], pubs
        failures = [e for e in b.events if e["event"] == "trackPublicationFailed"]
        assert [e["kind"] for e in failures] == ["video", "video"], failures
        await listener.disconnect()


async def test_video_published_later_fails_alone(tmp_path: Path, artifacts_dir: Path) -> None:
    wav = tmp_path / "mic.wav"
    write_tone_wav(wav, TONE_HZ, 2.0, rate=48_000)
    log = artifacts_dir / "twilio-camera-later.log"
    async with twilio_room() as room, browsers(room, wav, log) as b:
        listener = client(room.server, "studio", "listener")
        await listener.connect()
        events = listener.events()
        carol = await b.join(room, "c", twilio_token("carol", "studio"), "studio")
        assert "error" not in carol, carol
        dave = await b.join(room, "d", twilio_token("dave", "studio"), "studio")
        assert "error" not in dave, dave
        await b.event("d", "trackSubscribed", identity="carol", kind="audio", within=30)
        sub = await next_event(events, TrackSubscribed, identity="carol", within=30)
        await _hears(sub.track, 2.0)
        for expr, name in ((CAMERA_LATER, "camera"), (SCREEN_SHARE, "screen")):
            reply = await b.command("c", "eval", expr=expr)
            assert reply == {"code": 53125}, (name, reply)
            refused = [(name, "video")]
            await until(lambda r=refused: _failures(b)[-1:] == r, 10, f"{name} refused")
            await asyncio.sleep(2.0)  # the SDK's re-offers after the refusal are answered
            await _hears(sub.track, 2.0)
        assert not _left(b), _left(b)
        pubs = await b.command("c", "eval", expr="async () => window.publications()")
        assert [p["kind"] for p in pubs] == ["audio"], pubs
        assert _failures(b) == [("camera", "video"), ("screen", "video")]
        # the room's view is unchanged: carol still publishes her audio to dave
        subscribed = [e for e in b.events if e["id"] == "d" and e["event"] == "trackSubscribed"]
        assert [e["kind"] for e in subscribed] == ["audio"], subscribed
        await listener.disconnect()
