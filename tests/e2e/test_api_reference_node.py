"""Twilio's reference audio-mixer backend, replayed with the ``twilio`` Node library 3.x.

``tests/e2e/node/reference_backend.cjs`` holds the serverless functions' steps (create-room,
join-room, remove-speaker, delete-room) as those functions call them: the Node library
(3.84.1, the last 3.x) for Video, axios form POSTs for Media (``Video=false``, the video
variant's context with ``"resolution": "1920x1080", "video": false``, ``Status=ENDED``),
the player grant added as a plain object under the key ``player``. Only the base URLs
differ. Each step runs as its own ``node`` process, as each function ran on its own;
the listener plays the grant's URL over HTTP. The same stack as
tests/e2e/test_api_reference_backend.py (the Python client's replay).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from typing import Any
from urllib.parse import urljoin

from mixer_ext.api.client import basic_authorization
from mixer_ext.testing.spectrum import tone_levels
from mixer_ext.testing.wait import until_sync
from tests.support.api_process import _get
from tests.support.env import ROOT, require_path, require_program
from tests.support.hls_reader import playlist_segments, read_ts
from tests.support.reference_backend import (
    ACCOUNT,
    KEY_SECRET,
    KEY_SID,
    TOKEN,
    TONES,
    Stack,
    unverified_claims,
)

SCRIPT = ROOT / "tests" / "e2e" / "node" / "reference_backend.cjs"
ROOM = "book-club"


def _step(stack: Stack, *args: str) -> dict[str, Any]:
    node = require_program("node", package="nodejs")
    require_path(ROOT / "node_modules" / "twilio", "npm ci has not installed twilio (Node 3.x)")
    env = {
        "PATH": "/usr/bin:/bin",
        "ACCOUNT_SID": ACCOUNT,
        "AUTH_TOKEN": TOKEN,
        "TWILIO_API_KEY_SID": KEY_SID,
        "TWILIO_API_KEY_SECRET": KEY_SECRET,
        "MEDIA_EXTENSION": "audio-mixer-v1",
        "MEDIA_BASE_URL": stack.api_base,
        "VIDEO_BASE_URL": stack.room_base,
    }
    done = subprocess.run(
        [node, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"{args[0]}: {done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_reference_backend_replayed_with_the_node_library(stack: Stack) -> None:
    version = json.loads((ROOT / "node_modules" / "twilio" / "package.json").read_text())
    assert version["version"].startswith("3."), version["version"]

    created = _step(stack, "create-room", ROOM)
    assert created["room_sid"].startswith("RM")
    assert created["media_processor_status"] == "started"
    ps, mp = created["player_streamer_sid"], created["media_processor_sid"]
    stack.talkers(ROOM)

    def fetch(path: str) -> dict[str, Any]:
        """The test's own look at a resource (not a step of the backend)."""
        req = urllib.request.Request(f"{stack.api_base}/v1/{path}")
        req.add_header("Authorization", basic_authorization(ACCOUNT, TOKEN))
        with urllib.request.urlopen(req, timeout=5) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body

    until_sync(
        lambda: fetch(f"PlayerStreamers/{ps}")["status"] == "started", 60, "streaming", every=0.3
    )

    token = _step(stack, "join-room", ps)["token"]
    player = unverified_claims(token)["grants"]["player"]
    assert player["playerStreamerSid"] == ps
    url = player["playbackUrl"]
    status, master, headers = _get(url)
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*", master
    media_url = urljoin(url, playlist_segments(str(master))[0])
    until_sync(
        lambda: len(playlist_segments(str(_get(media_url)[1]))) >= 3,
        40,
        "three segments",
        every=0.3,
    )

    assert _step(stack, "remove-speaker", ROOM, "bob") == {"removed": True}
    time.sleep(3)
    deleted = _step(stack, "delete-room", ROOM, mp, ps)
    assert deleted == {
        "deleted": True,
        "room_status": "completed",
        "media_processor": "ended",
        "player_streamer": "ended",
    }
    final = until_sync(
        lambda: "#EXT-X-ENDLIST" in str(t := _get(media_url)[1]) and t,
        45,
        "#EXT-X-ENDLIST",
        every=0.3,
    )
    segments = playlist_segments(str(final))
    hls = read_ts(b"".join(bytes(_get(urljoin(media_url, s))[1]) for s in segments))
    levels = tone_levels(hls.audio, hls.sample_rate, [*TONES.values(), 550.0])
    noise = levels.pop(550.0)
    for f, a in levels.items():
        assert a > 0.02 and a > 20 * noise, (f, levels, noise)
    named = [set(p.levels) for _, p in hls.payloads]
    assert any({"alice", "bob"} <= n for n in named), named
    assert "bob" not in named[-1]
    assert all("audio-mixer-v1" not in n for n in named)
    mixer = fetch(f"MediaProcessors/{mp}")
    assert json.loads(mixer["extension_context"])["resolution"] == "1920x1080"
