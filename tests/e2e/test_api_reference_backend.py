"""Twilio's published reference backend for audio-mixer rooms, replayed unchanged.

``twilio/twilio-live-interactive-audio`` (Node serverless functions: ``create-room``,
``join-room``, ``remove-speaker``, ``delete-room``) and its video sibling drive the
hosted service with the ``twilio`` library for Video and plain form POSTs for Media.
Their steps are replayed here with the official ``twilio`` Python client (9.0.2) and
their exact parameters, only the base URLs changed, against a real ``mixer-ext api``
(local launcher: a real worker), ``mixer-ext room-server`` (its Video REST) and two
talkers:

- create-room: ``rooms.create(unique_name, type="group")``; a PlayerStreamer with
  ``Video=false``; a MediaProcessor with ``ExtensionContext={"room": {"name": RM…},
  "outputs": [VJ…], "video": false}`` (the hosted service ignored ``video``);
- join-room: a PlaybackGrant with ``AccessControlAllowOrigin=*``, embedded as the
  ``player`` grant of an access token; a listener reads the token as the Player SDK does
  (unverified) and plays the grant's ``playbackUrl`` over HTTP (tones by FFT, the
  mixer's payloads);
- an app posts TimedMetadata; the listener finds it in the HLS at the right time;
- remove-speaker: a participant removed by identity;
- delete-room: the room completed, both resources ended with ``Status=ENDED`` (2 s
  apart, as the function sleeps), ``#EXT-X-ENDLIST`` in the playlist.

tests/e2e/test_api_reference_node.py replays the same with the ``twilio`` Node library 3.x.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest

from tests.conftest import free_port
from tests.e2e.test_api import _Api, _get, _until
from tests.support.hls_reader import playlist_segments, read_ts, tone_levels
from tests.support.process_util import Proc, processes, start_room_server

pytestmark = pytest.mark.slow

twilio_rest = pytest.importorskip("twilio.rest")
from twilio.jwt.access_token import AccessToken  # noqa: E402
from twilio.jwt.access_token.grants import PlaybackGrant  # noqa: E402

ACCOUNT = "AC" + "7" * 32
TOKEN = "reference-backend-auth-token"
KEY_SID = "SK" + "8" * 32
KEY_SECRET = "reference-backend-api-key-secret"
SECRET = "reference-backend-room-secret-0123456789"
TONES = {"alice": 440.0, "bob": 660.0}
ROOM = "quiz-night"


@dataclass
class Stack:
    api: _Api
    api_base: str
    room_base: str
    procs: list[Proc]
    tmp: Path
    env: dict[str, str]

    def talkers(self, room: str, seconds: int = 120) -> None:
        for name, hz in TONES.items():
            self.procs.append(
                Proc(
                    ["talker", "--room", room, "--identity", name, "--tone", str(hz),
                     "--duration", str(seconds)],
                    self.env,
                    self.tmp / f"talker-{name}.log",
                )
            )  # fmt: skip


@pytest.fixture(name="stack")
def stack_fixture(tmp_path: Path) -> Iterator[Stack]:
    """The room server (with its Video REST) and the API, sharing the account credentials."""
    for var in ("TWILIO_REGION", "TWILIO_EDGE"):
        os.environ.pop(var, None)
    room_port, api_port = free_port(), free_port()
    credentials = {
        "MIXER_ACCOUNT_SID": ACCOUNT,
        "MIXER_AUTH_TOKEN": TOKEN,
        "MIXER_API_KEYS": f"{KEY_SID}:{KEY_SECRET}",
    }
    env = {"MIXER_ROOM_SECRET": SECRET, "MIXER_ROOM_URL": f"ws://127.0.0.1:{room_port}"}
    api_env = {
        **env,
        **credentials,
        "MIXER_API_DATA_DIR": str(tmp_path / "data"),
        "MIXER_HLS_PLAYLIST_TYPE": "event",  # every segment stays listed: checkable
    }
    api = _Api(api_port, api_env, tmp_path / "api.log")
    with processes() as procs:
        start_room_server(procs, room_port, {**env, **credentials}, tmp_path / "room.log")
        api.start()
        try:
            yield Stack(
                api,
                f"http://127.0.0.1:{api_port}",
                f"http://127.0.0.1:{room_port}",
                procs,
                tmp_path,
                env,
            )
        finally:
            api.stop()


def unverified_claims(jwt: str) -> dict[str, Any]:
    """What the Live Player SDK does with its token: decode, never verify."""
    body = jwt.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return claims


def program_date_times(playlist: str) -> dict[str, datetime]:
    """Each segment URI (without its query) -> its EXT-X-PROGRAM-DATE-TIME."""
    out: dict[str, datetime] = {}
    pdt: datetime | None = None
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00"))
        elif line and not line.startswith("#") and pdt is not None:
            out[line.split("?")[0]] = pdt
            pdt = None
    return out


def test_reference_backend_replayed_with_the_python_client(stack: Stack) -> None:
    client = twilio_rest.Client(ACCOUNT, TOKEN)  # context.getTwilioClient()
    client.video.base_url = stack.room_base  # the one change for Video
    client.media.base_url = stack.api_base  # the one change for Media
    media = client.media.v1

    # --- create-room
    room = client.video.v1.rooms.create(unique_name=ROOM, type="group")
    assert room.sid.startswith("RM") and room.status == "in-progress"
    stack.talkers(ROOM)
    ps = media.player_streamer.create(video=False)
    assert ps.video is False and ps.status == "created"
    context = json.dumps({"room": {"name": room.sid}, "outputs": [ps.sid], "video": False})
    mp = media.media_processor.create(extension="audio-mixer-v2", extension_context=context)
    assert mp.status == "started" and mp.extension_context == context
    _until("the PlayerStreamer started", lambda: ps.fetch().status == "started", 60)
    # audio-mixer-v2 joins under its own name (Twilio's documented default)
    participants = client.video.v1.rooms(room.sid).participants.list(status="connected")
    assert "audio-mixer-v2" in {p.identity for p in participants}

    # --- join-room: a grant for any origin, as the player grant of an access token
    grant = media.player_streamer(ps.sid).playback_grant().create(access_control_allow_origin="*")
    token = AccessToken(ACCOUNT, KEY_SID, KEY_SECRET, identity="listener", ttl=14400)
    token.add_grant(PlaybackGrant(grant=grant.grant))
    player = unverified_claims(token.to_jwt())["grants"]["player"]
    assert player["playerStreamerSid"] == ps.sid and player["requestCredentials"] is None
    url = player["playbackUrl"]
    status, master, headers = _get(url)
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*", master
    media_url = urljoin(url, playlist_segments(str(master))[0])
    _until("three segments", lambda: len(playlist_segments(str(_get(media_url)[1]))) >= 3, 40)

    # --- the app's own timed metadata, posted through the client's HTTP layer
    poll = json.dumps({"poll": "Which tone is higher?", "open": True})
    posted_at = time.time()
    resp = client.request(
        "POST",
        f"{stack.api_base}/v1/PlayerStreamers/{ps.sid}/TimedMetadata",
        data={"Metadata": poll},
        auth=(ACCOUNT, TOKEN),
    )
    assert resp.status_code == 201, resp.text
    assert json.loads(resp.text)["metadata"] == poll

    # --- remove-speaker: bob, by identity
    gone = client.video.v1.rooms(ROOM).participants("bob").update(status="disconnected")
    assert gone.status == "disconnected"
    time.sleep(3)

    # --- delete-room
    done = client.video.v1.rooms(ROOM).update(status="completed")
    assert done.status == "completed"
    ended = media.media_processor(mp.sid).update(status="ENDED")
    assert ended.status == "ended"
    time.sleep(2)  # the function's sleep(2000)
    ps_ended = media.player_streamer(ps.sid).update(status="ENDED")
    assert ps_ended.status == "ended"
    final = _until(
        "#EXT-X-ENDLIST", lambda: "#EXT-X-ENDLIST" in str(t := _get(media_url)[1]) and t, 45
    )

    # --- what the listener received
    segments = playlist_segments(str(final))
    blobs = [bytes(_get(urljoin(media_url, seg))[1]) for seg in segments]
    hls = read_ts(b"".join(blobs), playlist=str(final), segments=segments)
    assert hls.codec == "aac" and hls.duration > 4
    levels = tone_levels(hls.audio, hls.sample_rate, [*TONES.values(), 550.0])
    noise = levels.pop(550.0)
    for f, a in levels.items():
        assert a > 0.02 and a > 20 * noise, (f, levels, noise)
    named = [set(p.levels) for _, p in hls.payloads]
    assert any({"alice", "bob"} <= n for n in named), named
    assert "bob" not in named[-1]  # removed by identity before the end
    assert all("audio-mixer-v2" not in n for n in named)
    # the app's payload: once, verbatim, where the stream was when it was posted
    assert [text for _, text in hls.app_payloads] == [poll]
    at = hls.app_payloads[0][0]
    dates = program_date_times(str(final))
    for seg, blob in zip(segments, blobs, strict=True):
        one = read_ts(blob)
        if one.app_payloads:
            wall = dates[seg.split("?")[0]].timestamp() + (at - one.audio_start)
            break
    else:
        raise AssertionError("no segment holds the app payload")
    # the request's moment (its round trip included) vs where the stream put it
    print(f"app payload at the request's moment {wall - posted_at:+.3f} s (PDT-based)")
    assert abs(wall - posted_at) < 0.5, wall - posted_at
    assert TOKEN not in stack.api.log() and KEY_SECRET not in stack.api.log()
