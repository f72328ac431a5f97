"""twilio-video.js (npm, pinned) in headless Chromium against the embedded room server.

The apps connect as Twilio apps do, changing only ``wsServer`` (and ``insights: false``), with
tokens from the official ``twilio`` helper library; a Python participant on the project's own
protocol shares the room.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from mixer_ext.connectors.base import TrackEnabledChanged, TrackSubscribed
from tests.support.room_util import (
    ADMIN,
    client,
    next_event,
    record,
    spectrum_peak,
    token,
    write_tone_wav,
)
from tests.support.twilio_util import browsers, twilio_room, twilio_token

pytestmark = pytest.mark.timeout(150)

TONE_HZ = 700.0


async def test_sdk_room_with_a_python_listener(tmp_path: Path, artifacts_dir: Path) -> None:
    wav = tmp_path / "mic.wav"
    write_tone_wav(wav, TONE_HZ, 2.0, rate=48_000)
    async with twilio_room() as room, browsers(room, wav, artifacts_dir / "twilio-sdk.log") as b:
        listener = client(room.server, "lobby", "listener")
        await listener.connect()
        events = listener.events()
        alice = await b.join(room, "a", twilio_token("alice", "lobby"), "lobby")
        assert "error" not in alice, alice
        assert alice["sid"].startswith("RM") and alice["participant"].startswith("PA")
        assert alice["participants"] == ["listener"]
        assert alice["published"][0].startswith("MT")

        sub = await next_event(events, TrackSubscribed, identity="alice", within=30)
        samples = await record(sub.track, 2.5)
        peak, rms = spectrum_peak(samples[len(samples) // 3 :])
        assert abs(peak - TONE_HZ) < 8, f"heard {peak:.1f} Hz from twilio-video.js"
        assert rms > 0.02, f"tone too quiet (rms {rms:.4f})"

        bob = await b.join(room, "b", twilio_token("bob", "lobby"), "lobby")
        assert "error" not in bob, bob
        assert sorted(bob["participants"]) == ["alice", "listener"]
        await b.event("b", "trackSubscribed", identity="alice", kind="audio", within=30)
        await b.event("a", "participantConnected", identity="bob")

        await b.command("a", "disable")
        await b.event("b", "trackDisabled", identity="alice")
        muted = await next_event(events, TrackEnabledChanged, identity="alice", within=10)
        assert muted.enabled is False
        await b.command("a", "enable")
        await b.event("b", "trackEnabled", identity="alice")

        # the same identity again: the older client is told 53205
        again = await b.join(room, "a2", twilio_token("alice", "lobby"), "lobby")
        assert "error" not in again, again
        gone = await b.event("a", "disconnected")
        assert gone["error"]["code"] == 53205

        await b.command("b", "leave")
        await b.event("a2", "participantDisconnected", identity="bob")

        # the room ends: the SDK reports 53118 (Room completed)
        async with aiohttp.ClientSession() as http:
            url = f"{room.rest_url}/v1/rooms/lobby/end"
            headers = {"Authorization": f"Bearer {ADMIN}"}  # MIXER_ROOM_ADMIN_TOKEN
            async with http.post(url, headers=headers) as resp:
                assert resp.status == 200
        ended = await b.event("a2", "disconnected")
        assert ended["error"]["code"] == 53118


async def test_tokens_refused_with_their_codes(tmp_path: Path, artifacts_dir: Path) -> None:
    wav = tmp_path / "mic.wav"
    write_tone_wav(wav, TONE_HZ, 1.0, rate=48_000)
    async with twilio_room() as room, browsers(room, wav, artifacts_dir / "twilio-tokens.log") as b:
        expired = twilio_token("carol", "lobby", ttl=-60)  # expired a minute ago
        reply = await b.join(room, "c", expired, "lobby")
        assert reply["error"]["code"] == 20104, reply
        reply = await b.join(room, "d", twilio_token("dave", "other-room"), "lobby")
        assert reply["error"]["code"] == 20106, reply
        reply = await b.join(room, "e", token("lobby", "eve"), "lobby")  # the project's own token
        assert reply["error"]["code"] == 20103, reply
        # a Twilio token never takes the mixer's identity (issue 16.2)
        reply = await b.join(room, "m", twilio_token("audio-mixer-v1", "lobby"), "lobby")
        assert reply["error"]["code"] == 53200, reply


async def test_no_automatic_subscription_and_a_full_room(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    wav = tmp_path / "mic.wav"
    write_tone_wav(wav, TONE_HZ, 1.0, rate=48_000)
    log = artifacts_dir / "twilio-full.log"
    async with twilio_room(max_participants=2) as room, browsers(room, wav, log) as b:
        quiet = await b.join(
            room, "c", twilio_token("carol", "small"), "small", automaticSubscription=False
        )
        assert "error" not in quiet, quiet
        dave = await b.join(room, "d", twilio_token("dave", "small"), "small")
        assert "error" not in dave, dave
        await b.event("d", "trackSubscribed", identity="carol", within=30)
        await b.event("c", "participantConnected", identity="dave")
        full = await b.join(room, "e", twilio_token("erin", "small"), "small")
        assert full["error"]["code"] == 53105, full
        assert not [e for e in b.events if e["id"] == "c" and e["event"] == "trackSubscribed"]
