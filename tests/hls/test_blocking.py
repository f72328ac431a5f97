"""LL-HLS blocking reload rules (RFC 8216bis 6.2.5): directives in, decision out (no I/O)."""

from __future__ import annotations

import pytest

from mixer_ext.hls.blocking import (
    Directives,
    Ready,
    Reject,
    Wait,
    advance_part_limit,
    decide,
    hold_limit,
    is_ready,
    parse_directives,
)
from mixer_ext.hls.playlist import Position


def pos(last: int = 10, last_parts: int = 5, open_parts: int = 2, **kw: object) -> Position:
    base: dict[str, object] = {
        "first_msn": max(1, last - 5),
        "last_msn": last,
        "last_msn_parts": last_parts,
        "open_parts": open_parts,
        "ended": False,
        "target_duration": 1,
        "part_target": 0.2,
        "can_skip": False,
        "preload_hint": f"part-{last + 1:06d}-{open_parts}.ts",
    }
    base.update(kw)
    return Position(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, Directives()),
        ({"_HLS_msn": "12"}, Directives(12)),
        ({"_HLS_msn": "12", "_HLS_part": "0"}, Directives(12, 0)),
        ({"_HLS_msn": "3", "_HLS_skip": "YES"}, Directives(3, None, True)),
        ({"_HLS_skip": "v2"}, Directives(None, None, True)),
        ({"other": "x"}, Directives()),
    ],
)
def test_parse_directives(query: dict[str, str], expected: Directives) -> None:
    assert parse_directives(query) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"_HLS_part": "1"}, "_HLS_part needs _HLS_msn"),
        ({"_HLS_msn": "-1"}, "_HLS_msn must be a non-negative integer"),
        ({"_HLS_msn": "1.5"}, "_HLS_msn must be"),
        ({"_HLS_msn": ""}, "_HLS_msn must be"),
        ({"_HLS_msn": "9" * 40}, "_HLS_msn must be"),
        ({"_HLS_msn": "1", "_HLS_part": "x"}, "_HLS_part must be"),
        ({"_HLS_skip": "NO"}, "_HLS_skip must be YES or v2"),
    ],
)
def test_bad_directives_are_400(query: dict[str, str], message: str) -> None:
    got = parse_directives(query)
    assert isinstance(got, Reject) and got.status == 400
    assert got.reason.startswith(message)


def test_existing_parts_and_segments_are_ready_now() -> None:
    p = pos()  # segments ..10 complete, parts 0,1 of 11 listed
    assert decide(Directives(), p) == Ready(False)
    assert decide(Directives(10), p) == Ready(False)
    assert decide(Directives(3), p) == Ready(False)  # older than the window: "or later"
    assert decide(Directives(11, 1), p) == Ready(False)
    assert decide(Directives(10, 4), p) == Ready(False)


def test_next_part_and_segment_wait() -> None:
    p = pos()
    assert decide(Directives(11, 2), p) == Wait(11, 2, False)
    assert decide(Directives(11), p) == Wait(11, None, False)
    assert decide(Directives(12, 0), p) == Wait(12, 0, False)
    assert decide(Directives(12), p) == Wait(12, None, False)


def test_part_past_the_last_part_of_a_segment_is_part_0_of_the_next() -> None:
    assert is_ready(10, 5, pos(open_parts=1))
    assert not is_ready(10, 5, pos(open_parts=0))
    assert decide(Directives(10, 7), pos(open_parts=0)) == Wait(10, 7, False)


def test_wait_becomes_ready_as_the_playlist_grows() -> None:
    assert not is_ready(11, 2, pos(open_parts=2))
    assert is_ready(11, 2, pos(open_parts=3))
    assert is_ready(11, 2, pos(last=11, open_parts=0))
    assert not is_ready(11, None, pos(open_parts=4))
    assert is_ready(11, None, pos(last=11, open_parts=0))


def test_too_far_ahead_is_400() -> None:
    p = pos()
    assert isinstance(decide(Directives(12), p), Wait)  # last + 2 is allowed
    r = decide(Directives(13), p)
    assert isinstance(r, Reject) and r.status == 400 and "too far ahead" in r.reason
    limit = advance_part_limit(0.2)
    assert limit == 15
    assert isinstance(decide(Directives(11, 1 + limit), p), Wait)
    assert isinstance(decide(Directives(11, 2 + limit), p), Reject)
    assert isinstance(decide(Directives(12, limit - 1), p), Wait)
    assert isinstance(decide(Directives(12, limit), p), Reject)
    assert advance_part_limit(1.0) == 3 and advance_part_limit(0.333) == 10


def test_directives_are_ignored_after_endlist() -> None:
    p = pos(ended=True)
    assert decide(Directives(50, 3), p) == Ready(False)
    assert is_ready(50, None, p)


def test_skip_only_when_offered() -> None:
    assert decide(Directives(11, 1, True), pos()) == Ready(False)
    assert decide(Directives(11, 1, True), pos(can_skip=True)) == Ready(True)
    assert decide(Directives(11, 4, True), pos(can_skip=True)) == Wait(11, 4, True)


def test_playlist_without_parts_waits_for_the_segment() -> None:
    p = pos(last_parts=0, open_parts=0, part_target=None)
    assert decide(Directives(11, 3), p) == Wait(11, None, False)
    assert decide(Directives(10, 3), p) == Ready(False)


def test_hold_limit_is_three_target_durations() -> None:
    assert hold_limit(pos(target_duration=2)) == 6.0
