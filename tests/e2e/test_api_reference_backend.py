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

import json
import time
from datetime import datetime
from urllib.parse import urljoin

import pytest

from mixer_ext.testing.spectrum import tone_levels
from mixer_ext.testing.wait import until_sync
from tests.support.api_process import _get
from tests.support.hls_reader import playlist_segments, read_ts
from tests.support.reference_backend import (
    ACCOUNT,
    KEY_SECRET,
    KEY_SID,
    ROOM,
    TOKEN,
    TONES,
    Stack,
    unverified_claims,
)

twilio_rest = pytest.importorskip("twilio.rest")
from twilio.jwt.access_token import AccessToken  # noqa: E402
from twilio.jwt.access_token.grants import PlaybackGrant  # noqa: E402


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
    until_sync(lambda: ps.fetch().status == "started", 60, "the PlayerStreamer started", every=0.3)
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
    until_sync(
        lambda: len(playlist_segments(str(_get(media_url)[1]))) >= 3,
        40,
        "three segments",
        every=0.3,
    )

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
    final = until_sync(
        lambda: "#EXT-X-ENDLIST" in str(t := _get(media_url)[1]) and t,
        45,
        "#EXT-X-ENDLIST",
        every=0.3,
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
