"""The worker's join policy (sans-I/O): backoff with jitter, give-up, deadline, end reasons."""

from __future__ import annotations

import pytest

from mixer_ext.connectors.base import Reason
from mixer_ext.worker.policy import GiveUp, JoinPolicy, Retry, outcome_of_disconnect
from mixer_ext.worker.status import State


def policy(now: float = 0.0, rng: float = 0.0, **kw: float) -> JoinPolicy:
    return JoinPolicy(3600, now, rng=lambda: rng, **kw)


def test_backoff_doubles_to_its_cap_and_a_join_resets_it() -> None:
    p = policy(first_delay=0.5, max_delay=4.0)
    delays = [p.failed(t, "r", "refused") for t in (1, 2, 3, 4, 5)]
    assert [d.delay for d in delays if isinstance(d, Retry)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    p.joined(10)
    assert p.failed(11, "r", "lost") == Retry(0.5)


def test_jitter_adds_at_most_its_share() -> None:
    assert policy(rng=1.0, first_delay=1.0, jitter=0.2).failed(1, "r", "x") == Retry(1.2)
    assert policy(rng=0.5, first_delay=1.0, jitter=0.2).failed(1, "r", "x") == Retry(1.1)


def test_give_up_after_a_long_run_of_failures_names_the_stage() -> None:
    p = policy(give_up_after=300)
    assert isinstance(p.failed(299, "room-a", "refused"), Retry)
    never = p.failed(301, "room-a", "refused")
    assert isinstance(never, GiveUp)
    assert never.outcome.state is State.FAILED
    assert never.outcome.reason == "error-loading-extension"
    assert "room-a" in (never.outcome.detail or "") and "refused" in (never.outcome.detail or "")
    q = policy(give_up_after=300)
    q.joined(10)
    q.left(20)
    assert isinstance(q.failed(200, "r", "lost"), Retry)  # counted from the last stay
    late = q.failed(321, "r", "lost")
    assert isinstance(late, GiveUp) and late.outcome.reason == "error-streaming-media"


def test_the_deadline_counts_from_the_first_join_only() -> None:
    p = JoinPolicy(100, 0.0)
    assert p.deadline is None and p.remaining(5) is None
    assert p.joined(5) is True
    assert p.deadline == 105
    p.left(50)
    assert p.joined(60) is False  # a rejoin does not move it
    assert p.deadline == 105
    assert p.remaining(100) == 5 and p.remaining(200) == 0
    assert p.joins == 2
    with pytest.raises(ValueError):
        JoinPolicy(0, 0.0)


@pytest.mark.parametrize(
    ("reason", "permanent", "state", "why"),
    [
        (Reason.MAX_PARTICIPANT_DURATION, True, State.ENDED, "max-participant-duration"),
        (Reason.ROOM_ENDED, True, State.ENDED, "room-ended"),
        (Reason.DUPLICATE_IDENTITY, True, State.FAILED, "error-streaming-media"),
        ("token-expired", True, State.FAILED, "error-streaming-media"),
    ],
)
def test_how_a_stay_ends(reason: str, permanent: bool, state: State, why: str) -> None:
    out = outcome_of_disconnect(reason, permanent, "audio-mixer-v1")
    assert out is not None and out.state is state and out.reason == why


def test_a_duplicate_identity_says_who_was_replaced() -> None:
    out = outcome_of_disconnect(Reason.DUPLICATE_IDENTITY, True, "audio-mixer-v1")
    assert out is not None and "'audio-mixer-v1'" in (out.detail or "")
    assert out.exit_code == 1


def test_a_transient_loss_is_worth_rejoining() -> None:
    assert outcome_of_disconnect(Reason.CONNECTION_LOST, False, "m") is None
