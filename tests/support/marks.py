"""Marks come from what a test starts, never from memory.

``make unit`` runs ``-m "not browser and not janus and not rtmp and not slow"``; a test
that starts Chromium, Janus, nginx/ffmpeg-RTMP or a worker process without its mark
would slow or break that lane.  So the marks are applied in one place
(``tests/conftest.py``, ``pytest_collection_modifyitems``): by folder (``FOLDER_MARKS``)
and by the fixtures a test uses (``FIXTURE_MARKS``); and every helper that starts one
of those calls ``need()`` first, which fails a test that lacks the mark with one line
naming it.  A test that starts such a thing directly (not through a marked fixture or
folder) carries the mark by hand, and ``need()`` proves it is there.
"""

from __future__ import annotations

import pytest

#: the marks ``make unit`` leaves out; each one's meaning is in pyproject.toml
LANE_MARKS = ("browser", "janus", "rtmp", "slow")

#: every test under tests/<folder>/ gets these marks
FOLDER_MARKS: dict[str, tuple[str, ...]] = {
    "browser": ("browser",),  # tests that drive Chromium
    "e2e": ("slow",),  # multi-process end-to-end runs
    "deploy": ("slow",),  # the chart rendered by Helm's Go engine, the image built by podman
}

#: a test that uses one of these fixtures (directly or through another) gets the marks
FIXTURE_MARKS: dict[str, tuple[str, ...]] = {
    "nginx_rtmp": ("rtmp",),  # tests/support/rtmp.py: nginx with the RTMP module
    "stack": ("slow",),  # tests/support/reference_backend.py: room server + API + talkers
}

#: the test being run (set by tests/conftest.py around each test's setup, call, teardown)
current: pytest.Item | None = None


def need(mark: str, what: str, *, or_any_lane_mark: bool = False) -> None:
    """Fail the running test in one line unless it carries ``mark`` (with
    ``or_any_lane_mark``: any mark that keeps it out of ``make unit``)."""
    item = current
    if item is None:  # not inside a test (a script, a benchmark)
        return
    have = {m.name for m in item.iter_markers()}
    if mark in have or (or_any_lane_mark and have & set(LANE_MARKS)):
        return
    pytest.fail(
        f"{item.nodeid} starts {what} but lacks the `{mark}` mark: mark it "
        f"@pytest.mark.{mark} (or move it to the folder / use the fixture that marks it, "
        f"see tests/support/marks.py)",
        pytrace=False,
    )
