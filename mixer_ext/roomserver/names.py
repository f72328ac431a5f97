"""Room names and identities: what the room server accepts (one rule for every front-end).

Sans-I/O.  ``check_room_name`` / ``check_identity`` return the name or raise ``ValueError``
with a one-line message that quotes at most 40 characters of it.
"""

from __future__ import annotations

import re

#: identities and room names: printable, no whitespace, short enough for a log line
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$")


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid room name / identity, else raise ValueError."""
    if not NAME_PATTERN.match(value):
        raise ValueError(
            f"{kind} {value[:40]!r} is invalid (1-128 characters: letters, digits, . _ : @ + -; "
            "starting with a letter or digit)"
        )
    return value


def check_room_name(value: str) -> str:
    return check_name("room", value)


def check_identity(value: str) -> str:
    return check_name("identity", value)
