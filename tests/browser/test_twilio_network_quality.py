"""Network quality for twilio-video.js 2.36.0 clients in Chromium (issue 22.3).

Alice and Bob connect with ``networkQuality: {local: 2, remote: 1}``: each gets
``networkQualityLevelChanged`` with a good level on loopback, with stats (verbosity 2).
Then a quarter of Alice's packets are lost on her way in: a test-only hook at the
server's transport (the test wraps her receivers' ``_handle_rtp_packet`` in the server
process and drops every fourth packet before aiortc sees it, as a lossy uplink would).
Her level drops (her stats show the loss), Bob sees her remote level drop, his own stays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mixer_ext.testing.wait import until
from tests.support.room_util import write_tone_wav
from tests.support.twilio_util import Browsers, TwilioRoom, browsers, twilio_room, twilio_token

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

LISTEN = """() => {
  window.nq = [];
  const lp = window.room.localParticipant;
  lp.on("networkQualityLevelChanged", (level, stats) => {
    const send = stats && stats.audio && stats.audio.sendStats;
    window.nq.push({ who: "local", level,
      lost: send && send.fractionLost ? send.fractionLost.fractionLost : null });
  });
  const hook = (p) => p.on("networkQualityLevelChanged", (level) =>
    window.nq.push({ who: p.identity, level }));
  window.room.participants.forEach(hook);
  window.room.on("participantConnected", hook);
  return true;
}"""


def _last(seen: list[dict[str, Any]], who: str) -> dict[str, Any] | None:
    mine = [x for x in seen if x["who"] == who]
    return mine[-1] if mine else None


async def _page_until(
    b: Browsers, pid: str, check: Any, within: float = 25.0
) -> list[dict[str, Any]]:
    got = await until(
        lambda: b.command(pid, "eval", expr="() => window.nq"),
        within,
        f"{pid}'s page to match",
        ok=check,
        every=0.5,
    )
    return list(got)


def _lose_every_fourth(room: TwilioRoom, identity: str) -> int:
    """The test-only hook: drop a quarter of ``identity``'s RTP at the server's transport."""
    session = next(s for s in room.gateway.sessions.values() if s.identity == identity)
    receivers = list(session._carriers.values())
    for receiver in receivers:
        original = receiver._handle_rtp_packet
        count = [0]

        async def lossy(packet: Any, arrival_time_ms: int, _o: Any = original, _c: Any = count):
            _c[0] += 1
            if _c[0] % 4:
                await _o(packet, arrival_time_ms)

        receiver._handle_rtp_packet = lossy  # type: ignore[method-assign]
    return len(receivers)


async def test_network_quality_levels_and_a_lossy_uplink(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    wav = tmp_path / "a.wav"
    write_tone_wav(wav, 520.0, 2.0, rate=48_000)
    quality = {"local": 2, "remote": 1}
    async with (
        twilio_room() as room,
        browsers(room, wav, artifacts_dir / "twilio-nq.log") as b,
    ):
        alice = await b.join(room, "a", twilio_token("alice", "nq"), "nq", networkQuality=quality)
        assert "error" not in alice, alice
        assert await b.command("a", "eval", expr=LISTEN) is True
        bob = await b.join(room, "b", twilio_token("bob", "nq"), "nq", networkQuality=quality)
        assert "error" not in bob, bob
        assert await b.command("b", "eval", expr=LISTEN) is True

        def good(who: str) -> Any:
            return lambda seen: (_last(seen, who) or {}).get("level", 0) >= 4

        await _page_until(b, "a", good("local"))
        await _page_until(b, "b", good("local"))
        await _page_until(b, "b", good("alice"))

        assert _lose_every_fourth(room, "alice") == 1

        def poor(who: str) -> Any:
            return lambda seen: (_last(seen, who) or {}).get("level", 5) <= 2

        seen = await _page_until(b, "a", poor("local"))
        # her stats (sent with the level) show the loss that level means: 7 % or more
        last = _last(seen, "local")
        assert last is not None and last["lost"] is not None and last["lost"] >= 0.07, seen
        await _page_until(b, "b", poor("alice"))
        bob_seen = await b.command("b", "eval", expr="() => window.nq")
        assert (_last(bob_seen, "local") or {}).get("level", 0) >= 4, bob_seen
