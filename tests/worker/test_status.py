"""Status webhook: retried until delivered, never blocking the caller, bounded."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from mixer_ext.worker.status import EndReason, State, StatusReporter
from tests.support.env import free_port


async def _server(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/hook?token=SECRET-TOKEN"


async def test_reports_are_retried_until_delivered_in_order() -> None:
    got: list[dict[str, Any]] = []
    calls = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls <= 2:
            return web.Response(status=503)
        got.append(await request.json())
        return web.Response(status=204)

    runner, url = await _server(hook)
    try:
        reporter = StatusReporter("RM1", "audio-mixer-v1", url, first_retry=0.05)
        reporter.start()
        t0 = time.monotonic()
        reporter.report(State.INITIALIZING)
        reporter.report(State.STARTED)
        reporter.report(State.ENDED, EndReason.MAX_PARTICIPANT_DURATION)
        assert time.monotonic() - t0 < 0.05, "report() must not wait for the webhook"
        await reporter.aclose(grace=10)
    finally:
        await runner.cleanup()
    assert calls == 5
    assert [(b["state"], b["reason"]) for b in got] == [
        ("initializing", None),
        ("started", None),
        ("ended", "max-participant-duration"),
    ]
    assert [b["sequence"] for b in got] == [1, 2, 3]
    assert {b["room"] for b in got} == {"RM1"}


async def test_a_dead_callback_never_delays_and_gives_up(caplog: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook?token=SECRET-TOKEN"  # nothing listens
    reporter = StatusReporter("RM1", "audio-mixer-v1", url, first_retry=0.01)
    reporter.start()
    t0 = time.monotonic()
    for _ in range(100):  # more than the queue holds: the oldest are dropped
        reporter.report(State.STARTED)
    assert time.monotonic() - t0 < 0.5
    assert len(reporter._pending) <= 32
    await reporter.aclose(grace=0.5)
    assert reporter._task is None
    assert "SECRET-TOKEN" not in caplog.text


async def test_without_callback_it_only_logs(caplog: Any) -> None:
    caplog.set_level("INFO")
    reporter = StatusReporter("RM1", "audio-mixer-v1", None)
    reporter.start()
    reporter.report(State.FAILED, "error-loading-extension", "token refused")
    await asyncio.wait_for(reporter.aclose(), 1)
    assert "status" in caplog.text
