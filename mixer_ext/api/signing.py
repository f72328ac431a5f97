"""Signatures the control plane hands out or checks: no I/O here.

- ``twilio_signature``: ``X-Twilio-Signature`` exactly as Twilio signs webhooks (and as
  ``twilio.request_validator.RequestValidator`` checks them): base64 of HMAC-SHA1, keyed
  with the auth token, over the full URL followed by every POST parameter name and value,
  names sorted.  A GET callback carries its parameters in the URL, so the URL alone is
  signed.
- playback tokens: a PlaybackGrant's ``playbackUrl`` carries a short-lived *grant* token
  (the grant's Ttl); the first playlist fetched with it hands the player a *session*
  token, which covers the media playlist, parts and segments until the stream ends.
  Both are HS256 JWTs keyed with a key derived from the auth token, bound to one
  PlayerStreamer and, where the grant named one, to the allowed origin.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

import jwt


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str] | None) -> str:
    data = url
    for name in sorted(params or {}):
        data += name + (params or {})[name]
    mac = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def playback_key(auth_token: str) -> bytes:
    """A key for playback tokens only: a leaked token never reveals the auth token."""
    return hmac.new(auth_token.encode(), b"mixer-ext playback tokens v1", hashlib.sha256).digest()


GRANT = "grant"
SESSION = "session"


@dataclass(frozen=True)
class PlaybackClaims:
    streamer_sid: str
    kind: str
    origin: str | None
    expires: float


class TokenRefused(Exception):
    """A playback token that is missing, forged, expired or for another stream."""


def mint_playback_token(
    key: bytes, streamer_sid: str, kind: str, origin: str | None, expires: float
) -> str:
    claims: dict[str, object] = {"sub": streamer_sid, "knd": kind, "exp": int(expires)}
    if origin:
        claims["org"] = origin
    return jwt.encode(claims, key, algorithm="HS256")


def check_playback_token(
    key: bytes, token: str | None, streamer_sid: str, kinds: tuple[str, ...], now: float
) -> PlaybackClaims:
    if not token:
        raise TokenRefused("no playback token")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=["HS256"],
            options={"require": ["exp", "sub"], "verify_exp": False},
        )
    except jwt.PyJWTError as exc:
        raise TokenRefused(f"invalid playback token ({type(exc).__name__})") from None
    if claims.get("sub") != streamer_sid:
        raise TokenRefused("playback token is for another stream")
    if claims.get("knd") not in kinds:
        raise TokenRefused("playback token of the wrong kind")
    if float(claims["exp"]) < now:
        raise TokenRefused("playback token expired")
    return PlaybackClaims(streamer_sid, str(claims["knd"]), claims.get("org"), claims["exp"])
