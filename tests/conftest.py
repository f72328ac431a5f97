"""Fixtures and marks for every test.

Shared fixtures are defined beside their helpers in tests/support/ and registered here.
Marks (browser, janus, rtmp, slow) are applied here from the tables in
tests/support/marks.py: by folder and by the fixtures a test uses; the helpers that
start Chromium, Janus, nginx/ffmpeg-RTMP or a worker check the mark at run time.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest

from tests.support import marks
from tests.support.env import ROOT
from tests.support.reference_backend import stack_fixture  # noqa: F401
from tests.support.rtmp import nginx_rtmp  # noqa: F401

TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else ""
        wanted = set(marks.FOLDER_MARKS.get(folder, ()))
        for name in getattr(item, "fixturenames", ()):
            wanted.update(marks.FIXTURE_MARKS.get(name, ()))
        have = {m.name for m in item.iter_markers()}
        for mark in sorted(wanted - have):
            item.add_marker(mark)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    marks.current = item
    try:
        return (yield)
    finally:
        marks.current = None


@pytest.fixture
def artifacts_dir() -> Path:
    """``test-artifacts/`` at the top of the checkout (screenshots, logs worth keeping)."""
    d = ROOT / "test-artifacts"
    d.mkdir(exist_ok=True)
    return d
