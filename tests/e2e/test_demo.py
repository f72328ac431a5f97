"""``mixer-ext demo`` (``make demo``) takes the users' path: the player URL it prints leads,
through a fresh PlaybackGrant in a player access token, to a playable stream that the
API serves; Ctrl-C ends the MediaProcessor through the API (``ended-via-api``) and the
playlist gets ``#EXT-X-ENDLIST``."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest

from mixer_ext.testing.spectrum import tone_levels
from tests.support.env import ROOT, free_port, mixer_ext_cmd
from tests.support.hls_reader import playlist_segments, read_ts


def _get(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.geturl(), bytes(resp.read())


def _jwt_payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def test_demo_plays_through_a_grant_and_ends_through_the_api(tmp_path: Path) -> None:
    http_port, api_port, room_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXER_")}
    data = tmp_path / "api"
    env["MIXER_API_DATA_DIR"] = str(data)
    proc = subprocess.Popen(
        [
            *mixer_ext_cmd(),
            "demo",
            "--http-port",
            str(http_port),
            "--api-port",
            str(api_port),
            "--room-port",
            str(room_port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    try:
        player_url = None
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while player_url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"Player:\s+(http://\S+)", line)
            if m:
                player_url = m.group(1)
        assert player_url == f"http://127.0.0.1:{http_port}/", "".join(seen)
        # the link redirects to the API's player page with a player access token
        page_url, page = _get(player_url)
        assert page_url.startswith(f"http://127.0.0.1:{api_port}/player/?token="), page_url
        assert b"<script" in page
        token = parse_qs(urlsplit(page_url).query)["token"][0]
        grant = _jwt_payload(token)["grants"]["player"]
        assert grant["playerStreamerSid"].startswith("VJ")
        playback = grant["playbackUrl"]
        # without the grant's token the stream is refused
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(playback.split("?")[0])
        assert refused.value.code == 403
        # what the page plays: multivariant -> media playlist -> AAC segments with the tones
        _, master = _get(playback)
        media_url = urljoin(playback, playlist_segments(master.decode())[0])
        time.sleep(7)
        _, playlist = _get(media_url)
        segments = playlist_segments(playlist.decode())
        assert len(segments) >= 2, playlist
        blob = b"".join(_get(urljoin(media_url, s))[1] for s in segments)
        stream = read_ts(blob)
        assert stream.codec == "aac"
        levels = tone_levels(stream.audio, stream.sample_rate, [440.0, 660.0, 880.0, 550.0])
        assert levels[440.0] > 10 * levels[550.0], levels
        assert stream.payloads, "the stream carries timed metadata"
        identities = set().union(*(p.levels for _, p in stream.payloads))
        assert {"alice", "bob", "carol"} <= identities
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        seen.append(out or "")
    log = "".join(seen)
    assert proc.returncode == 0, log[-3000:]
    assert "demo: ended" in log
    sid = grant["playerStreamerSid"]
    assert "#EXT-X-ENDLIST" in (data / "hls" / sid / "index.m3u8").read_text()
    with sqlite3.connect(data / "api.db") as db:
        rows = db.execute("SELECT status, ended_reason FROM media_processors").fetchall()
    assert rows == [("ended", "ended-via-api")], rows
