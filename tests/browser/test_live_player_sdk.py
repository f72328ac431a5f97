"""A listener app written against Twilio's Live Player SDK plays the users' path.

The backend's calls through the official ``twilio`` client: a PlayerStreamer, a
MediaProcessor mixing a room of two talkers, a PlaybackGrant for the app's origin
(``AccessControlAllowOrigin``), a player access token holding it (``twilio.jwt``'s
``PlaybackGrant``).  The app, ``player_demo/examples/quickstart.html``, is the SDK's
quickstart with one change, the ``<script>`` it loads (the project's
``twilio-live-player.min.js``, ``Twilio.Live.Player``); it is served from its own origin,
so the stream crosses origins through the API's playback gate as a hosted app's did.
Headless Chromium runs it (autoplay allowed, as after a user's click).  Asserted as an app
developer would: connect resolves ``idle``, the states run idle -> ready -> playing ->
ended, ``timedMetadataReceived`` carries the mixer's payloads (both talkers, sequence
rising) and an app's payload posted through ``POST .../TimedMetadata``, each when its
audio is heard, the player sits LL-HLS close to live, ``setVolume``
reaches the app as ``volumeChanged``, the stream's
end (the backend ends the processor) brings ``ended``, and an invalid token is refused
with the SDK's ``AccessTokenInvalidError`` (code 20101).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web

from mixer_ext.serve.http import HttpEndpoint
from mixer_ext.settings import Settings
from tests.support.api_process import ACCOUNT, SECRET, TOKEN, _Api
from tests.support.browser import page_script
from tests.support.env import ROOT, free_port, require_path
from tests.support.llhls_util import LiveTone
from tests.support.process_util import Proc, processes, start_talker, wait_for_port

pytestmark = pytest.mark.slow

twilio_rest = pytest.importorskip("twilio.rest")
from twilio.jwt.access_token import AccessToken  # noqa: E402
from twilio.jwt.access_token.grants import PlaybackGrant  # noqa: E402

PLAYER_DIR = ROOT / "player_demo"
SCRIPT_BUILD = PLAYER_DIR / "vendor" / "twilio-live-player.min.js"
#: what a backend posts through TimedMetadata (an app's poll, as apps used it)
POLL = '{"poll":"Which track next?","options":["A","B"]}'


async def drive(url: str, budget_s: float, volume_at_s: float) -> dict:  # type: ignore[type-arg]
    spec = {"url": url, "timeoutMs": int(budget_s * 1000), "volumeAtMs": int(volume_at_s * 1000)}
    proc = await asyncio.create_subprocess_exec(
        *page_script("live_player_check.mjs"),
        json.dumps(spec),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_PATH": str(ROOT / "node_modules")},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), budget_s + 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("the live player driver hung") from None
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


def wait_for_stream(playback_url: str, timeout: float = 60) -> None:
    """Until the grant's media playlist exists, as a backend waits for the processor's
    ``media-processor-started`` callback before handing out grants."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(playback_url, timeout=5) as resp:
            lines = resp.read().decode().splitlines()
        media_url = urllib.parse.urljoin(
            playback_url, [x for x in lines if x and not x.startswith("#")][-1]
        )
        try:
            with urllib.request.urlopen(media_url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.3)


async def serve_app() -> tuple[web.AppRunner, str]:
    """The listener app's own origin: player_demo/ as static files."""
    app = web.Application()
    app.router.add_static("/", PLAYER_DIR)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def test_quickstart_app_plays_a_playback_grant(tmp_path: Path) -> None:
    require_path(SCRIPT_BUILD, "no twilio-live-player.min.js: run `make setup`")
    for var in ("TWILIO_REGION", "TWILIO_EDGE"):
        os.environ.pop(var, None)
    room_port, api_port = free_port(), free_port()
    env = {"MIXER_ROOM_SECRET": SECRET, "MIXER_ROOM_URL": f"ws://127.0.0.1:{room_port}"}
    api = _Api.for_account(api_port, env, tmp_path)
    runner, app_origin = await serve_app()
    try:
        with processes() as procs:
            procs.append(
                Proc(["room-server", "--port", str(room_port)], env, tmp_path / "room.log")
            )
            wait_for_port(room_port)
            for name, hz in (("alice", 440), ("bob", 660)):
                start_talker(procs, env, tmp_path / f"{name}.log", "RM-sdk", name, hz, 90)
            api.start()
            client = twilio_rest.Client(ACCOUNT, TOKEN)
            client.media.base_url = f"http://127.0.0.1:{api_port}"
            media = client.media.v1
            ps = media.player_streamer.create(video=False)
            context = {"room": {"name": "RM-sdk"}, "outputs": [ps.sid]}
            mp = media.media_processor.create(
                extension="audio-mixer-v1", extension_context=json.dumps(context)
            )
            grant = (
                media.player_streamer(ps.sid)
                .playback_grant()
                .create(ttl=60, access_control_allow_origin=app_origin)
                .grant
            )
            await asyncio.to_thread(wait_for_stream, grant["playbackUrl"])
            token = AccessToken(ACCOUNT, "SK" + "4" * 32, "signing-secret-" * 3, identity="fan")
            token.add_grant(PlaybackGrant(grant=grant))
            url = f"{app_origin}/examples/quickstart.html?accessToken={quote(token.to_jwt())}"
            player = asyncio.create_task(drive(url, budget_s=75, volume_at_s=12))
            await asyncio.sleep(12)  # some seconds live
            # the backend posts its own timed metadata (a poll) into the live stream
            posted = await asyncio.to_thread(
                client.request,
                "POST",
                f"http://127.0.0.1:{api_port}/v1/PlayerStreamers/{ps.sid}/TimedMetadata",
                data={"Metadata": POLL},
                auth=(ACCOUNT, TOKEN),
            )
            assert posted.status_code == 201, posted.text
            await asyncio.sleep(6)
            assert not player.done(), "the player finished before the stream ended"
            await asyncio.to_thread(media.media_processor(mp.sid).update, status="ended")
            report = await player
    finally:
        api.stop()
        await runner.cleanup()

    why = json.dumps({k: v for k, v in report.items() if k != "samples"})[-3000:]
    assert report["problem"] is None and report["pageErrors"] == [], why
    assert not report["timedOut"], why
    bad = report["invalidToken"]
    assert bad["name"] == "AccessTokenInvalidError" and bad["code"] == 20101, bad
    assert bad["isInstance"] and bad["isTwilioError"] and bad["isSupported"], bad

    events = report["events"]
    kinds = [e["type"] for e in events]
    assert "connectFailed" not in kinds, why
    connected = next(e for e in events if e["type"] == "connected")["detail"]
    assert connected == {"state": "idle", "playerStreamerSid": ps.sid}, connected
    states = [e["detail"]["state"] for e in events if e["type"] == "stateChanged"]
    assert states[:2] == ["ready", "playing"], states
    assert states[-1] == "ended" and states.count("ended") == 1, states
    assert "error" not in kinds, why
    # the app's setVolume(0.5) came through, as volumeChanged
    volumes = [e["detail"] for e in events if e["type"] == "volumeChanged"]
    assert volumes == [{"isMuted": False, "volume": 0.5}], volumes
    durations = [e["detail"]["duration"] for e in events if e["type"] == "durationChanged"]
    assert durations[0] == "Infinity" and durations[-1] != "Infinity", durations

    # the app's poll, once, as timedMetadataReceived {metadata, time}, when heard
    meta = [e["detail"] for e in events if e["type"] == "timedMetadataReceived"]
    polls = [m for m in meta if m["metadata"] == POLL]
    assert len(polls) == 1, [m["metadata"] for m in meta if not m["metadata"].startswith("{")]
    assert polls[0]["source"] == "app", polls
    assert polls[0]["time"] - 0.05 <= polls[0]["position"] <= polls[0]["time"] + 0.5, polls
    # the mixer's payloads, as timedMetadataReceived {metadata, time}
    meta = [m for m in meta if m["metadata"] != POLL]
    assert all(m["source"] == "mixer" for m in meta), meta[:3]
    assert len(meta) >= 20, f"{len(meta)} timed metadata: {why}"
    payloads = [json.loads(m["metadata"]) for m in meta]
    seqs = [p["s"] for p in payloads]
    assert all(b > a for a, b in itertools.pairwise(seqs)), seqs
    assert sum(b - a for a, b in itertools.pairwise(seqs) if b - a > 1) <= 4, seqs
    heard = [p for p in payloads if {"alice", "bob"} <= set(p["p"])]
    assert len(heard) >= 10, payloads[-3:]
    assert all(p["p"]["alice"]["v"] > 1000 and p["p"]["bob"]["v"] > 1000 for p in heard[2:]), heard
    # each delivered when the playhead reached it (its audio heard), not when downloaded
    for m in meta:
        assert m["time"] - 0.05 <= m["position"] <= m["time"] + 0.5, m
    # LL-HLS through the API's origin: close to live once settled
    live = [s["liveLatency"] for s in report["samples"] if s.get("state") == "playing"]
    live = [x for x in live if x][len(live) // 3 :]
    assert live and sorted(live)[len(live) // 2] < 2.0, live


async def test_refused_autoplay_plays_muted_and_tells_the_app(tmp_path: Path) -> None:
    """The SDK's README: when the autoplay policy refuses sound, the audio is muted (and
    VolumeChanged says so).  The worker's own endpoint serves an LL-HLS tone and the
    quickstart app; Chromium runs with its default policy and nobody clicks."""
    require_path(SCRIPT_BUILD, "no twilio-live-player.min.js: run `make setup`")
    settings = Settings(hls_dir=tmp_path, http_host="127.0.0.1", http_port=0)
    endpoint = HttpEndpoint(settings, tmp_path, PLAYER_DIR, None)
    await endpoint.start()
    live = LiveTone(tmp_path / "ll", endpoint.origin, "ll")
    live.thread.start()
    try:
        await asyncio.sleep(1.5)
        base = f"http://127.0.0.1:{endpoint.port}"
        grant = {
            "playbackUrl": f"{base}/hls/ll/index.m3u8",
            "playerStreamerSid": "VJ" + "7" * 32,
            "requestCredentials": None,
        }
        token = AccessToken(ACCOUNT, "SK" + "4" * 32, "signing-secret-" * 3, identity="fan")
        token.add_grant(PlaybackGrant(grant=grant))
        url = f"{base}/examples/quickstart.html?accessToken={quote(token.to_jwt())}"
        proc = await asyncio.create_subprocess_exec(
            *page_script("live_player_autoplay.mjs"),
            json.dumps({"url": url, "timeoutMs": 20000}),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "NODE_PATH": str(ROOT / "node_modules")},
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        live.stop.set()
        await asyncio.to_thread(live.thread.join, 5)
        await endpoint.stop()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    report = json.loads(out.decode().strip().splitlines()[-1])
    lines = report["lines"]
    assert report["problem"] is None, report
    assert any('"state":"playing"' in x for x in lines), lines
    muted = [x for x in lines if x.startswith("[quickstart] volumeChanged")]
    assert muted and '"isMuted":true' in muted[0], lines
    playing = next(i for i, x in enumerate(lines) if '"state":"playing"' in x)
    assert lines.index(muted[0]) < playing, lines  # muted, then it played
