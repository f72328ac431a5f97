"""``mixer-ext api``: its help teaches, and a missing credential is one line (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.env import ROOT, free_port, mixer_ext_cmd


def _env_without_mixer() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MIXER_")}


@pytest.mark.slow
@pytest.mark.parametrize(
    "cmd", [[*mixer_ext_cmd(), "api"], [sys.executable, "-m", "mixer_ext.api"]]
)
def test_help_names_settings_and_the_migration(cmd: list[str]) -> None:
    proc = subprocess.run([*cmd, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for needle in (
        "--host",
        "--port",
        "MIXER_AUTH_TOKEN",
        "MIXER_API_PUBLIC_URL",
        "MIXER_API_DATA_DIR",
        "MIXER_API_DATABASE",
        "MIXER_API_MAX_PROCESSORS",
        "MIXER_API_LAUNCHER",
        "client.media.base_url",
        "media_processor.create",
    ):
        assert needle in out, needle


def test_listed_in_the_top_level_help() -> None:
    proc = subprocess.run(
        [*mixer_ext_cmd(), "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 0
    assert " api " in proc.stdout


@pytest.mark.slow
def test_missing_auth_token_is_one_line() -> None:
    proc = subprocess.run(
        [*mixer_ext_cmd(), "api", "--port", str(free_port())],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env_without_mixer(),
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "MIXER_AUTH_TOKEN" in lines[0], proc.stderr


def test_docs_settings_table_lists_every_api_setting() -> None:
    from mixer_ext.api.config import ApiSettings

    page = (ROOT / "docs" / "reference" / "settings.md").read_text()
    table = page.split("<!-- section: settings -->")[1].split("<!-- /section: settings -->")[0]
    missing = [
        f"MIXER_{name.upper()}"
        for name in ApiSettings.model_fields
        if f"`MIXER_{name.upper()}`" not in table
    ]
    assert not missing, f"the settings table (docs/reference/settings.md) lacks {missing}"
    migration = (ROOT / "docs" / "howto" / "migrate-backend.md").read_text()
    assert "# The Media v1 API" in migration and "client.media.base_url" in migration
    assert "client.media.base_url" in (ROOT / "README.md").read_text()
