"""The container image as the tests use it: built by ``.ci/image``, read from its config.

``built_image()`` builds the Dockerfile with Podman on Debian-made bases (cached between
runs by Podman's store), reads the image's own config (entrypoint, cmd, user, working
directory, environment: never hard-coded here) and mounts its root filesystem.
``ImageProc`` runs a command in that filesystem the way the chart's pod does (see
``tests/deploy/image_enter.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import IN_CI, ROOT, require_program
from tests.support.process_util import Proc, processes

#: the tag ``.ci/image`` builds for the tests (MIXER_TEST_IMAGE names another, prebuilt)
TAG = "localhost/mixer-ext:ci"
BUILD_TIMEOUT = 1500


@dataclass(frozen=True)
class Image:
    tag: str
    #: the image's root filesystem, mounted read-only by ``podman image mount``
    root: Path
    entrypoint: list[str]
    cmd: list[str]
    #: the USER instruction as the config holds it, e.g. ``10001:10001``
    user: str
    uid: int
    gid: int
    workdir: str
    env: dict[str, str]
    size: int
    build_seconds: float | None

    def home(self) -> str:
        """HOME as runtimes set it: the user's entry in the image's /etc/passwd, else /."""
        for line in (self.root / "etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) >= 6 and fields[2] == str(self.uid):
                return fields[5]
        return "/"


def _id_in(root: Path, table: str, name: str) -> int:
    if name.isdigit():
        return int(name)
    for line in (root / "etc" / table).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise AssertionError(f"USER names {name!r}, which the image's /etc/{table} lacks")


def _unavailable(why: str) -> None:
    if IN_CI:
        pytest.fail(why)
    pytest.skip(why)


def _podman(*args: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


@contextmanager
def built_image(log_dir: Path) -> Iterator[Image]:
    """Build (or reuse, ``MIXER_TEST_IMAGE``), inspect and mount the image."""
    if os.geteuid() != 0:
        _unavailable("building and mounting the image needs root (debootstrap, podman mount)")
    require_program("podman")
    require_program("debootstrap")
    require_program("unshare", package="util-linux")
    tag = os.environ.get("MIXER_TEST_IMAGE", "")
    seconds = None
    if not tag:
        log = log_dir / "image-build.log"
        t0 = time.monotonic()
        with open(log, "wb") as out:
            proc = subprocess.run(
                [str(ROOT / ".ci/image"), TAG],
                stdout=subprocess.PIPE,
                stderr=out,
                cwd=ROOT,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
        seconds = time.monotonic() - t0
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f".ci/image failed (exit {proc.returncode}), log {log}:\n{tail}")
        tag = proc.stdout.decode().split()[-1]
        print(f"image {tag} built in {seconds:.0f} s, load {os.getloadavg()}", file=sys.stderr)
    (info,) = json.loads(_podman("image", "inspect", tag))
    config = info["Config"]
    root = Path(_podman("image", "mount", tag).strip())
    try:
        user = config.get("User", "")
        uname, _, gname = user.partition(":")
        yield Image(
            tag=tag,
            root=root,
            entrypoint=list(config.get("Entrypoint") or []),
            cmd=list(config.get("Cmd") or []),
            user=user,
            uid=_id_in(root, "passwd", uname or "0"),
            gid=_id_in(root, "group", gname) if gname else 0,
            workdir=config.get("WorkingDir") or "/",
            env=dict(e.split("=", 1) for e in config.get("Env") or []),
            size=int(info["Size"]),
            build_seconds=seconds,
        )
    finally:
        _podman("image", "unmount", tag)


class ImageProc(Proc):
    """The image's ENTRYPOINT with ``args``, run in its root filesystem as its USER.

    ``env`` is added to the image's own environment; ``binds`` maps a path in the image
    to a host directory (made writable by the image's user, as ``fsGroup`` does).
    """

    def __init__(
        self,
        image: Image,
        args: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        binds: dict[str, Path] | None = None,
    ) -> None:
        for host in (binds or {}).values():
            host.mkdir(parents=True, exist_ok=True)
            os.chown(host, image.uid, image.gid)
        spec: dict[str, Any] = {
            "root": str(image.root),
            "workdir": image.workdir,
            "uid": image.uid,
            "gid": image.gid,
            "argv": [*image.entrypoint, *args],
            "env": {"HOME": image.home(), **image.env, **(env or {})},
            "binds": {k: str(v) for k, v in (binds or {}).items()},
        }
        # a private mount namespace: every mount of image_enter goes with the process
        unshare = [shutil.which("unshare") or "unshare", "--mount", "--propagation", "private"]
        self._start(
            [*unshare, sys.executable, "-m", "tests.deploy.image_enter", json.dumps(spec)],
            {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)},
            log_path,
        )


#: the same list as ``processes()``: every ImageProc appended is stopped on exit
image_processes = processes
