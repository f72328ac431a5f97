"""Fixtures for every test (the shared ones are defined beside their helpers in
tests/support/ and registered here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.env import ROOT
from tests.support.reference_backend import stack_fixture  # noqa: F401
from tests.support.rtmp import nginx_rtmp  # noqa: F401


@pytest.fixture
def artifacts_dir() -> Path:
    """``test-artifacts/`` at the top of the checkout (screenshots, logs worth keeping)."""
    d = ROOT / "test-artifacts"
    d.mkdir(exist_ok=True)
    return d
