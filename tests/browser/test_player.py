"""The demo player in a real browser, on streams the product would never write.

Headless Debian chromium (npm playwright-core) opens the page served over
HTTP on 127.0.0.1 next to an HLS stream written by PyAV (MPEG-TS, AAC, ID3
TXXX payloads in a timed_id3 stream): malformed and out-of-order payloads, a
playlist that is missing at first, no source at all.  The live stream with
meters in sync is the product's own, in tests/browser/test_player_sync.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.env import ROOT, require_path
from tests.support.player_util import (
    THREE_TALKERS,
    HlsRun,
    PlayerServer,
    drive_player,
    write_hls,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def browser_ready() -> None:
    require_path(
        ROOT / "player_demo" / "vendor" / "hls.min.mjs",
        "player_demo/vendor/hls.min.mjs missing: run `make setup`",
    )


@pytest.fixture
def hls_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "hls"
    root.mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


async def test_player_drops_malformed_and_out_of_order_payloads(
    browser_ready: None, hls_root: Path
) -> None:
    bad = {
        3: '{"s":3,"p":{"alice":{"v":"loud"}}}',  # v is not an integer
        4: "not json at all",
        6: '{"s":2,"p":{"mallory":{"v":32767}}}',  # lower than the last shown
    }
    run = HlsRun(hls_root / "bad")
    write_hls(run, THREE_TALKERS, seconds=5.0, paced=False, rewrite=bad)
    assert run.error is None, run.error
    server = PlayerServer(hls_root, config={"src": "/hls/bad/index.m3u8"})
    await server.start()
    try:
        report = await drive_player(
            server.url, identities=list(THREE_TALKERS), autoplay=True, budget_s=40
        )
    finally:
        await server.stop()
    why = report.summary()
    assert report.raw["timedOut"] is None, why
    assert report.states[-1] == "ended", why
    seqs = [p["s"] for p in report.shown]
    assert seqs == [0, 1, 2, 5, 7, 8, 9], seqs
    assert "mallory" not in report.meters
    warnings = [c["text"] for c in report.raw["console"] if "[mixer-player]" in c["text"]]
    assert len(warnings) == 3, warnings
    assert sum("malformed payload dropped" in w for w in warnings) == 2, warnings
    assert any("out-of-order payload dropped: s=2 after s=5" in w for w in warnings), warnings


async def test_player_reports_a_missing_stream_and_retries_by_keyboard(
    browser_ready: None, hls_root: Path
) -> None:
    run = HlsRun(hls_root / "late")
    write_hls(run, THREE_TALKERS, seconds=5.0, paced=False)  # a finished recording
    assert run.error is None, run.error
    # the first request gets a 404, as when the page opens before the worker writes
    server = PlayerServer(hls_root, config=None, fail_first={"/hls/late/index.m3u8": 1})
    await server.start()
    try:
        report = await drive_player(
            f"{server.url}?src=/hls/late/index.m3u8", scenario="retry", autoplay=True, budget_s=40
        )
    finally:
        await server.stop()
    why = report.summary()
    assert report.raw["timedOut"] is None, why
    assert report.raw["errorText"].startswith("Stream error: could not load the playlist"), why
    assert "HTTP 404" in report.raw["errorText"], why
    assert report.raw["retryHadFocus"] is True, why
    # error first, then (after Retry) loading, playing, ended, and playing again
    assert report.states[0] in ("loading", "error") and "error" in report.states[:2], why
    after = report.states[report.states.index("error") + 1 :]
    assert after[0] == "loading" and "ended" in after and after[-1] == "playing", why
    first_pass = after[: after.index("ended")]
    assert "playing" in first_pass and "error" not in after, why  # a recording is not "live"
    assert report.meters == {} or set(report.meters) <= set(THREE_TALKERS)
    # played to the end, then again from the top: a replay (a seek back) shows
    # the payloads of the audio heard again, not the stale last ones
    seqs = [p["s"] for p in report.shown]
    last = len(seqs) - 1 - seqs[::-1].index(max(seqs))
    assert seqs[: last + 1] == list(range(max(seqs) + 1)), seqs
    assert seqs[last + 1 :][:3] == [0, 1, 2], seqs


async def test_player_without_config_asks_for_src(browser_ready: None, hls_root: Path) -> None:
    server = PlayerServer(hls_root, config=None)
    await server.start()
    try:
        report = await drive_player(server.url, scenario="nosource", budget_s=20)
    finally:
        await server.stop()
    why = report.summary()
    assert report.raw["timedOut"] is None, why
    assert report.states[-1] == "nosource", why
    assert report.raw["problem"].startswith("No stream to play: open this page with ?src="), why
