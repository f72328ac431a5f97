"""``mixer-ext api`` as a real process, for the end-to-end and browser tests of the API."""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.env import ROOT, mixer_ext_cmd
from tests.support.process_util import wait_for_port

SECRET = "api-e2e-room-secret-0123456789abcdef"
ACCOUNT = "AC" + "1" * 32
TOKEN = "api-e2e-auth-token"


def _get(url: str) -> tuple[int, str | bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            data = resp.read()
            headers = dict(resp.headers)
            ctype = headers.get("Content-Type", "")
            return resp.status, data.decode() if "mpegurl" in ctype else data, headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace"), dict(exc.headers)


class _Api:
    def __init__(self, port: int, env: dict[str, str], log: Path) -> None:
        self.port, self.env, self.log_path = port, env, log
        self.popen: subprocess.Popen[bytes] | None = None

    @classmethod
    def for_account(cls, port: int, env: dict[str, str], tmp_path: Path) -> _Api:
        """``ACCOUNT``/``TOKEN``'s API on ``port``, its data and log under ``tmp_path``."""
        api_env = {
            **env,
            "MIXER_ACCOUNT_SID": ACCOUNT,
            "MIXER_AUTH_TOKEN": TOKEN,
            "MIXER_API_DATA_DIR": str(tmp_path / "data"),
        }
        return cls(port, api_env, tmp_path / "api.log")

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [
                    *mixer_ext_cmd(),
                    "api",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env={**os.environ, **self.env},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, timeout=20)

    def stop(self) -> int | None:
        if self.popen and self.popen.poll() is None:
            self.popen.terminate()
            self.popen.wait(15)
        return self.popen.returncode if self.popen else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
