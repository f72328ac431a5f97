"""Room names and identities: what the room server accepts (one rule for every front-end).

As Twilio took them (issue 21.3): any text (a ``str`` is valid Unicode, so it is valid
UTF-8 on every wire) of 1 to ``MAX_NAME_LENGTH`` characters, where a wide character (East
Asian wide or full-width, or outside the Basic Multilingual Plane: CJK, most emoji) counts 2.
That is Twilio's documented identity rule (error 53200: "more than 128 characters ...
double-byte characters are counted as 2"); Twilio documents no number for room names
(53101 "too long", 53102 "not valid UTF-8"), so they follow the same rule.  Refused beyond
Twilio: control characters (C0/C1: NUL, tab, newline...), which would break the log lines,
file names and headers a name travels into.  Names are never altered: what is accepted
round-trips exactly (REST, callbacks, the mix's metadata).

Sans-I/O.  ``check_room_name`` / ``check_identity`` return the name or raise ``ValueError``
with a one-line message that quotes at most 40 characters of it (``for_log``).
"""

from __future__ import annotations

import unicodedata

#: Twilio's identity limit, in its units (a wide character counts 2)
MAX_NAME_LENGTH = 128
QUOTED = 40


def for_log(value: str) -> str:
    """``value`` as one printable line: characters that are not printable (line and
    paragraph separators, bidi controls...) are written as ``\\uXXXX`` escapes."""
    if value.isprintable():
        return value
    return "".join(ch if ch.isprintable() or ch == " " else f"\\u{ord(ch):04x}" for ch in value)


def name_length(value: str) -> int:
    """Length in Twilio's units: a wide or full-width character, or one outside the BMP, is 2."""
    return sum(
        2 if ord(ch) > 0xFFFF or unicodedata.east_asian_width(ch) in ("W", "F") else 1
        for ch in value
    )


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid room name / identity, else raise ValueError."""
    if not value:
        raise ValueError(f"{kind} is empty")
    shown = for_log(value[:QUOTED]) + ("..." if len(value) > QUOTED else "")
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cs"):  # controls; lone surrogates (not UTF-8)
            raise ValueError(f"{kind} {shown!r} contains a control character (U+{ord(ch):04X})")
    length = name_length(value)
    if length > MAX_NAME_LENGTH:
        raise ValueError(
            f"{kind} {shown!r} is too long ({length} > {MAX_NAME_LENGTH}; wide characters count 2)"
        )
    return value


def check_room_name(value: str) -> str:
    return check_name("room", value)


def check_identity(value: str) -> str:
    return check_name("identity", value)
