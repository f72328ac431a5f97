"""Room pieces without I/O: tokens, the signaling schema, room rules (fake clock), tone source."""

from __future__ import annotations

import subprocess
import time

import jwt
import numpy as np
import pytest

from mixer_ext.roomserver import protocol as p
from mixer_ext.roomserver.rooms import Admission, Room
from mixer_ext.roomserver.tokens import TokenError, mint_token, verify_token
from mixer_ext.sim.tracks import ToneTrack
from tests.support.env import mixer_ext_cmd
from tests.support.room_util import SECRET, spectrum_peak

# --- tokens -------------------------------------------------------------------------------


def test_token_round_trip() -> None:
    claims = verify_token(SECRET, mint_token(SECRET, "room-1", "alice", ttl=60), "room-1")
    assert (claims.room, claims.identity) == ("room-1", "alice")
    assert time.time() + 55 < claims.expires_at <= time.time() + 60


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "missing token"),
        ("", "missing token"),
        ("abc", "invalid token"),
        (mint_token("another-secret-of-32-bytes-length!", "r", "a"), "forged"),
        (mint_token(SECRET, "other", "a"), "for room 'other', not 'r'"),
        (
            jwt.encode({"iss": "mixer-ext", "room": "r", "sub": "a", "exp": 1}, SECRET, "HS256"),
            "token expired",
        ),
        (jwt.encode({"iss": "mixer-ext", "room": "r", "exp": 2e9}, SECRET, "HS256"), "'sub'"),
        (
            jwt.encode(
                {"iss": "mixer-ext", "room": "r", "sub": "a", "exp": 2e9}, "k" * 64, "HS512"
            ),
            "HS256",
        ),
        (
            jwt.encode(
                {"iss": "mixer-ext", "room": "r", "sub": "a\nb", "exp": 2e9}, SECRET, "HS256"
            ),
            "identity",
        ),
    ],
)
def test_bad_tokens(token: str | None, message: str) -> None:
    with pytest.raises(TokenError) as info:
        verify_token(SECRET, token, "r")
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert not token or token not in str(info.value)


def test_mint_refuses_bad_names_and_ttl() -> None:
    with pytest.raises(ValueError, match="identity"):
        mint_token(SECRET, "r", "has\x00nul")  # a space is fine (issue 21.3), a control is not
    with pytest.raises(ValueError, match="room"):
        mint_token(SECRET, "", "a")
    with pytest.raises(ValueError, match="ttl"):
        mint_token(SECRET, "r", "a", ttl=0)


@pytest.mark.slow
def test_token_cli() -> None:
    env = {"MIXER_ROOM_SECRET": SECRET, "PATH": "/usr/bin:/bin"}
    cmd = [*mixer_ext_cmd(), "token", "--room", "demo", "--identity", "alice", "--ttl", "120"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    claims = verify_token(SECRET, out.stdout.strip(), "demo")
    assert claims.identity == "alice"
    assert claims.expires_at <= time.time() + 120

    out = subprocess.run(cmd, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "mixer-ext token: MIXER_ROOM_SECRET is not set; minting a token needs it"
    ]
    short = {**env, "MIXER_ROOM_SECRET": "hunter2"}
    out = subprocess.run(cmd, env=short, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "MIXER_ROOM_SECRET is too short" in out.stderr
    # names as Twilio took them (issue 21.3): "a b" is fine now; a control character is not
    bad = [*mixer_ext_cmd(), "token", "--room", "demo", "--identity", "a\nb"]
    out = subprocess.run(bad, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "identity" in out.stderr and "control character (U+000A)" in out.stderr


# --- protocol -----------------------------------------------------------------------------


def test_protocol_accepts_valid_messages() -> None:
    join = p.parse_client_message('{"v":1,"type":"join","room":"r","token":"t"}', 1024)
    assert isinstance(join, p.Join) and join.auto_subscribe and not join.publish
    assert isinstance(p.parse_client_message('{"type":"leave"}', 1024), p.Leave)
    msg = p.encode(p.TrackEnabledMsg(identity="a", track_sid="TR_1", enabled=False))
    assert p.parse_server_message(msg) == p.TrackEnabledMsg(
        identity="a", track_sid="TR_1", enabled=False
    )


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("nope", "malformed"),
        ("[1, 2]", "malformed"),
        ('{"type": "join"}', "malformed"),  # room missing
        ('{"type": "join", "room": "r", "extra": 1}', "malformed"),
        ('{"type": "answer", "sdp": ""}', "malformed"),
        ('{"v": 2, "type": "leave"}', "version"),
        ('{"type": "leave", "pad": "' + "x" * 2000 + '"}', "oversized"),
        (b"\xff\xfe", "malformed"),
    ],
)
def test_protocol_refuses(text: str | bytes, code: str) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.parse_client_message(text, 1024)
    assert info.value.code == code


# --- room rules ----------------------------------------------------------------------------


def make_room(**kw: float) -> Room:
    args: dict[str, float] = {
        "max_participants": 2,
        "max_participant_duration": 10.0,
        "empty_timeout": 5.0,
    }
    args.update(kw)
    return Room(
        "r",
        now=100.0,
        max_participants=int(args["max_participants"]),
        max_participant_duration=args["max_participant_duration"],
        empty_timeout=args["empty_timeout"],
    )


def test_room_admission_and_limits() -> None:
    room = make_room()
    assert room.admission("a") is Admission.ADMIT
    room.add("a", 100.0)
    room.add("b", 104.0)
    assert room.admission("c") is Admission.FULL
    assert room.admission("a") is Admission.REPLACE
    assert room.overstayed(109.9) == []
    assert room.overstayed(110.0) == ["a"]
    assert room.overstayed(114.0) == ["a", "b"]
    assert room.deadline("b") == 114.0
    room.add("a", 112.0)  # a replacement starts a new clock
    assert room.overstayed(114.0) == ["b"]


def test_room_empty_timeout() -> None:
    room = make_room()
    assert not room.empty_expired(104.9)
    assert room.empty_expired(105.0)  # never joined: also ends
    room.add("a", 101.0)
    assert not room.empty_expired(200.0)
    room.remove("a", 200.0)
    assert not room.empty_expired(204.0)
    assert room.empty_expired(205.0)
    room.add("b", 204.5)
    assert not room.empty_expired(300.0)


# --- synthetic source -------------------------------------------------------------------------


async def test_tone_track_frames_pts_and_spectrum() -> None:
    track = ToneTrack(750.0, level=0.5)
    frames = [await track.recv() for _ in range(10)]
    assert [f.pts for f in frames] == [i * 960 for i in range(10)]
    assert all(f.sample_rate == 48000 and f.samples == 960 for f in frames)
    assert all(f.layout.name == "stereo" for f in frames)
    pcm = np.concatenate([f.to_ndarray().reshape(-1, 2)[:, 0] for f in frames]) / 32768.0
    peak, rms = spectrum_peak(pcm)
    assert abs(peak - 750) < 6
    assert abs(rms - 0.5 / np.sqrt(2)) < 0.01
    # continuous phase across frame boundaries: no clicks
    assert np.abs(np.diff(pcm)).max() < 2 * np.pi * 750 / 48000 * 0.5 * 1.01
    with pytest.raises(ValueError, match="frequency"):
        ToneTrack(5.0)


def test_an_offer_for_a_mixer_subscribed_to_250_publishers_is_a_valid_message() -> None:
    # aiortc's SDP takes ~1.7 KB per audio m-line: the 60 000-character cap this replaced
    # broke the mixer's signaling at 35 subscriptions (seen in bench/capacity.py at N = 50)
    from aiortc import RTCConfiguration, RTCPeerConnection

    async def sdp_of(m_lines: int) -> str:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            for _ in range(m_lines):
                pc.addTransceiver("audio", direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            return str(pc.localDescription.sdp)
        finally:
            await pc.close()

    import asyncio

    sdp = asyncio.run(sdp_of(60))
    assert len(sdp) > 60_000
    big = sdp + "a=x\r\n" * ((250 - 60) * 1700 // 5)
    offer = p.parse_server_message(p.encode(p.Offer(sdp=big)))
    assert isinstance(offer, p.Offer) and offer.sdp == big
