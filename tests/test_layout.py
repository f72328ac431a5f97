"""tests/ mirrors mixer_ext/, and no test module imports another (issue 25 item 2).

Where a test file goes (the failure messages say it too):
- tests of ``mixer_ext/<package>/...`` go in ``tests/<package>/`` (subpackages the same:
  ``mixer_ext/roomserver/twilio/`` -> ``tests/roomserver/twilio/``);
- tests of a top-level module ``mixer_ext/<name>.py`` are ``tests/test_<name>.py``; the
  top level also holds the project-wide checks listed in ``PROJECT_WIDE``;
- besides the packages: ``tests/e2e/`` (runs of several real processes, marked slow),
  ``tests/browser/`` (tests that drive Chromium, marked browser; their page scripts in
  ``tests/browser/pages/``), ``tests/deploy/`` (the Helm chart, the container image),
  ``tests/player_demo/`` (the player page's node tests), ``tests/support/`` (helpers
  shared by tests; no test inside).
Shared code goes in ``tests/support/`` or, when benchmarks use it too,
``mixer_ext/testing/`` (one wait-until: ``testing/wait.py``; one spectrum check:
``testing/spectrum.py``).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from tests.support.browser import PAGES
from tests.support.env import ROOT

TESTS = ROOT / "tests"
PACKAGE = ROOT / "mixer_ext"

#: folders of tests/ that are not packages of mixer_ext/, and why
SPECIAL = {
    "e2e": "runs of several real processes (slow)",
    "browser": "tests that drive Chromium (browser)",
    "deploy": "the Helm chart and the container image",
    "player_demo": "the player page (player_demo/) and its node tests",
    "support": "helpers shared by tests (no test_*.py inside)",
}
#: folders inside those that hold no Python (page scripts, node tests, fixtures)
DATA = {TESTS / "browser" / "pages", TESTS / "player_demo" / "js", TESTS / "e2e" / "node"}
#: top-level test modules that check the project as a whole, not one module
PROJECT_WIDE = {
    "test_layout.py": "this file",
    "test_structure.py": "import circles and private access across packages",
    "test_docs.py": "the docs site and README",
    "test_aiortc_private_api.py": "the aiortc internals the code relies on",
    "test_fuzz_parsers.py": "every parser a stranger's bytes reach",
}

WHERE = (
    "tests of mixer_ext/<package>/x.py go in tests/<package>/test_x.py, of a top-level "
    "module mixer_ext/x.py in tests/test_x.py; multi-process runs in tests/e2e/, tests "
    "driving Chromium in tests/browser/, shared helpers in tests/support/ "
    "(see tests/test_layout.py)"
)


@functools.cache
def _parsed() -> dict[Path, ast.Module]:
    """Every Python file of tests/, parsed once for all the checks below."""
    return {f: ast.parse(f.read_text()) for f in sorted(TESTS.rglob("*.py"))}


def _folders() -> list[Path]:
    out = []
    for d in sorted(TESTS.rglob("*")):
        if not d.is_dir() or d.name == "__pycache__" or d.name.startswith("."):
            continue
        if any(d == x or x in d.parents for x in DATA):
            continue
        out.append(d)
    return out


def test_every_folder_mirrors_a_package_or_is_named() -> None:
    wrong = []
    for d in _folders():
        rel = d.relative_to(TESTS)
        if rel.parts[0] in SPECIAL:
            continue
        if not (PACKAGE / rel / "__init__.py").is_file():
            wrong.append(f"tests/{rel}/ is no package mixer_ext/{rel}/")
    assert not wrong, "; ".join(wrong) + f". {WHERE}"


def test_every_folder_is_a_package() -> None:
    """Test modules of the same name in two folders need both folders to be packages."""
    missing = [f"tests/{d.relative_to(TESTS)}/__init__.py" for d in _folders()]
    missing = [m for m in missing if not (ROOT / m).is_file()]
    assert not missing, f"missing {', '.join(missing)}"


def test_top_level_holds_only_top_level_module_tests() -> None:
    wrong = []
    for f in sorted(TESTS.glob("test_*.py")):
        module = f.name.removeprefix("test_")
        if f.name not in PROJECT_WIDE and not (PACKAGE / module).is_file():
            wrong.append(f"tests/{f.name} tests no mixer_ext/{module}")
    assert not wrong, "; ".join(wrong) + f". {WHERE}"


def test_support_holds_no_tests() -> None:
    found = sorted(str(f.relative_to(TESTS)) for f in (TESTS / "support").rglob("test_*.py"))
    assert not found, f"{found}: tests/support/ holds helpers only. {WHERE}"


def _imported(tree: ast.AST, module: str) -> set[str]:
    """Every module ``tree`` imports (absolute names; ``from x import y`` counts x.y too)."""
    names: set[str] = set()
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def test_no_test_module_imports_another() -> None:
    wrong = []
    for f, tree in _parsed().items():
        module = ".".join(f.relative_to(ROOT).with_suffix("").parts)
        for name in sorted(_imported(tree, module)):
            last = name.rsplit(".", 1)[-1]
            if name.startswith("tests.") and (last.startswith("test_") or last == "conftest"):
                wrong.append(f"{f.relative_to(ROOT)} imports {name}")
    assert not wrong, (
        "; ".join(wrong) + ". Move what is shared to tests/support/ (or mixer_ext/testing/ "
        "when benchmarks use it too) and import it from there"
    )


def test_page_scripts_are_started_through_page_script() -> None:
    """Chromium starts only through ``tests/support/browser.page_script(name)``, which
    checks the ``browser`` mark: a page script's name appears nowhere else."""
    scripts = {p.name for p in PAGES.glob("*.mjs")}
    assert scripts, f"no page scripts in {PAGES}"
    wrong = []
    for f, tree in _parsed().items():
        allowed = {
            id(arg)
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", "")) == "page_script"
            for arg in node.args
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in allowed
                and node.value.rsplit("/", 1)[-1] in scripts
            ):
                wrong.append(f"{f.relative_to(ROOT)}:{node.lineno} names {node.value}")
    assert not wrong, "; ".join(wrong) + ": start a page script with page_script(name)"
