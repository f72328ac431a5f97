"""The container image, checked without a Docker engine (none runs here).

What can be checked statically, and is what breaks images in practice: every file the
Dockerfile copies is in the build context (exists, and .dockerignore lets it through),
the runtime stage installs without the dev extra and runs as the same non-root uid the
chart expects, and hls.js comes from npm at the locked version, not from a local copy.
The image itself is built and run from its own filesystem by ``tests/deploy/test_image.py``
(slow; Podman on Debian-made bases).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

import pytest
import yaml

from tests.support.env import ROOT, require_path

DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


@dataclass
class Stage:
    image: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def _stages() -> list[Stage]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip()
        elif word == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
            stages.append(Stage(image, name))
        else:
            assert stages, f"instruction before FROM: {line}"
            stages[-1].instructions.append((word, rest))
    return stages


def _dockerignore_allows(rel: str) -> bool:
    """Docker's rule: patterns in order, the last match wins; a matched directory
    covers everything under it."""
    allowed = True
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip().rstrip("/")
        regex = (
            re.escape(pattern)
            .replace(r"\*\*/", "(?:.*/)?")
            .replace(r"\*\*", ".*")
            .replace(r"\*", "[^/]*")
            .replace(r"\?", "[^/]")
        )
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, p) for p in prefixes):
            allowed = negate
    return allowed


def _copies(stage: Stage) -> list[tuple[list[str], str, str | None]]:
    out = []
    for word, rest in stage.instructions:
        if word != "COPY":
            continue
        tokens = shlex.split(rest)
        source_stage = None
        while tokens[0].startswith("--"):
            flag = tokens.pop(0)
            if flag.startswith("--from="):
                source_stage = flag.split("=", 1)[1]
        *sources, dest = tokens
        out.append((sources, dest, source_stage))
    return out


def test_stages_and_bases() -> None:
    stages = _stages()
    assert [s.name for s in stages] == ["web", "build", "runtime"]
    assert stages[0].image.startswith("node:20")
    assert stages[1].image == stages[2].image
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", stages[2].image)


def test_every_copied_file_is_in_the_build_context() -> None:
    for stage in _stages():
        for sources, _dest, from_stage in _copies(stage):
            if from_stage:
                continue
            for source in sources:
                path = ROOT / source
                if source == "player_demo":
                    require_path(path / "index.html", "player_demo/ (the player page) is missing")
                assert path.exists(), f"COPY {source}: not in the checkout"
                assert _dockerignore_allows(source), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_local_state_out() -> None:
    for rel in (".venv/bin/python", "node_modules/hls.js/package.json", "hls/main/index.m3u8",
                "tests/deploy/test_helm.py", "test-artifacts/x.png", "mixer_ext/__pycache__/x.pyc",
                "player_demo/vendor/hls.min.js", ".git/HEAD"):  # fmt: skip
        assert not _dockerignore_allows(rel), rel
    for rel in ("mixer_ext/cli.py", "mixer_ext/roomserver/static/x.html", "pyproject.toml"):
        assert _dockerignore_allows(rel), rel


def test_runtime_dependencies_only_and_non_root_user_matching_the_chart() -> None:
    build, runtime = _stages()[1:]
    installs = [
        rest for word, rest in build.instructions if word == "RUN" and "pip install" in rest
    ]
    assert installs, "no pip install in the build stage"
    for rest in installs:
        assert "[dev]" not in rest and " -e " not in rest, rest
    runtime_runs = " ".join(rest for word, rest in runtime.instructions if word == "RUN")
    assert "pip install" not in runtime_runs and "apt-get" not in runtime_runs
    users = [rest for word, rest in runtime.instructions if word == "USER"]
    assert users, "the runtime stage never drops root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid (runAsNonRoot)"
    values = yaml.safe_load((ROOT / "helm/mixer-ext/values.yaml").read_text(encoding="utf-8"))
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsGroup"] == int(gid)
    entry = [rest for word, rest in runtime.instructions if word == "ENTRYPOINT"]
    assert json.loads(entry[-1]) == ["mixer-ext"]


def test_hls_js_comes_from_the_lockfile() -> None:
    web, _build, runtime = _stages()
    copies = [src for srcs, _d, _f in _copies(web) for src in srcs]
    # the lockfile, and the player module's sources for its <script> build
    assert set(copies) == {"package.json", "package-lock.json"} | {
        f"player_demo/{name}"
        for name in ("live-player.js", "hls-config.js", "payload.js", "source.js")
    }
    runs = " ".join(rest for word, rest in web.instructions if word == "RUN")
    assert "npm ci" in runs and "--omit=dev" in runs
    lock = json.loads((ROOT / "package-lock.json").read_text(encoding="utf-8"))
    pinned = json.loads((ROOT / "package.json").read_text(encoding="utf-8"))["dependencies"]
    assert lock["packages"]["node_modules/hls.js"]["version"] == pinned["hls.js"]
    # the UMD build (window.Hls) and the ES module build that live-player.js imports
    hls_copies = sorted((s, d) for s, d, f in _copies(runtime) if f == "web")
    env = " ".join(rest for word, rest in runtime.instructions if word == "ENV")
    player_dir = re.search(r"MIXER_PLAYER_DIR=(\S+)", env)
    assert player_dir
    vendor = f"{player_dir.group(1)}/vendor"
    assert sorted((sources, dest) for sources, dest in hls_copies) == sorted(
        [
            *(
                ([f"/web/node_modules/hls.js/dist/{n}"], f"{vendor}/{n}")
                for n in ("hls.min.js", "hls.min.mjs")
            ),
            (
                ["/web/player_demo/vendor/twilio-live-player.min.js"],
                f"{vendor}/twilio-live-player.min.js",
            ),
        ]
    ), hls_copies
    # the image builds the <script> file with the same command as `make setup`
    assert "npm run --silent build:player" in runs
    assert "build:player" in json.loads((ROOT / "package.json").read_text())["scripts"]
    assert "npm run --silent build:player" in (ROOT / "Makefile").read_text()
    for name in ("hls.min.js", "hls.min.mjs"):
        local = require_path(ROOT / "node_modules/hls.js/dist" / name, "run `make setup` first")
        assert local.stat().st_size > 100_000  # the same path npm ci gives, really there


def test_paths_the_chart_relies_on() -> None:
    runtime = _stages()[-1]
    env = " ".join(rest for word, rest in runtime.instructions if word == "ENV")
    workdir = [rest for word, rest in runtime.instructions if word == "WORKDIR"][-1]
    assert workdir == "/data"  # the chart mounts its data volume here
    assert "MIXER_HLS_DIR=/data/hls" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # nothing writes to the read-only root


@pytest.mark.parametrize("rel", ["Dockerfile", ".dockerignore"])
def test_files_exist(rel: str) -> None:
    assert (ROOT / rel).is_file()
