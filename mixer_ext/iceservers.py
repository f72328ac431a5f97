"""The STUN/TURN servers handed to WebRTC clients, with TURN credentials (no I/O).

Settings (``MIXER_ICE_*``): STUN URLs, TURN URLs and either a fixed TURN username and
credential or a TURN shared secret.  With a secret, each client gets a time-limited
credential as coturn's ``use-auth-secret`` (the "TURN REST API" scheme) checks it: username
``<expiry unix time>:<identity>``, password base64(HMAC-SHA1(secret, username)); it is valid
until ``expiry`` (now + ``MIXER_ICE_TURN_TTL``).  The secret itself never leaves this process:
it is not in any answer, log line, argv or metric.

Consumers: the twilio-video.js gateway's ``iced`` answer, the room server's own
``/v1/config`` (TURN only for a request with a valid room token), and the mixer's own peer
connection (``connectors/embedded.py``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

SCHEMES_STUN = ("stun:", "stuns:")
SCHEMES_TURN = ("turn:", "turns:")


def split_urls(value: str) -> tuple[str, ...]:
    return tuple(u.strip() for u in value.split(",") if u.strip())


def check_urls(value: str, schemes: tuple[str, ...], name: str) -> str:
    """A one-line error naming the setting and the first URL that is not of ``schemes``."""
    for url in split_urls(value):
        if not url.startswith(schemes) or len(url) <= len(url.split(":", 1)[0]) + 1:
            raise ValueError(f"{url[:60]!r} is not a {'/'.join(schemes)} URL ({name})")
    return value


def turn_rest_credential(secret: str, identity: str, expiry: int) -> tuple[str, str]:
    """coturn's ``use-auth-secret`` credential for ``identity`` valid until ``expiry``."""
    username = f"{expiry}:{identity}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


@dataclass(frozen=True, slots=True)
class IceServers:
    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_username: str | None = None
    turn_credential: str | None = None
    turn_secret: str | None = None
    turn_ttl: int = 86400

    def __repr__(self) -> str:  # never the credential or the secret
        return f"IceServers(stun={list(self.stun_urls)}, turn={list(self.turn_urls)})"

    @classmethod
    def from_settings(cls, settings: Any) -> IceServers:
        def secret(value: Any) -> str | None:
            return None if value is None else str(value.get_secret_value())

        return cls(
            stun_urls=split_urls(settings.ice_stun_urls),
            turn_urls=split_urls(settings.ice_turn_urls),
            turn_username=settings.ice_turn_username,
            turn_credential=secret(settings.ice_turn_credential),
            turn_secret=secret(settings.ice_turn_secret),
            turn_ttl=settings.ice_turn_ttl,
        )

    def for_client(self, identity: str | None, now: float) -> list[dict[str, Any]]:
        """RTCIceServer dicts (``urls``, ``username``, ``credential``) for one client; TURN
        only for a known ``identity`` (a client that proved who it is)."""
        out: list[dict[str, Any]] = []
        if self.stun_urls:
            out.append({"urls": list(self.stun_urls)})
        if self.turn_urls and identity is not None:
            if self.turn_secret:
                user, password = turn_rest_credential(
                    self.turn_secret, identity, int(now) + self.turn_ttl
                )
            elif self.turn_username and self.turn_credential:
                user, password = self.turn_username, self.turn_credential
            else:
                return out
            out.append({"urls": list(self.turn_urls), "username": user, "credential": password})
        return out
