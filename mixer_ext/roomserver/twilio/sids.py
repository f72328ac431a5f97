"""Twilio resource SIDs: a two-letter prefix and 32 hex digits (Twilio mints lowercase)."""

from __future__ import annotations

import re
import secrets

ROOM = "RM"
PARTICIPANT = "PA"
TRACK = "MT"
ACCOUNT = "AC"
API_KEY = "SK"

_SID = re.compile(r"^[A-Z]{2}[0-9a-fA-F]{32}$")


def new_sid(prefix: str) -> str:
    """A fresh random SID with ``prefix`` (``RM``, ``PA``, ``MT``...)."""
    if len(prefix) != 2 or not prefix.isupper():
        raise ValueError(f"SID prefix must be two capital letters, got {prefix!r}")
    return prefix + secrets.token_hex(16)


def is_sid(value: str, prefix: str) -> bool:
    """True when ``value`` is a well-formed SID starting with ``prefix``."""
    return value.startswith(prefix) and _SID.match(value) is not None
