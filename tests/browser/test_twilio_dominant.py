"""Dominant speaker for twilio-video.js 2.36.0 clients in Chromium (issue 22.2).

Alice and Bob each publish a tone (each browser its own fake microphone) and take turns,
switching every 3 s by enabling one track and disabling the other; Carol listens (her
microphone disabled), all with ``dominantSpeaker: true``.  Carol's ``dominantSpeakerChanged``
names whoever talks by the end of each turn, and fires once per turn (no flapping).  The
server reads the RFC 6464 levels in the RTP headers: nothing is decoded.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.room_util import write_tone_wav
from tests.support.twilio_util import browsers, twilio_room, twilio_token

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

TURN = 3.0

LISTEN = """() => {
  window.ds = [];
  window.room.on("dominantSpeakerChanged", (p) => window.ds.push(p ? p.identity : null));
  return true;
}"""


async def test_dominant_speaker_follows_two_talkers_taking_turns(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    wav_a, wav_b = tmp_path / "a.wav", tmp_path / "b.wav"
    write_tone_wav(wav_a, 440.0, 2.0, rate=48_000)
    write_tone_wav(wav_b, 660.0, 2.0, rate=48_000)
    async with (
        twilio_room() as room,
        browsers(room, wav_a, artifacts_dir / "twilio-dominant-a.log") as ba,
        browsers(room, wav_b, artifacts_dir / "twilio-dominant-b.log") as bb,
    ):
        carol = await bb.join(room, "c", twilio_token("carol", "ds"), "ds", dominantSpeaker=True)
        assert "error" not in carol, carol
        assert await bb.command("c", "disable") is True
        assert await bb.command("c", "eval", expr=LISTEN) is True
        alice = await ba.join(room, "a", twilio_token("alice", "ds"), "ds", dominantSpeaker=True)
        assert "error" not in alice, alice
        assert await ba.command("a", "disable") is True
        bob = await bb.join(room, "b", twilio_token("bob", "ds"), "ds", dominantSpeaker=True)
        assert "error" not in bob, bob
        assert await bb.command("b", "disable") is True
        await bb.event("c", "trackSubscribed", identity="alice")
        await bb.event("c", "trackSubscribed", identity="bob")

        # each joined talking (the SDK's track starts enabled): who was dominant then
        # stays so until the other takes a turn, so the turns start with the other
        await asyncio.sleep(TURN)
        before = await bb.command("c", "eval", expr="() => window.ds")
        first, second = ("bob", "alice") if before and before[-1] == "alice" else ("alice", "bob")
        talkers = [first, second, first, second]
        for n, talker in enumerate(talkers):
            quiet = talkers[n - 1] if n else None
            if quiet is not None:
                await (ba if quiet == "alice" else bb).command(quiet[0], "disable")
            await (ba if talker == "alice" else bb).command(talker[0], "enable")
            await asyncio.sleep(TURN)
            seen = await bb.command("c", "eval", expr="() => window.ds")
            assert seen and seen[-1] == talker, f"turn {n} ({talker}): carol saw {seen}"
        # one change per turn: no flapping between the two while each talks
        assert seen[len(before) :] == talkers, (before, seen)
