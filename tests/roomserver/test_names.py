"""Room names and identities as Twilio took them (issue 21.3): any UTF-8 up to its lengths.

Twilio's documented rule (error 53200): an identity of more than 128 characters is refused,
double-byte characters counted as 2; error 53102 says a room name is refused for invalid
UTF-8, 53101 when it is too long.  Here both follow the identity's rule (128, wide
characters count 2); control characters are refused too (they would break log lines).
"""

from __future__ import annotations

import pytest

from mixer_ext.roomserver.names import MAX_NAME_LENGTH, check_identity, check_room_name, for_log
from mixer_ext.roomserver.rooms import Refusal, Refused, Rooms
from mixer_ext.roomserver.tokens import mint_token, verify_token

SECRET = "s" * 40
NAMES = ["Alice Smith", "José", "Daily Standup", "山田 太郎", "🎧 DJ Ñandú", "a" * 128, "会" * 64]


@pytest.mark.parametrize("name", NAMES)
def test_real_names_are_accepted_exactly(name: str) -> None:
    assert check_identity(name) == name
    assert check_room_name(name) == name
    claims = verify_token(SECRET, mint_token(SECRET, name, name), name)
    assert (claims.room, claims.identity) == (name, name)
    rooms = Rooms(max_participants=2, max_participant_duration=60.0, empty_timeout=1.0)
    admitted = rooms.join(name, name, 0.0)
    assert rooms[name].participants[name] is admitted.participant


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("a" * 129, "too long"),
        ("会" * 65, "too long"),  # 130: wide characters count 2
        ("🎧" * 65, "too long"),
        ("line\nbreak", "control character"),
        ("nul\x00", "control character"),
        ("tab\tbed", "control character"),
    ],
)
def test_refused_beyond_twilio_limits_with_one_line(name: str, why: str) -> None:
    for check in (check_identity, check_room_name):
        with pytest.raises(ValueError, match=why) as refused:
            check(name)
        assert "\n" not in str(refused.value) and len(str(refused.value)) < 200
    rooms = Rooms(max_participants=2, max_participant_duration=60.0, empty_timeout=1.0)
    with pytest.raises(Refused) as no:
        rooms.join("ok", name, 0.0)
    assert no.value.refusal is Refusal.IDENTITY_INVALID
    assert MAX_NAME_LENGTH == 128


def test_for_log_keeps_one_line() -> None:
    assert for_log("José 山田 🎧") == "José 山田 🎧"
    assert for_log("a\u2028b\u202ec") == "a\\u2028b\\u202ec"
