"""The docs: the site builds with no warning, the README stays short and its links resolve.

``mkdocs build --strict`` (what ``make docs`` runs) fails on a link to a missing page or
anchor and on a page left out of the nav (``mkdocs.yml``'s ``validation``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.env import ROOT

#: the README says what it is, the two commands and one short path per audience
README_MAX_LINES = 200


@pytest.mark.slow
def test_the_site_builds_strict(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_readme_is_short_and_its_links_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "the README links into docs/"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_the_settings_table_lists_every_worker_setting() -> None:
    """api/test_cli.py checks the API's settings, roomserver/test_security.py the room's."""
    from mixer_ext.settings import Settings

    page = (ROOT / "docs" / "reference" / "settings.md").read_text()
    table = page.split("<!-- section: settings -->")[1].split("<!-- /section: settings -->")[0]
    missing = [
        f"MIXER_{name.upper()}"
        for name in Settings.model_fields
        if f"`MIXER_{name.upper()}`" not in table
    ]
    assert not missing, f"the settings table (docs/reference/settings.md) lacks {missing}"
