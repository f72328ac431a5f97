"""Issue 16.7: a restart is a resume.

A real ``mixer-ext run`` (room server, one talker) is killed with SIGKILL mid-run
(what an OOM kill or a node hiccup does to a container) and started again with the
same context into the same directories, as a Kubernetes container restart would.
What a user checks afterwards:

* one continuous LL-HLS playlist: media sequence numbers contiguous and rising,
  every file the first process listed still there with the same bytes (a name never
  comes back with other content), exactly one ``#EXT-X-DISCONTINUITY``, before the
  new process's first segment, and ``#EXT-X-ENDLIST`` at the end;
* FFmpeg's HLS demuxer (a real player's reading) decodes the whole playlist, and the
  talker's tone is in it before and after the restart;
* the run ends at the maximum duration counted from the *first* process's join,
  not from the restart;
* status callbacks: sequence numbers rise across both processes;
* the recording of the killed process is kept (still plays), the new one beside it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import av
import pytest
from aiohttp import web

from mixer_ext.hls.playlist import parse_media_playlist
from mixer_ext.testing.spectrum import tone_levels
from mixer_ext.testing.wait import until
from tests.support.env import free_port, require_program
from tests.support.hls_reader import read_hls
from tests.support.process_util import Proc, processes, start_room_server, start_talker

SECRET = "restart-secret-not-for-production-0123456789"
MAX_DURATION = 14
TONE = 440.0


async def _callback_server(received: list[tuple[float, dict[str, Any]]]) -> tuple[Any, int]:
    async def hook(request: web.Request) -> web.Response:
        received.append((time.monotonic(), await request.json()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/status", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _decoded_seconds(path: Path) -> float:
    with av.open(str(path)) as c:
        return sum(f.samples for f in c.decode(audio=0)) / 48_000


async def test_sigkill_then_restart_continues_the_run(tmp_path: Path) -> None:
    ffmpeg = require_program("ffmpeg")
    received: list[tuple[float, dict[str, Any]]] = []
    runner, cb_port = await _callback_server(received)
    room_port = free_port()
    env = {"MIXER_ROOM_SECRET": SECRET, "MIXER_ROOM_URL": f"ws://127.0.0.1:{room_port}"}
    hls = tmp_path / "hls"
    stream = hls / "ev"
    recording = tmp_path / "rec.m4a"
    context = json.dumps(
        {
            "room": {"name": "RM-restart"},
            "outputs": ["hls:ev", f"file:{recording}"],
            "audioBitrate": 64,
            "maxParticipantDuration": MAX_DURATION,
        }
    )
    worker_env = {
        **env,
        "MIXER_HLS_DIR": str(hls),
        "MIXER_HLS_PLAYLIST_TYPE": "event",
        "MIXER_HLS_SEGMENT_DURATION": "1",
        "MIXER_STATUS_CALLBACK_URL": f"http://127.0.0.1:{cb_port}/status",
    }
    try:
        with processes() as procs:
            start_room_server(procs, room_port, env, tmp_path / "server.log")
            start_talker(procs, env, tmp_path / "talker.log", "RM-restart", "alice", TONE, 60)
            first = Proc(["run", "--context", context], worker_env, tmp_path / "w1.log")
            procs.append(first)
            await until(
                lambda: any(r["state"] == "started" for _t, r in received), 40, "no join", every=0.1
            )
            joined_at = next(t for t, r in received if r["state"] == "started")
            await until(
                lambda: (
                    (stream / "index.m3u8").exists()
                    and len(parse_media_playlist((stream / "index.m3u8").read_text()).segments) >= 4
                ),
                20,
                "four segments never appeared",
                every=0.1,
            )
            await asyncio.sleep(0.5)  # mid-segment: some parts of an open segment listed
            first.popen.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(first.wait, 10) == -signal.SIGKILL
            before = parse_media_playlist((stream / "index.m3u8").read_text())
            assert not before.ended
            shown = {s.uri for s in before.segments} | {
                p.uri for s in before.segments for p in s.parts
            }
            shown |= {p.uri for p in before.open_parts}
            digests = {name: _digest(stream / name) for name in shown}
            recorded = _decoded_seconds(recording)
            await asyncio.sleep(1.0)

            second = Proc(["run", "--context", context], worker_env, tmp_path / "w2.log")
            procs.append(second)
            rc = await asyncio.to_thread(second.wait, 60)
            ended_at = time.monotonic()
            assert rc == 0, second.log()[-3000:]
            await asyncio.sleep(0.5)  # the last callback
    finally:
        await runner.cleanup()

    # --- the deadline counts from the first process's join
    in_room = ended_at - joined_at
    assert MAX_DURATION - 1 <= in_room < MAX_DURATION + 5, (in_room, second.log()[-2000:])

    # --- one continuous playlist
    text = (stream / "index.m3u8").read_text()
    final = parse_media_playlist(text)
    assert final.ended
    numbers = [int(s.uri[4:10]) for s in final.segments]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    assert [s.sequence for s in final.segments] == numbers
    for name, digest in digests.items():  # nothing shown before was rewritten or lost
        assert _digest(stream / name) == digest, name
    marked = [s for s in final.segments if s.discontinuity]
    assert len(marked) == 1, text
    old_msns = {s.sequence for s in before.segments}
    if before.open_parts:
        old_msns.add(before.next_sequence)  # the killed run's open segment, closed on resume
    assert marked[0].sequence == max(old_msns) + 1
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    assert len(final.segments) > len(old_msns) + 3

    # --- a real player's demuxer reads it across the restart; the tone is on both sides
    out = await asyncio.to_thread(
        subprocess.run,
        [ffmpeg, "-v", "error", "-i", str(stream / "index.m3u8"), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    played = read_hls(stream)
    rate = played.sample_rate
    split = sum(s.duration for s in final.segments if s.sequence < marked[0].sequence)
    for lo, hi in ((split - 1.5, split - 0.3), (split + 2.0, split + 3.5)):
        chunk = played.audio[int(lo * rate) : int(hi * rate)]
        assert tone_levels(chunk, rate, [TONE])[TONE] > 0.01, (lo, hi)

    # --- status sequence numbers go on rising across the two processes
    reports = [r for _t, r in received]
    seqs = [r["sequence"] for r in reports]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), reports
    assert [r["state"] for r in reports].count("initializing") == 2
    assert [r["state"] for r in reports].count("started") == 2
    assert reports[-1]["state"] == "ended" and reports[-1]["reason"] == "max-participant-duration"

    # --- the killed process's recording stays; the new process records beside it
    assert _decoded_seconds(recording) == pytest.approx(recorded, abs=0.05)
    assert recorded > 2.0
    assert _decoded_seconds(tmp_path / "rec-2.m4a") > 3.0


async def test_a_run_restarted_past_its_deadline_ends_at_once(tmp_path: Path) -> None:
    """Scripted connector (its one join would last an hour), the rest real: a run whose
    first join was 100 s ago, with a 60 s maximum, ends as soon as it starts again."""
    from mixer_ext.context import ExtensionContext
    from mixer_ext.settings import Settings
    from mixer_ext.worker import runner as worker_mod
    from mixer_ext.worker.runstate import STATE_NAME
    from tests.support.worker import ScriptedConnector

    (tmp_path / "t").mkdir()
    (tmp_path / "t" / STATE_NAME).write_text(
        json.dumps({"first_join": time.time() - 100, "status_sequence": 7, "runs": 1})
    )
    log: list[str] = []
    ctx = ExtensionContext.model_validate(
        {"room": {"name": "RM"}, "outputs": ["hls:t"], "maxParticipantDuration": 60}
    )
    w = worker_mod.Worker(
        ctx,
        Settings(hls_dir=tmp_path, http_linger=0),
        connector_factory=lambda *_: ScriptedConnector(("join", None, 3600), log),
    )
    t0 = time.monotonic()
    assert await asyncio.wait_for(w.run(), 20) == 0
    assert time.monotonic() - t0 < 5.0
    assert w.resumed
    assert w.status.reason == "max-participant-duration"
    assert w.status.sequence > 7
    saved = json.loads((tmp_path / "t" / STATE_NAME).read_text())
    assert saved["ended"] and saved["runs"] == 2
