"""Sans-I/O pieces of the twilio-video.js compatibility: tokens, TCMP, room signaling.

Tokens are minted by the official ``twilio`` helper library (the thing app backends run);
the TCMP and signaling tests feed the messages twilio-video.js 2.36.0 sends (copied from its
``lib/twilioconnection.js`` and ``lib/signaling/v2/twilioconnectiontransport.js``).
"""

from __future__ import annotations

import json
import time

import jwt
import pytest
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import ChatGrant, VideoGrant

from mixer_ext.errors import ConfigError
from mixer_ext.roomserver.twilio import connection as c
from mixer_ext.roomserver.twilio import errors as e
from mixer_ext.roomserver.twilio import signaling as s
from mixer_ext.roomserver.twilio.access_token import (
    TwilioTokenError,
    parse_account_sid,
    parse_api_keys,
    verify_access_token,
)
from mixer_ext.roomserver.twilio.sdp import align_offer
from mixer_ext.roomserver.twilio.sids import is_sid, new_sid

ACCOUNT = "AC" + "1" * 32
KEY = "SK" + "2" * 32
SECRET = "k" * 32
OTHER_KEY = "SK" + "3" * 32


def mint(
    identity: str | None = "alice",
    room: str | None = "lobby",
    *,
    account: str = ACCOUNT,
    key: str = KEY,
    secret: str = SECRET,
    ttl: int = 3600,
    nbf: int | None = None,
    video: bool = True,
) -> str:
    token = AccessToken(account, key, secret, identity=identity, ttl=ttl, nbf=nbf)
    if video:
        token.add_grant(VideoGrant(room=room))
    else:
        token.add_grant(ChatGrant(service_sid="IS" + "0" * 32))
    return token.to_jwt()


def verify(token: str, room: str | tuple[str, ...] | None = "lobby", **kw: object):  # type: ignore[no-untyped-def]
    return verify_access_token(
        token, account_sid=ACCOUNT, api_keys={KEY: SECRET, OTHER_KEY: "x" * 32}, room=room, **kw
    )


# --- access tokens ---------------------------------------------------------------------------


def test_helper_library_token_is_accepted() -> None:
    claims = verify(mint())
    assert (claims.identity, claims.room, claims.api_key_sid) == ("alice", "lobby", KEY)
    assert claims.expires_at > time.time() + 3000


def test_grant_without_room_admits_any_room_and_sid_names_count() -> None:
    assert verify(mint(room=None), room="anything").room is None
    rm = "RM" + "a" * 32
    assert verify(mint(room=rm), room=("lobby", rm)).room == rm


@pytest.mark.parametrize(
    ("token_kwargs", "verify_kwargs", "code"),
    [
        ({"room": "other"}, {}, 20106),
        ({"video": False}, {}, 20106),
        ({"secret": "w" * 32}, {}, 20107),
        ({"key": "SK" + "9" * 32}, {}, 20103),
        ({"account": "AC" + "9" * 32}, {}, 20103),
        ({"ttl": 3600}, {"now": 7200}, 20104),
        ({"nbf": 600}, {}, 20105),
    ],
    ids=["other-room", "no-video-grant", "bad-signature", "unknown-key", "other-account",
         "expired", "not-yet-valid"],
)  # fmt: skip
def test_refusals_carry_the_sdk_codes(
    token_kwargs: dict[str, object], verify_kwargs: dict[str, object], code: int
) -> None:
    # offsets become times here, not at collection: a long suite runs this minutes later
    now = time.time()
    if "nbf" in token_kwargs:
        token_kwargs = {**token_kwargs, "nbf": int(now) + int(token_kwargs["nbf"])}  # type: ignore[call-overload]
    if "now" in verify_kwargs:
        verify_kwargs = {**verify_kwargs, "now": now + float(verify_kwargs["now"])}  # type: ignore[arg-type]
    token = mint(**token_kwargs)  # type: ignore[arg-type]
    with pytest.raises(TwilioTokenError) as info:
        verify(token, **verify_kwargs)
    assert info.value.error.code == code
    assert token not in str(info.value)
    assert SECRET not in str(info.value)


def test_malformed_and_foreign_tokens() -> None:
    for bad in ["", "garbage", "a.b.c"]:
        with pytest.raises(TwilioTokenError) as info:
            verify(bad)
        assert info.value.error.code == 20101
    none_alg = jwt.encode({"iss": KEY, "sub": ACCOUNT, "exp": time.time() + 60}, None, "none")
    with pytest.raises(TwilioTokenError) as info:
        verify(none_alg)
    assert info.value.error.code == 20102
    no_identity = mint(identity=None)
    with pytest.raises(TwilioTokenError) as info:
        verify(no_identity)
    assert info.value.error.code == 20106


def test_credential_settings_parse_with_one_line_errors() -> None:
    assert parse_account_sid(f" {ACCOUNT} ") == ACCOUNT
    assert parse_api_keys(f"{KEY}:{SECRET}, {OTHER_KEY}:abc") == {KEY: SECRET, OTHER_KEY: "abc"}
    with pytest.raises(ConfigError, match="MIXER_ACCOUNT_SID"):
        parse_account_sid("AC123")
    with pytest.raises(ConfigError, match="entry 2") as info:
        parse_api_keys(f"{KEY}:{SECRET},SKnope:hunter2")
    assert "hunter2" not in str(info.value)


def test_sids() -> None:
    sid = new_sid("RM")
    assert is_sid(sid, "RM") and not is_sid(sid, "PA") and len(sid) == 34
    assert not is_sid("RM" + "G" * 32, "RM")


# --- TCMP ------------------------------------------------------------------------------------


def hello(body: dict[str, object] | None = None, timeout: int = 5000) -> str:
    msg: dict[str, object] = {"id": "u-1", "timeout": timeout, "type": "hello", "version": 2}
    if body is not None:
        msg["body"] = body
    return json.dumps(msg)


def sent(conn: c.TcmpServer) -> list[dict[str, object]]:
    return [json.loads(t) for t in conn.data_to_send()]


def test_tcmp_hello_welcome_msg_bye() -> None:
    conn = c.TcmpServer(now=0.0)
    ice = {"type": "ice", "version": 1, "token": "T", "edge": "roaming"}
    assert conn.receive(hello(ice), now=0.1) == [c.Opened(ice)]
    assert sent(conn) == [{"type": "welcome", "negotiatedTimeout": 5000, "id": "u-1"}]
    conn.send({"type": "iced", "ice_servers": []}, now=0.2)
    assert sent(conn) == [{"type": "msg", "body": {"type": "iced", "ice_servers": []}}]
    body = {"type": "connect", "version": 2}
    assert conn.receive(json.dumps({"type": "msg", "body": body}), now=0.3) == [c.Received(body)]
    assert conn.receive('{"type":"heartbeat"}', now=0.4) == []
    assert conn.receive('{"type":"bye"}', now=0.5) == [c.Closed("bye")]
    conn.send({"type": "update"}, now=0.6)
    assert sent(conn) == []


def test_tcmp_heartbeats_and_timeout() -> None:
    conn = c.TcmpServer(now=0.0)
    conn.receive(hello(timeout=2000), now=0.0)
    conn.data_to_send()
    assert conn.timeout == 2.0
    assert conn.tick(1.0) == [] and sent(conn) == []
    assert conn.tick(1.6) == [] and sent(conn) == [{"type": "heartbeat"}]
    assert conn.next_deadline() == pytest.approx(3.1)
    conn.receive('{"type":"heartbeat"}', now=3.0)  # the client keeps us alive
    assert conn.tick(8.9) == []
    assert conn.tick(9.0) == [c.Closed("timeout", "nothing received for 6.0 s")]


def test_tcmp_refuses_garbage_before_and_after_hello() -> None:
    conn = c.TcmpServer(now=0.0)
    assert conn.receive('{"type":"msg","body":{}}', now=0.0) == []
    assert sent(conn)[0]["type"] == "bad"
    conn.receive(json.dumps({"type": "hello", "version": 1}), now=0.0)
    assert sent(conn)[0]["type"] == "bad"
    assert conn.tick(c.HELLO_TIMEOUT) == [c.Closed("timeout", "no hello")]
    conn = c.TcmpServer(now=0.0)
    conn.receive(hello(), now=0.0)
    assert conn.receive("{not json", now=0.1) == [c.Closed("protocol", "not JSON")]


# --- room signaling ----------------------------------------------------------------------------

#: what twilio-video.js 2.36.0 sends as ``connect`` for an audio-only app (SDP shortened)
CONNECT = {
    "name": "lobby",
    "participant": {
        "revision": 1,
        "tracks": [
            {
                "enabled": True,
                "id": "t-audio",
                "kind": "audio",
                "name": "mic",
                "priority": "standard",
            }
        ],
    },
    "peer_connections": [
        {"description": {"type": "offer", "revision": 1, "sdp": "v=0\r\n"}, "id": "pc-1"}
    ],
    "type": "connect",
    "version": 2,
    "ice_servers": "acquire",
    "publisher": {"name": "twilio-video.js", "sdk_version": "2.36.0", "user_agent": "x"},
    "media_signaling": {"network_quality": {"transports": [{"type": "data-channel"}]}},
    "subscribe": {"rules": [{"type": "include", "all": True}], "revision": 1},
    "format": "unified",
    "token": "T",
}


def test_parse_connect_update_and_disconnect() -> None:
    msg = s.parse_client_body(CONNECT)
    assert isinstance(msg, s.Connect)
    assert msg.name == "lobby" and msg.token == "T" and msg.automatic_subscription
    assert msg.participant.tracks == (s.LocalTrack("t-audio", "audio", "mic", True),)
    assert msg.peer_connections[0].description == s.Description("offer", 1, "v=0\r\n")
    assert msg.media_signaling == ("network_quality",) and msg.declined == ()
    priority = dict(CONNECT, media_signaling={"track_priority": {}, "active_speaker": {}})
    parsed = s.parse_client_body(priority)
    assert isinstance(parsed, s.Connect)
    assert parsed.media_signaling == ("active_speaker",) and parsed.declined == ("track_priority",)
    excluded = dict(CONNECT, subscribe={"rules": [{"type": "exclude", "all": True}]})
    assert not s.parse_client_body(excluded).automatic_subscription  # type: ignore[union-attr]
    cand = {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0"}
    update = s.parse_client_body(
        {
            "type": "update",
            "session": "S",
            "peer_connections": [
                {"id": "pc-1", "ice": {"candidates": [cand, {"x": 1}], "revision": 2,
                                       "ufrag": "uf", "complete": True}}
            ],
        }
    )  # fmt: skip
    assert isinstance(update, s.Update) and update.participant is None
    ice = update.peer_connections[0].ice
    assert ice == s.IceCandidates(2, "uf", (cand,), True)
    assert isinstance(s.parse_client_body({"type": "disconnect", "session": "S"}), s.Disconnect)


@pytest.mark.parametrize(
    "body",
    [
        {"type": "nope"},
        dict(CONNECT, version=1),
        dict(CONNECT, format="planb"),
        dict(CONNECT, participant={"revision": -1, "tracks": []}),
        dict(CONNECT, participant={"revision": 1, "tracks": [{"id": 5, "kind": "audio"}]}),
        dict(CONNECT, peer_connections=[{"id": "p", "description": {"type": "offer",
                                                                    "sdp": "x" * 70_000}}]),
    ],
)  # fmt: skip
def test_malformed_bodies_are_53004(body: dict[str, object]) -> None:
    with pytest.raises(s.SignalingError) as info:
        s.parse_client_body(body)
    assert info.value.error.code == 53004


def test_connected_and_update_shapes_match_what_the_sdk_reads() -> None:
    """Field names as room.js/_update and localparticipant.js read them."""
    bob = s.RemoteParticipant("PAb", "bob", revision=3, tracks=[s.RemoteTrack("MT1", "mic")])
    refused = s.PublishedTrack("t-video", None, e.TRACK_KIND_NOT_SUPPORTED)
    msg = s.connected(
        session="S",
        room_sid="RM1",
        room_name="lobby",
        participant_sid="PA1",
        identity="alice",
        participants=[bob],
        peer_connections=[s.description("pc-1", "answer", 1, "v=0\r\n")],
        published=(1, [s.PublishedTrack("t-audio", "MT2"), refused]),
        subscribed=(1, [("MT1", "track-id-1")]),
    )
    refused_text = e.TRACK_KIND_NOT_SUPPORTED.message
    assert msg["type"] == "connected" and msg["options"] == {"session_timeout": 30}
    assert msg["participant"] == {"sid": "PA1", "identity": "alice"}
    assert msg["participants"] == [
        {
            "sid": "PAb",
            "identity": "bob",
            "revision": 3,
            "state": "connected",
            "tracks": [
                {"sid": "MT1", "name": "mic", "kind": "audio", "enabled": True,
                 "priority": "standard"}
            ],
        }
    ]  # fmt: skip
    assert msg["peer_connections"] == [
        {"id": "pc-1", "description": {"type": "answer", "revision": 1, "sdp": "v=0\r\n"}}
    ]
    assert msg["published"]["tracks"] == [
        {"id": "t-audio", "sid": "MT2", "state": "ready"},
        {"id": "t-video", "state": "failed", "error": {"code": 53125, "message": refused_text}},
    ]  # fmt: skip
    assert msg["subscribed"] == {"revision": 1, "tracks": [{"sid": "MT1", "id": "track-id-1"}]}
    assert s.disconnected_completed()["status"] == "completed"
    assert s.error(e.PARTICIPANT_DUPLICATE_IDENTITY)["code"] == 53205
    assert s.room_state("update", subscribed=(2, []))["subscribed"] == {"revision": 2, "tracks": []}


# --- re-offers in the client's numbering -------------------------------------------------------

CHROME_OFFER = (
    "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0 8\r\n"
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n"
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
    "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
)
AIORTC_REOFFER = (
    "v=0\r\ns=-\r\nm=audio 5000 UDP/TLS/RTP/SAVPF 96 9 0 8\r\n"
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n"
    "a=extmap:3 urn:example:unknown\r\n"
    "a=rtpmap:96 opus/48000/2\r\na=rtcp-fb:96 nack\r\na=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "m=video 5000 UDP/TLS/RTP/SAVPF 97\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=rtpmap:97 VP8/90000\r\n"
)


def test_reoffer_keeps_the_clients_extension_ids_and_payload_types() -> None:
    """Chrome refuses 'RTP extension ID reassignment' (seen failing before align_offer)."""
    out = align_offer(AIORTC_REOFFER, CHROME_OFFER).split("\r\n")
    assert "m=audio 5000 UDP/TLS/RTP/SAVPF 111 9 0 8" in out
    assert "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid" in out
    assert "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level" in out
    assert "a=extmap:3 urn:example:unknown" in out  # no collision: kept
    assert "a=rtpmap:111 opus/48000/2" in out and "a=rtcp-fb:111 nack" in out
    assert "a=rtpmap:9 G722/8000" in out  # the client never offered it, no collision: kept
    assert "a=rtpmap:97 VP8/90000" in out  # video payload types untouched
    assert out.count("a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid") == 2


def test_gateway_from_the_environment() -> None:
    from mixer_ext.roomserver.server import RoomServer
    from mixer_ext.roomserver.twilio.gateway import TwilioGateway
    from tests.support.room_util import settings

    server = RoomServer(settings(), "127.0.0.1", 0)
    assert TwilioGateway.from_environment(server, {}) is None
    env = {"MIXER_ACCOUNT_SID": ACCOUNT, "MIXER_API_KEYS": f"{KEY}:{SECRET}"}
    gateway = TwilioGateway.from_environment(server, {**env, "MIXER_AUTH_TOKEN": "t"})
    assert gateway is not None and gateway.api_keys == {KEY: SECRET}
    assert gateway.auth_token == "t"
    with pytest.raises(ConfigError, match="both"):
        TwilioGateway.from_environment(server, {"MIXER_ACCOUNT_SID": ACCOUNT})
    with pytest.raises(ConfigError, match="MIXER_API_KEYS entry 1") as info:
        TwilioGateway.from_environment(server, {**env, "MIXER_API_KEYS": "nope:s3cr3t"})
    assert "s3cr3t" not in str(info.value)
