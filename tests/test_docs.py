"""The docs: the site builds with no warning.

``mkdocs build --strict`` (what ``make docs`` runs) fails on a link to a missing page or
anchor and on a page left out of the nav (``mkdocs.yml``'s ``validation``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_the_site_builds_strict(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
