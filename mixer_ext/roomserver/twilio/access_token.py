"""Verifying Twilio access tokens, as minted by the Twilio helper libraries.

``twilio.jwt.access_token.AccessToken(account_sid, api_key_sid, api_secret,
identity=...)`` with a ``VideoGrant(room=...)`` makes an HS256 JWT whose header
carries ``cty: twilio-fpa;v=1`` and whose claims are ``iss`` (the API key SID),
``sub`` (the account SID), ``exp``, optionally ``nbf``, and
``grants: {identity, video: {room?}}``.  The server accepts it when the key is
one of ``MIXER_API_KEYS`` (``SK…:secret`` pairs, comma separated), ``sub`` is
``MIXER_ACCOUNT_SID``, the signature matches the key's secret, the token is
within its validity, it names an identity and holds a video grant, and the
grant's room (when it names one) is the room being joined.

Refusals carry the code twilio-video.js reports (``TwilioTokenError.error``):
20101 malformed, 20102 bad header, 20103 unknown key or other account,
20104 expired, 20105 not yet valid, 20106 no identity / no video grant /
**a grant for another room** (Twilio's "Invalid Access Token grants"),
20107 bad signature.  Messages are one line and never contain the token.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from mixer_ext.errors import ConfigError, MixerError
from mixer_ext.roomserver.twilio import errors as e
from mixer_ext.roomserver.twilio.sids import ACCOUNT, API_KEY, is_sid

ALGORITHM = "HS256"
CONTENT_TYPE = "twilio-fpa;v=1"
#: tokens longer than this are refused before any parsing
MAX_TOKEN_BYTES = 8192
#: clock skew tolerated on exp/nbf, seconds
LEEWAY = 5.0


class TwilioTokenError(MixerError):
    """A token was refused; ``error`` is the twilio-video.js code and message."""

    def __init__(self, error: e.TwilioVideoError, detail: str) -> None:
        super().__init__(f"{error.code} {error.message}: {detail}")
        self.error = error.with_detail(detail)


@dataclass(frozen=True, slots=True)
class VideoClaims:
    identity: str
    #: the room the grant is limited to, or None for any room
    room: str | None
    api_key_sid: str
    #: seconds since the epoch
    expires_at: float


def parse_account_sid(value: str) -> str:
    """``MIXER_ACCOUNT_SID`` checked: ``AC`` + 32 hex digits, else a one-line ConfigError."""
    value = value.strip()
    if not is_sid(value, ACCOUNT):
        raise ConfigError("MIXER_ACCOUNT_SID must be 'AC' followed by 32 hex digits")
    return value


def parse_api_keys(value: str) -> dict[str, str]:
    """``MIXER_API_KEYS`` (``SK…:secret,SK…:secret``) as {key SID: secret}.

    A malformed entry is a one-line ConfigError naming the entry's position, never its secret.
    """
    keys: dict[str, str] = {}
    for n, entry in enumerate((x.strip() for x in value.split(",")), start=1):
        if not entry:
            continue
        sid, sep, secret = entry.partition(":")
        if not sep or not is_sid(sid.strip(), API_KEY) or not secret.strip():
            raise ConfigError(
                f"MIXER_API_KEYS entry {n}: expected 'SK' + 32 hex digits, ':', then the secret"
            )
        keys[sid.strip()] = secret.strip()
    return keys


def verify_access_token(
    token: str | None,
    *,
    account_sid: str,
    api_keys: Mapping[str, str],
    room: str | tuple[str, ...] | None,
    now: float | None = None,
) -> VideoClaims:
    """Check a twilio-video.js token for joining ``room``; its claims, or ``TwilioTokenError``.

    ``room`` may name the room several ways (its unique name and its ``RM`` SID, as Twilio
    accepts either in a grant); ``None`` skips the room check.
    """
    if not token or not isinstance(token, str):
        raise TwilioTokenError(e.ACCESS_TOKEN_INVALID, "missing token")
    if len(token) > MAX_TOKEN_BYTES:
        raise TwilioTokenError(e.ACCESS_TOKEN_INVALID, "token too long")
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise TwilioTokenError(e.ACCESS_TOKEN_INVALID, "not a JWT") from None
    if header.get("alg") != ALGORITHM:
        raise TwilioTokenError(e.ACCESS_TOKEN_HEADER_INVALID, f"not signed with {ALGORITHM}")
    if header.get("cty") not in (CONTENT_TYPE, None):
        raise TwilioTokenError(e.ACCESS_TOKEN_HEADER_INVALID, "unexpected content type")
    iss, sub = unverified.get("iss"), unverified.get("sub")
    if not isinstance(sub, str) or not hmac.compare_digest(sub.encode(), account_sid.encode()):
        raise TwilioTokenError(e.ACCESS_TOKEN_ISSUER_INVALID, "token is for another account")
    secret = api_keys.get(iss) if isinstance(iss, str) else None
    if secret is None:
        raise TwilioTokenError(e.ACCESS_TOKEN_ISSUER_INVALID, "unknown API key")
    now = time.time() if now is None else now
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp"], "verify_exp": False, "verify_nbf": False},
        )
    except jwt.InvalidSignatureError:
        raise TwilioTokenError(e.ACCESS_TOKEN_SIGNATURE_INVALID, "signature mismatch") from None
    except jwt.MissingRequiredClaimError:
        raise TwilioTokenError(e.ACCESS_TOKEN_EXPIRED, "no expiry") from None
    except jwt.InvalidTokenError as exc:
        raise TwilioTokenError(e.ACCESS_TOKEN_INVALID, type(exc).__name__) from None
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not isinstance(exp, int | float) or now > exp + LEEWAY:
        raise TwilioTokenError(e.ACCESS_TOKEN_EXPIRED, "token expired")
    if nbf is not None and (not isinstance(nbf, int | float) or now + LEEWAY < nbf):
        raise TwilioTokenError(e.ACCESS_TOKEN_NOT_YET_VALID, "token not valid yet")
    grants = claims.get("grants")
    if not isinstance(grants, dict):
        raise TwilioTokenError(e.ACCESS_TOKEN_GRANTS_INVALID, "no grants")
    identity = grants.get("identity")
    if not isinstance(identity, str) or not identity:
        raise TwilioTokenError(e.ACCESS_TOKEN_GRANTS_INVALID, "no identity")
    video = grants.get("video")
    if not isinstance(video, dict):
        raise TwilioTokenError(e.ACCESS_TOKEN_GRANTS_INVALID, "no video grant")
    grant_room = video.get("room")
    if grant_room is not None and not isinstance(grant_room, str):
        raise TwilioTokenError(e.ACCESS_TOKEN_GRANTS_INVALID, "video grant room is not a string")
    names = (room,) if isinstance(room, str) else room
    if grant_room is not None and names is not None and grant_room not in names:
        raise TwilioTokenError(e.ACCESS_TOKEN_GRANTS_INVALID, "token is for another room")
    return VideoClaims(
        identity=identity, room=grant_room, api_key_sid=str(iss), expires_at=float(exp)
    )
