"""Access tokens for the embedded room server: HS256 JWTs signed with ``MIXER_ROOM_SECRET``.

A token names one room (claim ``room``), one identity (claim ``sub``) and
expires (claim ``exp``, seconds since the epoch).  The server refuses a token
that is missing, forged (bad signature or algorithm), expired, malformed or
for another room; ``TokenError.args[0]`` says which, in one line that never
contains the token itself.

``mixer-ext token --room R --identity I [--ttl S] [--output FILE]`` prints one (or
writes it to ``FILE``: the chart's init container hands the worker its token that way).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from mixer_ext.errors import ConfigError, MixerError
from mixer_ext.roomserver.limits import ROLE_PARTICIPANT, ROLES
from mixer_ext.roomserver.names import check_name
from mixer_ext.settings import Settings

ALGORITHM = "HS256"
ISSUER = "mixer-ext"
DEFAULT_TTL = 3600.0
#: HS256 keys shorter than the hash (32 bytes) can be brute-forced from any token seen
MIN_SECRET_BYTES = 32
MAX_TTL = 30 * 86_400.0


class TokenError(MixerError):
    """A token was refused.  ``str()`` is one line and never contains the token."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    room: str
    identity: str
    #: expiry, seconds since the epoch
    expires_at: float
    #: ``participant`` (default) or ``mixer``: only a mixer-role token takes a mixer identity
    role: str = ROLE_PARTICIPANT


def mint_token(
    secret: str, room: str, identity: str, ttl: float = DEFAULT_TTL, role: str = ROLE_PARTICIPANT
) -> str:
    """A token letting ``identity`` join ``room`` as ``role`` for ``ttl`` seconds from now."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {sorted(ROLES)}, got {role!r}")
    if not secret:
        raise TokenError("the room secret is empty")
    check_name("room", room)
    check_name("identity", identity)
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be in (0, {MAX_TTL:.0f}] seconds, got {ttl}")
    now = time.time()
    claims = {
        "iss": ISSUER,
        "room": room,
        "sub": identity,
        "role": role,
        "iat": int(now),
        "exp": now + ttl,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str | None, room: str) -> TokenClaims:
    """Check ``token`` for ``room`` and return its claims, or raise ``TokenError``."""
    if not token:
        raise TokenError("missing token")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "sub", "room", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token expired") from None
    except jwt.InvalidSignatureError:
        raise TokenError("forged token (signature does not match the server's secret)") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidAlgorithmError:
        raise TokenError(f"token is not signed with {ALGORITHM}") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token ({type(exc).__name__})") from None
    token_room, identity = claims.get("room"), claims.get("sub")
    if not isinstance(token_room, str) or not isinstance(identity, str):
        raise TokenError("token claims 'room' and 'sub' must be strings")
    if token_room != room:
        raise TokenError(f"token is for room {token_room[:40]!r}, not {room[:40]!r}")
    try:
        check_name("identity", identity)
    except ValueError as exc:
        raise TokenError(str(exc)) from None
    # a leaked long-lived token stays bad: the lifetime limit holds on verify, not only on mint
    issued, expires = claims.get("iat"), claims.get("exp")
    if not isinstance(issued, int | float):
        issued = time.time()  # no iat: what is left of it counts
    if isinstance(expires, int | float) and expires - issued > MAX_TTL:
        raise TokenError(
            f"token lifetime {expires - issued:.0f} s exceeds the maximum {MAX_TTL:.0f} s"
        )
    role = claims.get("role", ROLE_PARTICIPANT)
    if role not in ROLES:
        raise TokenError(f"token role must be one of {sorted(ROLES)}")
    return TokenClaims(
        room=token_room, identity=identity, expires_at=float(claims["exp"]), role=role
    )


def secret_from(settings: Settings, what: str) -> str:
    """The room secret, or a one-line ConfigError saying ``what`` needs it (or it is weak)."""
    if settings.room_secret is None or not settings.room_secret.get_secret_value():
        raise ConfigError(f"MIXER_ROOM_SECRET is not set; {what} needs it")
    secret = settings.room_secret.get_secret_value()
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"MIXER_ROOM_SECRET is too short ({len(secret.encode())} bytes; at least "
            f"{MIN_SECRET_BYTES}, e.g. from `openssl rand -hex 32`)"
        )
    return secret


# --- CLI: mixer-ext token ---------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--room", required=True, help="room the token admits to")
    parser.add_argument("--identity", required=True, help="participant identity")
    parser.add_argument(
        "--ttl", type=float, default=DEFAULT_TTL, help="seconds the token is valid (default 3600)"
    )
    parser.add_argument(
        "--role",
        choices=sorted(ROLES),
        default=ROLE_PARTICIPANT,
        help="participant (default), or mixer: only a mixer-role token may join under a "
        "mixer identity (MIXER_ROOM_MIXER_IDENTITIES); give those to mixer workers only",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write the token to FILE (mode 0600, replaced atomically) instead of stdout, "
        "e.g. for MIXER_ROOM_TOKEN_FILE",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    secret = secret_from(settings, "minting a token")
    try:
        token = mint_token(secret, args.room, args.identity, args.ttl, args.role)
    except (ValueError, TokenError) as exc:
        raise ConfigError(str(exc)) from None
    if args.output is None:
        sys.stdout.write(token + "\n")
        return 0
    target = Path(args.output)
    partial = target.with_name(f".{target.name}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(token + "\n")
        os.replace(partial, target)
    except OSError as exc:
        raise ConfigError(f"--output: cannot write {args.output[:200]!r}: {exc.strerror}") from None
    return 0
