"""The whole worker in a Janus VideoRoom: ``mixer-ext run`` with ``MIXER_ROOM_BACKEND=janus``.

The same room story as the connector test (``JanusRoomScenario``): alice,
bob (aiortc) and dave (headless Chromium) publish; alice unpublishes and
leaves; carol publishes on the m-line Janus recycles; a moderator mutes and
unmutes bob; dave closes his page.  What a viewer gets is checked: the HLS
output holds every tone, and the timed metadata follows the joins, the
leaves and the mute.  The worker ends by itself at the maximum duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mixer_ext.testing.spectrum import tone_levels
from tests.support.hls_reader import read_hls, runs_where
from tests.support.janus_util import (
    TONES,
    JanusRoomScenario,
    JanusServer,
    janus_server,
    room_config,
)
from tests.support.process_util import Proc, processes

pytestmark = pytest.mark.janus

ROOM = 4321
MAX_DURATION = 32


@pytest.fixture
def janus(tmp_path: Path) -> Iterator[JanusServer]:
    with janus_server(tmp_path, rooms=room_config(ROOM)) as server:
        yield server


def _events(log: str) -> list[dict[str, Any]]:
    out = []
    for line in log.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


async def _wait_log(proc: Proc, event: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not any(e.get("event") == event for e in _events(proc.log())):
        assert proc.popen.poll() is None, proc.log()[-3000:]
        assert time.monotonic() < deadline, f"no {event!r} in the worker log:\n{proc.log()[-3000:]}"
        await asyncio.sleep(0.2)


@pytest.mark.browser  # its publishers are Chromium pages (janus_publisher.mjs)
@pytest.mark.timeout(150)
async def test_worker_mixes_a_janus_room_into_hls(janus: JanusServer, tmp_path: Path) -> None:
    hls_dir = tmp_path / "hls"
    env = {
        "MIXER_ROOM_BACKEND": "janus",
        "MIXER_JANUS_URL": janus.url,
        "MIXER_HLS_DIR": str(hls_dir),
        "MIXER_HLS_PLAYLIST_TYPE": "event",  # keep every segment: the whole story is checked
        "MIXER_LOG_FORMAT": "json",
    }
    context = {
        "room": {"name": str(ROOM)},
        "outputs": ["hls:janus"],
        "maxParticipantDuration": MAX_DURATION,
    }
    scenario = JanusRoomScenario(janus, ROOM, tmp_path)
    with processes() as procs:
        worker = Proc(["run", "--context", json.dumps(context)], env, tmp_path / "worker.log")
        procs.append(worker)
        try:
            await _wait_log(worker, "joined")
            await scenario.start()
            await asyncio.sleep(4)
            await scenario.alice_unpublishes()
            await asyncio.sleep(0.5)
            await scenario.alice_leaves()
            await asyncio.sleep(1)
            await scenario.carol_joins()
            await asyncio.sleep(4)
            await scenario.mute_bob()
            await asyncio.sleep(4)
            await scenario.unmute_bob()
            await asyncio.sleep(4)
            await scenario.dave_leaves()
            rc = await asyncio.to_thread(worker.wait, 90)
        finally:
            await scenario.close()
        wlog = worker.log()
    (tmp_path / "worker.log").write_text(wlog)
    assert rc == 0, wlog[-3000:]
    joins = [e for e in _events(wlog) if e.get("event") == "joined"]
    assert len(joins) == 1, "the bot joined once and stayed"

    hls = read_hls(hls_dir / "janus")
    assert hls.ended, hls.playlist
    payloads = [p for _, p in hls.payloads]
    seqs = [p.seq for p in payloads]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "s must rise by exactly 1"
    assert all("audio-mixer-v1" not in p.levels for p in payloads)
    present = {who: [who in p.levels for p in payloads] for who in TONES}
    for who in TONES:
        assert any(present[who]), f"{who} never in the metadata"

    def first(who: str) -> int:
        return present[who].index(True)

    def last(who: str) -> int:
        return len(present[who]) - 1 - present[who][::-1].index(True)

    # every participant's tone is in the audio a player hears while they are in the room
    times = [t for t, _ in hls.payloads]
    for who, freq in TONES.items():
        lo = int((times[first(who)] + 1.0 - hls.audio_start) * hls.sample_rate)
        hi = int((times[last(who)] - hls.audio_start) * hls.sample_rate)
        assert hi - lo > hls.sample_rate, f"{who} was in the stream for less than 2 s"
        levels = tone_levels(hls.audio[lo:hi], hls.sample_rate, [*TONES.values(), 550.0])
        noise = levels.pop(550.0)
        assert levels[freq] > 0.02 and levels[freq] > 20 * noise, (who, levels, noise)
        if who == "carol":  # alice left before carol came: her tone is gone from the mix
            assert levels[TONES["alice"]] < 0.1 * levels[freq], levels

    # alice and dave: present, then gone for good; carol arrives after alice left
    for who in ("alice", "dave"):
        assert not any(present[who][last(who) + 1 :]), (who, present[who])
        assert last(who) < len(payloads) - 2, f"{who} never left: {present[who]}"
    assert first("carol") > last("alice"), (present["alice"], present["carol"])
    # while present and publishing, a participant's level is the tone's
    alice = [p.levels["alice"] for p in payloads if "alice" in p.levels]
    assert max(alice) > 3000, alice
    # bob: one muted stretch (v = -1) of about 4 s, talking before and after
    bob = [p.levels.get("bob", -2) for p in payloads]
    # (a publisher not yet subscribed is in the room with no audio: -1 too)
    bob = bob[next(i for i, v in enumerate(bob) if v > 1000) :]
    muted = runs_where(bob, lambda v: v == -1)
    assert len(muted) == 1, bob
    start, length = muted[0]
    assert 5 <= length <= 11, bob
    assert bob[start - 1] > 1000 and bob[start + length + 1] > 1000, bob
