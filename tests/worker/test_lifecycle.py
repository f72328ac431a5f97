"""The worker's room lifecycle, around a scripted connector.

This is a unit test of the code around the connector (retries, the
never-rejoin rule, the end reasons, the status sequence): the connector is a
script, everything else (mixer clock, encoder, HLS output) is real.  The
real room is exercised end to end in tests/e2e/test_worker.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mixer_ext.connectors.base import (
    Reason,
    RoomConnector,
)
from mixer_ext.context import ExtensionContext
from mixer_ext.settings import Settings
from mixer_ext.worker import runner as worker_mod
from mixer_ext.worker.status import State
from tests.support.hls_reader import read_hls
from tests.support.worker import ScriptedConnector


def _worker(tmp_path: Path, steps: list[tuple[str, str | None, float]], duration: int = 60):
    log: list[str] = []
    script = iter(steps)

    def factory(settings: Settings, room: str, identity: str) -> RoomConnector:
        return ScriptedConnector(next(script), log)

    ctx = ExtensionContext.model_validate(
        {"room": {"name": "RM"}, "outputs": ["hls:t"], "maxParticipantDuration": duration}
    )
    settings = Settings(hls_dir=tmp_path, hls_segment_duration=1.0)
    w = worker_mod.Worker(ctx, settings, connector_factory=factory)
    states: list[tuple[State, str | None]] = []
    original = w.status.report

    def spy(state: State, reason: str | None = None, detail: str | None = None) -> None:
        states.append((state, reason))
        original(state, reason, detail)

    w.status.report = spy  # type: ignore[method-assign]
    return w, log, states


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_mod, "RETRY_FIRST_DELAY", 0.05)


@pytest.mark.slow
async def test_transient_failures_are_retried_until_the_room_says_max_duration(
    tmp_path: Path,
) -> None:
    w, log, states = _worker(
        tmp_path,
        [
            ("refuse", Reason.CONNECTION_LOST, 0),
            ("refuse", Reason.CONNECTION_LOST, 0),
            ("join", Reason.CONNECTION_LOST, 0.5),
            ("join", Reason.MAX_PARTICIPANT_DURATION, 1.0),
        ],
    )
    rc = await w.run()
    assert rc == 0
    assert [e for e in log if e.startswith("connect")] == [
        "connect:refuse",
        "connect:refuse",
        "connect:join",
        "connect:join",
    ]
    assert w.joins == 2
    assert states[0] == (State.INITIALIZING, None)
    assert states.count((State.STARTED, None)) == 1
    assert states[-1] == (State.ENDED, "max-participant-duration")
    assert read_hls(tmp_path / "t").ended


@pytest.mark.slow
async def test_own_deadline_ends_the_run_and_never_rejoins(tmp_path: Path) -> None:
    # the script has one join only: a second connect would raise StopIteration
    w, log, states = _worker(tmp_path, [("join", None, 3600)], duration=2)
    rc = await asyncio.wait_for(w.run(), 30)
    assert rc == 0
    assert log == ["connect:join", "disconnect"]
    assert states[-1] == (State.ENDED, "max-participant-duration")
    hls = read_hls(tmp_path / "t")
    assert hls.ended
    assert 1.5 < hls.duration < 5.0


@pytest.mark.parametrize(
    ("reason", "rc", "final"),
    [
        (Reason.ROOM_ENDED, 0, (State.ENDED, "room-ended")),
        # someone else took the mixer's identity: a loud failure, not a quiet end (issue 16.2)
        (Reason.DUPLICATE_IDENTITY, 1, (State.FAILED, "error-streaming-media")),
    ],
)
async def test_room_side_endings(
    tmp_path: Path, reason: str, rc: int, final: tuple[State, str]
) -> None:
    w, log, states = _worker(tmp_path, [("join", reason, 0.3)])
    assert await w.run() == rc
    assert states[-1] == final
    assert log.count("connect:join") == 1


async def test_refused_token_fails_without_retry(tmp_path: Path) -> None:
    w, log, states = _worker(tmp_path, [("refuse", Reason.UNAUTHORIZED, 0)])
    assert await w.run() == 1
    assert log == ["connect:refuse"]
    assert states[-1] == (State.FAILED, "error-loading-extension")


async def test_stop_request_ends_cleanly(tmp_path: Path) -> None:
    w, _log, states = _worker(tmp_path, [("join", None, 3600)])
    task = asyncio.create_task(w.run())
    await asyncio.sleep(1.5)
    w.request_stop()
    assert await asyncio.wait_for(task, 30) == 0
    assert states[-1] == (State.ENDED, "stopped")
    assert read_hls(tmp_path / "t").ended
