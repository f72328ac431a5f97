"""The Media v1 wire format and state machines (mixer_ext/api/resources.py, signing.py).

Rendering is checked against what the official client reads (the twilio 9.0.2 wheel's
own deserialisers where it has them), signatures against its RequestValidator.
"""

from __future__ import annotations

import datetime
import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from mixer_ext.api import resources as r
from mixer_ext.api import signing
from tests.support.api import CTX, PUBLIC, processor, streamer
from tests.support.api import RESOURCE_ACCOUNT as ACCOUNT


def test_sids_and_dates() -> None:
    sid = r.new_sid("ZX")
    assert re.fullmatch(r"ZX[0-9a-f]{32}", sid)
    assert r.is_sid("ZX", sid) and not r.is_sid("VJ", sid)
    assert r.new_sid("VJ") != r.new_sid("VJ")
    assert r.format_date(1438286400.7) == "2015-07-30T20:00:00Z"


def test_error_body_is_twilio_shaped() -> None:
    err = r.not_found("/MediaProcessors/ZX1")
    assert err.body() == {
        "code": 20404,
        "message": "The requested resource /MediaProcessors/ZX1 was not found",
        "more_info": "https://www.twilio.com/docs/errors/20404",
        "status": 404,
    }


def test_processor_create_defaults_and_limits() -> None:
    req = r.parse_processor_create({"Extension": "audio-mixer-v2", "ExtensionContext": CTX})
    assert req.max_duration == 300 and req.status_callback_method == "POST"
    assert req.context.room.name == "r1"
    with pytest.raises(r.ApiError, match="MaxDuration must be between 1 and 90000"):
        r.parse_processor_create(
            {"Extension": "audio-mixer-v1", "ExtensionContext": CTX, "MaxDuration": "90001"}
        )
    ok = r.parse_processor_create(
        {"Extension": "audio-mixer-v1", "ExtensionContext": CTX, "MaxDuration": "90000"}
    )
    assert ok.max_duration == 90000


def test_processor_create_refusals_name_the_problem() -> None:
    with pytest.raises(r.ApiError, match="video-composer-v2") as e:
        r.parse_processor_create({"Extension": "video-composer-v2", "ExtensionContext": CTX})
    assert e.value.status == 400
    with pytest.raises(r.ApiError, match=r"ExtensionContext: room: required field is missing"):
        r.parse_processor_create(
            {"Extension": "audio-mixer-v1", "ExtensionContext": '{"outputs": ["hls:a"]}'}
        )
    with pytest.raises(r.ApiError, match=r"ExtensionContext: audioBitrate"):
        r.parse_processor_create(
            {
                "Extension": "audio-mixer-v1",
                "ExtensionContext": '{"room":{"name":"x"},"outputs":["hls:a"],"audioBitrate":7}',
            }
        )
    with pytest.raises(r.ApiError, match="ExtensionContext: not valid JSON"):
        r.parse_processor_create({"Extension": "audio-mixer-v1", "ExtensionContext": "a"})
    with pytest.raises(r.ApiError, match="StatusCallbackMethod"):
        r.parse_processor_create(
            {"Extension": "audio-mixer-v1", "ExtensionContext": CTX, "StatusCallbackMethod": "PUT"}
        )


def test_grant_ttl_and_origin() -> None:
    assert r.parse_grant_create({}).ttl == 15
    assert r.parse_grant_create({"Ttl": "60"}).ttl == 60
    for bad in ("0", "61", "x"):
        with pytest.raises(r.ApiError, match="Ttl"):
            r.parse_grant_create({"Ttl": bad})
    with pytest.raises(r.ApiError, match="AccessControlAllowOrigin"):
        r.parse_grant_create({"AccessControlAllowOrigin": "https://x/path"})
    assert r.parse_grant_create({"AccessControlAllowOrigin": "https://a.b:1"}).allow_origin


def test_update_needs_status_ended() -> None:
    r.parse_end_update({"Status": "ended"})
    with pytest.raises(r.ApiError, match="Status is required"):
        r.parse_end_update({})
    with pytest.raises(r.ApiError, match="'ended'"):
        r.parse_end_update({"Status": "started"})


def test_rendering_reads_back_through_the_official_client() -> None:
    from twilio.rest import Client
    from twilio.rest.media.v1.media_processor import MediaProcessorInstance
    from twilio.rest.media.v1.player_streamer import PlayerStreamerInstance

    version = Client(ACCOUNT, "t").media.v1
    p = processor()
    body = r.render_processor(p, PUBLIC)
    inst = MediaProcessorInstance(version, body)
    assert inst.sid == p.sid and inst.status == "started"
    assert inst.date_created == datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.UTC)
    assert inst.url == f"{PUBLIC}/v1/MediaProcessors/{p.sid}"
    assert isinstance(body["extension_context"], str) and inst.max_duration == 300
    s = streamer()
    sbody = r.render_streamer(s, PUBLIC)
    sinst = PlayerStreamerInstance(version, sbody)
    assert sinst.status == "created" and sinst.video is True
    assert sinst.links["playback_grant"] == f"{PUBLIC}/v1/PlayerStreamers/{s.sid}/PlaybackGrant"


def test_paging_tokens_and_meta() -> None:
    key = r.PageKey(1_700_000_000.25, "VJ" + "1" * 32)
    token = r.encode_page_token(key)
    assert token.startswith("PT") and r.decode_page_token(token) == key
    with pytest.raises(r.ApiError, match="PageToken"):
        r.decode_page_token("PTnot-base64!")
    req = r.parse_page({"PageSize": "2", "Page": "3", "PageToken": token})
    page = r.render_page(
        key="player_streamers",
        public_url=PUBLIC,
        path="PlayerStreamers",
        filters={"Status": "created", "Order": None},
        request=req,
        records=[],
        next_key=key,
    )
    meta = page["meta"]
    assert meta["key"] == "player_streamers" and meta["page"] == 3 and meta["page_size"] == 2
    nxt = urlsplit(meta["next_page_url"])
    assert f"{nxt.scheme}://{nxt.netloc}" == PUBLIC and nxt.path == "/v1/PlayerStreamers"
    q = parse_qs(nxt.query)
    assert q == {"Status": ["created"], "PageSize": ["2"], "Page": ["4"], "PageToken": [token]}
    assert r.parse_page({}).page_size == 50
    with pytest.raises(r.ApiError, match="PageSize"):
        r.parse_page({"PageSize": "1001"})
    last = r.render_page(
        key="k", public_url=PUBLIC, path="X", filters={}, request=req, records=[], next_key=None
    )
    assert last["meta"]["next_page_url"] is None


def test_processor_state_machine() -> None:
    p = processor()
    step = r.processor_step(p, r.ProcessorEvent.WORKER_STARTED, 10)
    assert step.processor.streaming and step.processor.status is r.ProcessorStatus.STARTED
    assert step.effects == [r.Callback("media-processor-started"), r.StartStreamers()]
    again = r.processor_step(step.processor, r.ProcessorEvent.WORKER_STARTED, 11)
    assert again.effects == []  # the started callback goes out once
    ended = r.processor_step(step.processor, r.ProcessorEvent.END_REQUESTED, 12)
    assert ended.processor.status is r.ProcessorStatus.ENDED
    assert ended.processor.ended_reason == "ended-via-api"
    assert r.StopWorker() in ended.effects
    assert r.EndStreamers("stream-disconnected-by-source") in ended.effects
    # the stopped worker's own last report changes nothing
    assert (
        r.processor_step(ended.processor, r.ProcessorEvent.WORKER_ENDED, 13, "stopped").effects
        == []
    )
    timed = r.processor_step(p, r.ProcessorEvent.MAX_DURATION, 12)
    assert timed.processor.ended_reason == "max-duration-exceeded"
    own = r.processor_step(p, r.ProcessorEvent.WORKER_ENDED, 12, "max-participant-duration")
    assert own.processor.status is r.ProcessorStatus.ENDED
    assert own.processor.ended_reason == "max-participant-duration"
    assert r.StopWorker() not in own.effects
    failed = r.processor_step(p, r.ProcessorEvent.WORKER_FAILED, 12, "internal-error", "boom")
    assert failed.processor.status is r.ProcessorStatus.FAILED
    assert failed.processor.ended_reason == "internal-service-error"
    assert failed.processor.error_message == "boom"
    assert r.Callback("media-processor-failed") in failed.effects
    lost = r.processor_step(p, r.ProcessorEvent.WORKER_LOST, 12)
    assert lost.processor.status is r.ProcessorStatus.FAILED and lost.processor.error_message
    media = r.processor_step(p, r.ProcessorEvent.WORKER_FAILED, 12, "error-streaming-media")
    assert media.processor.ended_reason == "error-streaming-media"


def test_streamer_state_machine() -> None:
    s = streamer()
    started = r.streamer_step(s, r.StreamerEvent.SOURCE_STARTED, 1)
    assert started.streamer.status is r.StreamerStatus.STARTED
    assert started.effects == [r.Callback("player-streamer-started")]
    ended = r.streamer_step(started.streamer, r.StreamerEvent.SOURCE_ENDED, 2)
    assert ended.streamer.ended_reason == "stream-disconnected-by-source"
    assert r.streamer_step(ended.streamer, r.StreamerEvent.END_REQUESTED, 3).effects == []
    api = r.streamer_step(s, r.StreamerEvent.END_REQUESTED, 2)
    assert (api.streamer.status, api.streamer.ended_reason) == (
        r.StreamerStatus.ENDED,
        "ended-via-api",
    )
    assert r.streamer_step(s, r.StreamerEvent.MAX_DURATION, 2).streamer.ended_reason == (
        "max-duration-exceeded"
    )


def test_recording_state_machine() -> None:
    p = processor()
    rec = r.new_recording(p, "/data/work/ZX/mix.m4a", "m4a", None)
    assert (rec.status, rec.format, rec.date_created) == ("processing", "m4a", p.date_created)
    with pytest.raises(r.ApiError) as refused:  # the worker still writes it
        r.recording_step(rec, r.RecordingEvent.DELETE_REQUESTED, 5.0)
    assert refused.value.status == 409 and rec.sid in str(refused.value.body())
    E = r.RecordingEvent.WORKER_EXITED
    done = r.recording_step(rec, E, 9.0, media_size=1000, duration=4)
    assert (done.status, done.media_size, done.duration, done.date_updated) == (
        "completed",
        1000,
        4,
        9.0,
    )
    for size in (None, 0):  # no file, or an empty one
        failed = r.recording_step(rec, E, 9.0, media_size=size, duration=4)
        assert (failed.status, failed.media_size) == ("failed", None)
    assert r.recording_step(done, E, 10.0, media_size=5) == done  # finished is final
    assert r.recording_step(done, r.RecordingEvent.DELETE_REQUESTED, 10.0) == done


def test_streamer_output_rules_name_the_output() -> None:
    ok, ended, busy = streamer(), streamer(status=r.StreamerStatus.ENDED), streamer()
    missing = r.new_sid("VJ")
    known = {ok.sid: ok, ended.sid: ended, busy.sid: busy, missing: None}
    r.check_streamer_outputs(["hls:a", ok.sid], known, {busy.sid})
    for outputs, why in (
        ([ok.sid, missing], f"outputs[1]: PlayerStreamer {missing} not found"),
        ([ended.sid], f"outputs[0]: PlayerStreamer {ended.sid} is ended"),
        ([busy.sid], f"PlayerStreamer {busy.sid} already has an active MediaProcessor"),
    ):
        with pytest.raises(r.ApiError) as refused:
            r.check_streamer_outputs(outputs, known, {busy.sid})
        assert refused.value.status == 400 and why in refused.value.body()["message"]


def test_callback_params() -> None:
    p = processor(status=r.ProcessorStatus.ENDED, ended_reason="ended-via-api")
    params = r.processor_callback_params(p, "media-processor-ended", 2, 1438286400)
    assert params["StatusCallbackEvent"] == "media-processor-ended"
    assert params["SequenceNumber"] == "2" and params["EndedReason"] == "ended-via-api"
    assert params["Timestamp"] == "2015-07-30T20:00:00Z" and "ErrorMessage" not in params
    assert params["MediaProcessorSid"] == p.sid and params["ExtensionContext"] == CTX


def test_signature_passes_twilios_request_validator() -> None:
    from twilio.request_validator import RequestValidator

    token = "auth-token-123"
    url = "https://example.com/hook?x=1"
    params = {"b": "2", "a": "1", "StatusCallbackEvent": "media-processor-started"}
    sig = signing.twilio_signature(token, url, params)
    validator = RequestValidator(token)
    assert validator.validate(url, params, sig)
    assert not validator.validate(url, {**params, "a": "9"}, sig)
    get_url = "https://example.com/hook?a=1&b=2"
    assert validator.validate(get_url, {}, signing.twilio_signature(token, get_url, None))


def test_playback_tokens() -> None:
    key = signing.playback_key("tok")
    sid = r.new_sid("VJ")
    now = time.time()
    grant = signing.mint_playback_token(key, sid, signing.GRANT, "https://a.b", now + 15)
    claims = signing.check_playback_token(key, grant, sid, (signing.GRANT,), now)
    assert claims.origin == "https://a.b"
    with pytest.raises(signing.TokenRefused, match="expired"):
        signing.check_playback_token(key, grant, sid, (signing.GRANT,), now + 16)
    with pytest.raises(signing.TokenRefused, match="another stream"):
        signing.check_playback_token(key, grant, r.new_sid("VJ"), (signing.GRANT,), now)
    with pytest.raises(signing.TokenRefused, match="wrong kind"):
        signing.check_playback_token(key, grant, sid, (signing.SESSION,), now)
    forged = signing.mint_playback_token(
        signing.playback_key("other"), sid, signing.GRANT, None, now + 15
    )
    with pytest.raises(signing.TokenRefused, match="invalid"):
        signing.check_playback_token(key, forged, sid, (signing.GRANT,), now)
    with pytest.raises(signing.TokenRefused, match="no playback token"):
        signing.check_playback_token(key, None, sid, (signing.GRANT,), now)


def test_a_local_worker_inherits_no_api_secret() -> None:
    """The API's credentials, the room admin token and its ports stay with the API."""
    from mixer_ext.api.launcher import worker_environment

    env = worker_environment(
        {
            "MIXER_AUTH_TOKEN": "t",
            "MIXER_API_KEYS": "SK1:s",
            "MIXER_ROOM_ADMIN_TOKEN": "admin-0123456789abcdef",
            "MIXER_HTTP_PORT": "8080",
            "MIXER_ROOM_URL": "ws://room",
            "MIXER_ROOM_SECRET": "room-secret",
            "PATH": "/usr/bin",
        }
    )
    assert env == {
        "MIXER_ROOM_URL": "ws://room",
        "MIXER_ROOM_SECRET": "room-secret",
        "PATH": "/usr/bin",
    }
