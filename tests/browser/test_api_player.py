"""A listener's path: the player page, given a Twilio-style player access token that
holds a PlaybackGrant, plays the processor's stream in headless Chromium (hls.js) through
the API's grant and session tokens, shows a meter per talker, and reaches its ended
state when the backend ends the processor through the API.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.api_process import ACCOUNT, SECRET, TOKEN, _Api
from tests.support.env import ROOT, free_port, require_path
from tests.support.player_util import check_played_live_stream, drive_player
from tests.support.process_util import Proc, processes, wait_for_port

pytestmark = pytest.mark.slow

twilio_rest = pytest.importorskip("twilio.rest")
from twilio.jwt.access_token import AccessToken  # noqa: E402
from twilio.jwt.access_token.grants import PlaybackGrant  # noqa: E402


async def test_player_page_plays_a_player_access_token(tmp_path: Path) -> None:
    require_path(ROOT / "player_demo" / "vendor" / "hls.min.mjs", "no hls.js: run `make setup`")
    for var in ("TWILIO_REGION", "TWILIO_EDGE"):
        os.environ.pop(var, None)
    room_port, api_port = free_port(), free_port()
    env = {"MIXER_ROOM_SECRET": SECRET, "MIXER_ROOM_URL": f"ws://127.0.0.1:{room_port}"}
    api = _Api.for_account(api_port, env, tmp_path)
    base = f"http://127.0.0.1:{api_port}"
    try:
        with processes() as procs:
            procs.append(
                Proc(["room-server", "--port", str(room_port)], env, tmp_path / "room.log")
            )
            wait_for_port(room_port)
            for name, hz in (("alice", 440), ("bob", 660)):
                procs.append(
                    Proc(
                        [
                            "talker",
                            "--room",
                            "RM-web",
                            "--identity",
                            name,
                            "--tone",
                            str(hz),
                            "--duration",
                            "90",
                        ],
                        env,
                        tmp_path / f"{name}.log",
                    )
                )
            api.start()
            client = twilio_rest.Client(ACCOUNT, TOKEN)
            client.media.base_url = base
            media = client.media.v1
            ps = media.player_streamer.create(video=False)
            mp = media.media_processor.create(
                extension="audio-mixer-v1",
                extension_context=json.dumps({"room": {"name": "RM-web"}, "outputs": [ps.sid]}),
            )
            grant = media.player_streamer(ps.sid).playback_grant().create(ttl=60).grant
            token = AccessToken(ACCOUNT, "SK" + "4" * 32, "signing-secret-" * 3, identity="fan")
            token.add_grant(PlaybackGrant(grant=grant))
            page = f"{base}/player/?token={quote(token.to_jwt())}"
            player = asyncio.create_task(
                drive_player(page, identities=["alice", "bob"], budget_s=75)
            )
            await asyncio.sleep(14)  # startup, then some seconds live
            # a backend's own timed metadata in the stream: the page plays on, shows no
            # meter for it and warns about nothing (it is not a level payload)
            posted = await asyncio.to_thread(
                client.request,
                "POST",
                f"{base}/v1/PlayerStreamers/{ps.sid}/TimedMetadata",
                data={"Metadata": "slide 2"},
                auth=(ACCOUNT, TOKEN),
            )
            assert posted.status_code == 201, posted.text
            await asyncio.sleep(6)
            assert not player.done(), "the player finished before the stream ended"
            await asyncio.to_thread(media.media_processor(mp.sid).update, status="ended")
            report = await player
    finally:
        api.stop()
    check_played_live_stream(report, identities={"alice": False, "bob": False})
    # The listeners' path is the fast path (issue 24.2): the grant's playlist is LL-HLS, so
    # the page plays it with the project's LL tuning although nothing told it so (no
    # config.json beside the API's page): it aims at PART-HOLD-BACK (0.6 s) behind live,
    # not hls.js's 3 target durations (7.5 s here before the page learnt it), and it
    # gets there (issue 27.4): it settles within 0.1 s of its target.  Main's player aimed
    # at a fixed 0.6 s but stayed where it started, 0.80-1.06 s behind (0.2-0.46 s over).
    # Each stall raises the target by 0.2 s, so the target itself is bounded too.
    live = [s for s in report.samples if s["state"] == "live" and s["latency"] and s["target"]]
    settled = live[len(live) // 3 :]
    assert settled, report.summary()
    over = sorted(s["latency"] - s["target"] for s in settled)
    assert over[len(over) // 2] < 0.1, f"behind live minus the target: {over}"
    lat = sorted(s["latency"] for s in settled)
    assert lat[len(lat) // 2] < 1.0, f"behind live through the API's page: {lat}"
