"""``mixer-ext demo`` (``make demo``): the player URL it prints serves a playable stream."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, mixer_ext_cmd
from tests.hls_reader import playlist_segments, read_ts, tone_levels

pytestmark = pytest.mark.slow


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return bytes(resp.read())


def test_demo_serves_a_playable_stream_and_stops_cleanly(tmp_path: Path) -> None:
    http_port, room_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXER_")}
    env["MIXER_HLS_DIR"] = str(tmp_path / "hls")
    proc = subprocess.Popen(
        [*mixer_ext_cmd(), "demo", "--http-port", str(http_port), "--room-port", str(room_port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    try:
        player_url = None
        deadline = time.monotonic() + 90
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
        page = _get(player_url).decode()
        assert "<script" in page
        # what the page plays: a live playlist whose segments carry AAC and the tones
        playlist_url = f"http://127.0.0.1:{http_port}/hls/demo/index.m3u8"
        time.sleep(7)
        playlist = _get(playlist_url).decode()
        segments = playlist_segments(playlist)
        assert len(segments) >= 2, playlist
        blob = b"".join(_get(f"http://127.0.0.1:{http_port}/hls/demo/{s}") for s in segments)
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
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        seen.append(out or "")
    assert proc.returncode == 0, "".join(seen)[-3000:]
    assert "demo: ended" in "".join(seen)
    assert "#EXT-X-ENDLIST" in (tmp_path / "hls" / "demo" / "index.m3u8").read_text()
