"""The room server's limits (``roomserver.limits``) and bounded JSON, with a fake clock."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixer_ext.roomserver.limits import (
    ROLE_MIXER,
    ROLE_PARTICIPANT,
    ConnectionLimits,
    LatestWins,
    LogThrottle,
    PreJoinGuard,
    Refusal,
    TokenBucket,
    identity_refusal,
)
from mixer_ext.safejson import loads_bounded, nesting_depth


def test_token_bucket_burst_then_rate() -> None:
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    assert sum(bucket.take(0.0) for _ in range(1000)) == 20  # a flood in one read: 20 pass
    assert not bucket.take(0.05)  # half a token refilled
    assert bucket.take(0.1)
    # a steady 10/s never runs dry, for ever
    assert all(bucket.take(1.0 + i / 10) for i in range(600))
    # after a long pause the burst is back, and no more than the burst
    assert sum(bucket.take(100.0) for _ in range(30)) == 20
    # a refused message costs nothing: 0.5 s later, 5 pass
    assert sum(bucket.take(100.5) for _ in range(30)) == 5
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=5, now=0.0)


def test_token_bucket_never_exceeds_burst_after_idle() -> None:
    bucket = TokenBucket(rate=100, burst=5, now=0.0)
    assert sum(bucket.take(3600.0) for _ in range(50)) == 5


def test_latest_wins_one_slot_per_key() -> None:
    pending: LatestWins[tuple[str, str], bool] = LatestWins()
    queued = [pending.put(("alice", "TR_1"), i % 2 == 0) for i in range(1001)]
    assert queued.count(True) == 1 and len(pending) == 1
    assert pending.put(("bob", "TR_2"), False)
    assert pending.pop(("alice", "TR_1")) is True  # the last of 1001 toggles (i = 1000)
    assert pending.pop(("alice", "TR_1")) is None
    pending.discard(("bob", "TR_2"))
    assert len(pending) == 0


def test_connection_limits_pending_and_per_address() -> None:
    limits = ConnectionLimits(max_pending=3, max_per_address=2)
    assert limits.open("10.0.0.1") is None
    assert limits.open("10.0.0.1") is None
    assert limits.open("10.0.0.1") is Refusal.TOO_MANY_FROM_ADDRESS
    assert limits.open("10.0.0.2") is None
    assert limits.open("10.0.0.3") is Refusal.TOO_MANY_PENDING  # 3 not joined yet
    limits.joined("10.0.0.1")
    assert limits.open("10.0.0.3") is None  # a join frees a pending slot
    assert limits.open("10.0.0.1") is Refusal.TOO_MANY_FROM_ADDRESS  # joined still counts
    limits.closed("10.0.0.1", joined=True)
    limits.closed("10.0.0.1", joined=False)
    assert limits.pending == 2 and "10.0.0.1" not in limits.by_address
    assert limits.open("10.0.0.1") is None


def test_pre_join_guard() -> None:
    guard = PreJoinGuard(max_errors=3)
    assert [guard.error() for _ in range(3)] == [False, False, True]


def test_log_throttle_counts_what_it_holds_back() -> None:
    throttle = LogThrottle(lines=3, period=10.0)
    results = [throttle.allow("malformed", 0.0 + i / 1000) for i in range(1000)]
    assert [r for r in results if r[0]] == [(True, 0)] * 3
    assert throttle.allow("oversized", 1.0) == (True, 0)  # another kind has its own budget
    assert throttle.allow("malformed", 10.5) == (True, 997)  # next window says what it held
    assert throttle.allow("malformed", 10.6) == (True, 0)


@pytest.mark.parametrize(
    ("identity", "role", "holder", "refused"),
    [
        ("audio-mixer-v1", ROLE_PARTICIPANT, None, "reserved for the mixer"),
        ("audio-mixer-v1", ROLE_MIXER, None, None),
        ("audio-mixer-v1", ROLE_MIXER, ROLE_MIXER, None),  # a restarted worker takes over
        ("bot-2", ROLE_PARTICIPANT, ROLE_MIXER, "held by a mixer"),
        ("alice", ROLE_PARTICIPANT, ROLE_PARTICIPANT, None),
        ("alice", ROLE_PARTICIPANT, None, None),
    ],
)
def test_identity_refusal(
    identity: str, role: str, holder: str | None, refused: str | None
) -> None:
    why = identity_refusal(
        identity, role, reserved=frozenset({"audio-mixer-v1"}), holder_role=holder
    )
    assert (why is None) if refused is None else (why is not None and refused in why)


def test_loads_bounded_refuses_deep_nesting_as_a_decode_error() -> None:
    with pytest.raises(json.JSONDecodeError, match="nested deeper than 64"):
        loads_bounded("[" * 60_000)
    with pytest.raises(json.JSONDecodeError):
        loads_bounded(b'{"a":' * 100 + b"1" + b"}" * 100)
    # brackets inside strings are text, not nesting
    assert loads_bounded('{"s": "[[[[[[[[\\"[[[[" }', max_depth=1) == {"s": '[[[[[[[["[[[['}
    assert loads_bounded("[[1]]", max_depth=2) == [[1]]


@pytest.mark.slow
@given(st.recursive(st.integers() | st.text(max_size=5), lambda c: st.lists(c, max_size=3)))
def test_nesting_depth_matches_the_value(value: object) -> None:
    def depth(v: object) -> int:
        return 1 + max((depth(x) for x in v), default=0) if isinstance(v, list) else 0

    assert nesting_depth(json.dumps(value)) == depth(value)
