"""The one way a test starts Chromium: a playwright-core page script of tests/browser/pages/.

``page_script(name)`` is the argv (``node`` + the script) that runs Debian's chromium
headless; it checks the pieces are installed (skip locally, fail under CI) and that the
running test carries the ``browser`` mark (tests/support/marks.py).
"""

from __future__ import annotations

from tests.support.env import ROOT, require_path, require_program
from tests.support.marks import need

PAGES = ROOT / "tests" / "browser" / "pages"
CHROMIUM = "/usr/bin/chromium"


def page_script(name: str) -> list[str]:
    """``[node, tests/browser/pages/<name>]``, for ``asyncio.create_subprocess_exec``."""
    need("browser", f"Chromium ({name})")
    node = require_program("node", package="nodejs")
    require_path(CHROMIUM, "Debian chromium is not installed (.ci/run installs it)")
    require_path(ROOT / "node_modules" / "playwright-core", "no node_modules: run `make setup`")
    return [node, str(require_path(PAGES / name, f"no page script {name}"))]
