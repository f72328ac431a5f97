"""The control plane as an existing backend uses it: the official ``twilio`` 9.0.2 client
against a real ``mixer-ext api`` (local launcher), the embedded room server and two talkers.

One run checks the issue's contract: PlayerStreamer + MediaProcessor are created, the
processor starts and streams; a PlaybackGrant's URL plays (both tones, ID3 payloads name
both talkers) and the playlist is refused without, with a forged or with an expired
token; the API restarts under a running processor and keeps controlling it; ending it
through the API finishes the playlist and the PlayerStreamer; the status callbacks come
in order and pass ``RequestValidator``; list() pages; bad requests raise
``TwilioRestException`` with the right status and a message naming the problem; an
app's TimedMetadata reaches the HLS a player reads and ffmpeg's RTMP listener, through
the running worker.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urljoin

import pytest

from mixer_ext.api.store import Store
from mixer_ext.testing.spectrum import tone_levels
from mixer_ext.testing.wait import until_sync
from tests.support.api_process import ACCOUNT, SECRET, TOKEN, _Api, _get
from tests.support.env import free_port
from tests.support.hls_reader import playlist_segments, read_ts
from tests.support.process_util import Proc, processes, start_room_server
from tests.support.rtmp import KEY, FfmpegListener

pytestmark = pytest.mark.rtmp

twilio_rest = pytest.importorskip("twilio.rest")
from twilio.base.exceptions import TwilioRestException  # noqa: E402
from twilio.request_validator import RequestValidator  # noqa: E402

TONES = {"alice": 440.0, "bob": 660.0}
APP_TEXTS = ["slide:1", '{"poll":"open"}']


class _Hooks(BaseHTTPRequestHandler):
    received: list[tuple[str, str, dict[str, str], str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _record(self, method: str, body: str) -> None:
        url = f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"
        self.received.append(
            (method, url, dict(parse_qsl(body)), self.headers.get("X-Twilio-Signature", ""))
        )
        self.send_response(204)
        self.end_headers()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._record("POST", self.rfile.read(length).decode())

    def do_GET(self) -> None:
        self._record("GET", "")


@pytest.fixture
def hooks() -> Iterator[tuple[str, list[tuple[str, str, dict[str, str], str]]]]:
    received: list[tuple[str, str, dict[str, str], str]] = []
    handler = type("Hooks", (_Hooks,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()


def test_backend_code_runs_unchanged(tmp_path: Path, hooks: Any) -> None:
    hook_url, received = hooks
    for var in ("TWILIO_REGION", "TWILIO_EDGE"):
        os.environ.pop(var, None)
    room_port, api_port = free_port(), free_port()
    env = {"MIXER_ROOM_SECRET": SECRET, "MIXER_ROOM_URL": f"ws://127.0.0.1:{room_port}"}
    # event playlists: every segment stays listed, so the whole run is checkable
    api = _Api.for_account(api_port, {**env, "MIXER_HLS_PLAYLIST_TYPE": "event"}, tmp_path)
    base = f"http://127.0.0.1:{api_port}"
    client = twilio_rest.Client(ACCOUNT, TOKEN)
    client.media.base_url = base
    media = client.media.v1
    worker_pid = None
    listener: FfmpegListener | None = None
    try:
        with processes() as procs:
            start_room_server(procs, room_port, env, tmp_path / "room.log")
            for name, hz in TONES.items():
                procs.append(
                    Proc(
                        [
                            "talker",
                            "--room",
                            "RM-api",
                            "--identity",
                            name,
                            "--tone",
                            str(hz),
                            "--duration",
                            "90",
                        ],
                        env,
                        tmp_path / f"talker-{name}.log",
                    )
                )
            api.start()

            # --- credentials
            bad = twilio_rest.Client(ACCOUNT, "wrong-token")
            bad.media.base_url = base
            with pytest.raises(TwilioRestException) as err:
                bad.media.v1.player_streamer.create()
            assert (err.value.status, err.value.code) == (401, 20003)

            # --- PlayerStreamers, paging through next_page_url
            ps = media.player_streamer.create(status_callback=hook_url + "/ps")
            assert ps.status == "created" and ps.sid.startswith("VJ")
            extra = [media.player_streamer.create().sid for _ in range(3)]
            listed = [s.sid for s in media.player_streamer.list(page_size=2)]
            assert sorted(listed) == sorted([ps.sid, *extra])
            first = media.player_streamer.page(page_size=2)
            assert len(list(first)) == 2 and first.next_page_url.startswith(base + "/v1/")

            # --- refusals that name the problem
            def refused(**kw: Any) -> TwilioRestException:
                with pytest.raises(TwilioRestException) as e:
                    media.media_processor.create(**kw)
                return e.value

            e = refused(
                extension="video-composer-v2",
                extension_context=json.dumps({"room": {"name": "x"}, "outputs": [ps.sid]}),
            )
            assert e.status == 400 and "video-composer-v2" in e.msg
            e = refused(
                extension="audio-mixer-v1", extension_context=json.dumps({"outputs": [ps.sid]})
            )
            assert e.status == 400 and "room" in e.msg
            ghost = "VJ" + "f" * 32
            e = refused(
                extension="audio-mixer-v1",
                extension_context=json.dumps({"room": {"name": "x"}, "outputs": [ghost]}),
            )
            assert e.status == 400 and ghost in e.msg and "not found" in e.msg
            assert list(media.media_processor.list()) == []  # nothing was launched

            # --- the processor: the PlayerStreamer, and RTMP to ffmpeg's listener
            rtmp_port = free_port()
            listener = FfmpegListener(rtmp_port, tmp_path / "got.flv")
            rtmp = f"rtmp://127.0.0.1:{rtmp_port}/live/{KEY}"
            mp = media.media_processor.create(
                extension="audio-mixer-v1",
                extension_context=json.dumps(
                    {"room": {"name": "RM-api"}, "outputs": [ps.sid, rtmp]}
                ),
                status_callback=hook_url + "/mp",
                max_duration=240,
            )
            assert mp.status == "started" and mp.sid.startswith("ZX") and mp.max_duration == 240
            until_sync(
                lambda: any(
                    p.get("StatusCallbackEvent") == "media-processor-started"
                    for _, _, p, _ in received
                ),
                60,
                "media-processor-started",
                every=0.3,
            )
            assert media.player_streamer(ps.sid).fetch().status == "started"
            assert [p.sid for p in media.media_processor.list(status="started")] == [mp.sid]

            # --- playback through a grant
            grant = media.player_streamer(ps.sid).playback_grant().create(ttl=60).grant
            assert grant["playerStreamerSid"] == ps.sid and grant["requestCredentials"] is None
            url = grant["playbackUrl"]
            status, master, headers = _get(url)
            assert status == 200 and headers["Access-Control-Allow-Origin"] == "*", master
            media_url = urljoin(url, playlist_segments(str(master))[0])
            playlist = until_sync(
                lambda: (t := _get(media_url)[1]) and len(playlist_segments(str(t))) >= 4 and t,
                40,
                "four segments",
                every=0.3,
            )

            # refused: no token, forged token, expired token, no session
            assert _get(url.split("?")[0])[0] == 403
            assert _get(url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB"))[0] == 403
            # --- an app's timed metadata: into HLS and RTMP through the running worker
            for text in APP_TEXTS:
                resp = client.request(
                    "POST",
                    f"{base}/v1/PlayerStreamers/{ps.sid}/TimedMetadata",
                    data={"Metadata": text},
                    auth=(ACCOUNT, TOKEN),
                )
                assert resp.status_code == 201, resp.text
                time.sleep(0.3)

            short = media.player_streamer(ps.sid).playback_grant().create(ttl=1).grant
            time.sleep(2.1)
            assert _get(short["playbackUrl"])[0] == 403
            assert _get(media_url.split("?")[0])[0] == 403

            # --- the API restarts under the running processor
            worker_pid = _worker_pid(tmp_path / "data", mp.sid)
            # the context (stream keys, in real use) is in a private file, never in argv
            argv = Path(f"/proc/{worker_pid}/cmdline").read_bytes().split(b"\0")
            assert not any(b"RM-api" in a for a in argv), argv
            ctx_file = tmp_path / "data" / "private" / f"{mp.sid}.json"
            assert ctx_file.stat().st_mode & 0o777 == 0o600
            assert api.stop() == 0
            api.start()
            assert media.media_processor(mp.sid).fetch().status == "started"
            os.kill(worker_pid, 0)  # the worker kept running
            # a player that started before the restart keeps playing
            later = until_sync(
                lambda: (
                    (t := _get(media_url)[1])
                    and len(playlist_segments(str(t))) > len(playlist_segments(str(playlist)))
                    and t
                ),
                20,
                "more segments",
                every=0.3,
            )

            # --- end it through the API
            ended = media.media_processor(mp.sid).update(status="ended")
            assert (ended.status, ended.ended_reason) == ("ended", "ended-via-api")
            final = until_sync(
                lambda: "#EXT-X-ENDLIST" in str(t := _get(media_url)[1]) and t,
                45,
                "#EXT-X-ENDLIST",
                every=0.3,
            )
            s = media.player_streamer(ps.sid).fetch()
            assert (s.status, s.ended_reason) == ("ended", "stream-disconnected-by-source")
            until_sync(lambda: not _alive(worker_pid), 45, "worker exit", every=0.3)
            assert later
            segments = playlist_segments(str(final))
            blob = b"".join(bytes(_get(urljoin(media_url, seg))[1]) for seg in segments)
            listener.stop(wait_end=10.0)
    finally:
        api.stop()
        if listener is not None and listener.proc.poll() is None:
            listener.stop()
        if worker_pid and _alive(worker_pid):
            os.kill(worker_pid, 9)

    # --- the stream a listener received
    hls = read_ts(blob, playlist=str(final), segments=segments)
    assert hls.codec == "aac" and hls.duration > 6
    levels = tone_levels(hls.audio, hls.sample_rate, [*TONES.values(), 550.0])
    noise = levels.pop(550.0)
    for f, a in levels.items():
        assert a > 0.02 and a > 20 * noise, (f, levels, noise)
    for name in TONES:
        assert any(name in p.levels for _, p in hls.payloads), name
    # the app's strings: once each, in order, in the HLS a player reads and over RTMP
    assert [t for _, t in hls.app_payloads] == APP_TEXTS, hls.app_payloads
    assert listener is not None
    got = listener.app_payloads()
    assert [t for _, t in got] == APP_TEXTS, (got, listener.proc.returncode)
    assert len(listener.payloads()) >= 10, len(listener.payloads())

    # --- the status callbacks: in order per resource, signed as Twilio signs
    validator = RequestValidator(TOKEN)
    for method, url, params, sig in received:
        assert validator.validate(url, params if method == "POST" else {}, sig), url
    mp_events = [
        (p["StatusCallbackEvent"], p["SequenceNumber"])
        for _, u, p, _ in received
        if u.endswith("/mp")
    ]
    assert mp_events == [("media-processor-started", "0"), ("media-processor-ended", "1")]
    last = next(p for _, u, p, _ in received if p["StatusCallbackEvent"] == "media-processor-ended")
    assert last["EndedReason"] == "ended-via-api" and last["MediaProcessorSid"] == mp.sid
    assert last["AccountSid"] == ACCOUNT and last["Extension"] == "audio-mixer-v1"
    ps_events = [p["StatusCallbackEvent"] for _, u, p, _ in received if u.endswith("/ps")]
    assert ps_events == ["player-streamer-started", "player-streamer-ended"]
    assert TOKEN not in api.log() and SECRET not in api.log()
    worker_log = next((tmp_path / "data" / "logs").glob("ZX*.log")).read_text()
    assert KEY not in api.log() and KEY not in worker_log


def _worker_pid(data_dir: Path, sid: str) -> int:
    store = Store(data_dir / "api.db")
    try:
        worker = store.worker(sid)
    finally:
        store.close()
    assert worker is not None
    return int(worker[1]["pid"])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False
