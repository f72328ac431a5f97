"""The test environment: the checkout, free ports, system programs.

Tests that need a system program (Janus, nginx, ffmpeg, Chromium) call
``require_program``: locally a missing program skips with the reason; under
CI (``CI=true``) it fails, because CI installs them all (``.ci/run``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mixer_ext.testing.net import ROOT, free_port, mixer_ext_cmd

__all__ = ["IN_CI", "ROOT", "free_port", "mixer_ext_cmd", "require_path", "require_program"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_program(name: str, *, package: str | None = None) -> str:
    """Path of ``name`` on PATH; skip locally / fail under CI when missing."""
    path = shutil.which(name)
    if path:
        return path
    why = f"{name} is not installed (Debian package {package or name}; .ci/run installs it)"
    if IN_CI:
        pytest.fail(why)
    pytest.skip(why)


def require_path(path: str | Path, why: str) -> Path:
    p = Path(path)
    if p.exists():
        return p
    if IN_CI:
        pytest.fail(why)
    pytest.skip(why)
