"""The container image itself: built from the Dockerfile, run from its own filesystem.

``.ci/image`` builds the Dockerfile with Podman on Debian-made base images (the registry's
python/node slim images cannot be pulled where CI runs); the module's fixture builds it
(Podman's layer cache makes a rebuild after a code change take only the pip layer) and
mounts its root filesystem.  Every command below runs the image's ENTRYPOINT as the
image's USER, in its WORKDIR, with its ENV, on its read-only root with /tmp and /data
mounted as the chart mounts them: all read from the image's config, never written here.
Under ``CI=true`` a missing podman/debootstrap (or no root) fails; locally it skips.
"""

from __future__ import annotations

import asyncio
import json
import stat
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixer_ext.testing.spectrum import tone_levels
from tests.deploy.image_util import BUILD_TIMEOUT, Image, ImageProc, built_image, image_processes
from tests.support.env import ROOT, free_port
from tests.support.hls_reader import read_hls

pytestmark = [pytest.mark.slow, pytest.mark.timeout(BUILD_TIMEOUT + 300)]

SECRET = "image-secret-not-for-production-0123456789"
TONES = {"alice": 440.0, "bob": 660.0}
MAX_DURATION = 8


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    logs = ROOT / "test-artifacts"
    logs.mkdir(exist_ok=True)
    with built_image(logs) as img:
        yield img


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=2) as resp:
        return int(resp.status), bytes(resp.read())


async def _wait_http(url: str, proc: ImageProc, within: float = 60) -> bytes:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise AssertionError(f"exited {proc.popen.returncode}:\n{proc.log()[-3000:]}")
        try:
            status, body = await asyncio.to_thread(_get, url)
            if status == 200:
                return body
        except OSError:
            pass
        await asyncio.sleep(0.3)
    raise AssertionError(f"{url} never answered 200:\n{proc.log()[-3000:]}")


# --------------------------------------------------------------------------- end to end
async def test_the_image_mixes_a_room_into_hls(image: Image, tmp_path: Path) -> None:
    """Room server, two talkers and the worker, all from the image: the HLS written to
    the data volume holds both tones and their levels, and the worker ends by itself at
    the maximum duration with exit 0."""
    data = tmp_path / "data"
    room_port = free_port()
    env = {
        "MIXER_ROOM_SECRET": SECRET,
        "MIXER_ROOM_URL": f"ws://127.0.0.1:{room_port}",
        "MIXER_LOG_FORMAT": "json",
    }
    context = {
        "room": {"name": "RM-image"},
        "outputs": ["hls:image"],
        "maxParticipantDuration": MAX_DURATION,
    }
    with image_processes() as procs:
        server = ImageProc(
            image,
            ["room-server", "--host", "127.0.0.1", "--port", str(room_port)],
            tmp_path / "server.log",
            env,
        )
        procs.append(server)
        health = await _wait_http(f"http://127.0.0.1:{room_port}/healthz", server)
        assert health, "the room server's /healthz is empty"
        talker = ["talker", "--room", "RM-image", "--duration", "60"]
        for name, tone in TONES.items():
            procs.append(
                ImageProc(
                    image,
                    [*talker, "--identity", name, "--tone", str(tone)],
                    tmp_path / f"talker-{name}.log",
                    env,
                )
            )
        http_port = free_port()
        worker = ImageProc(
            image,
            ["run", "--context", json.dumps(context)],
            tmp_path / "worker.log",
            {**env, "MIXER_HLS_PLAYLIST_TYPE": "event", "MIXER_HTTP_PORT": str(http_port)},
            binds={"/data": data},
        )
        procs.append(worker)
        await _wait_http(f"http://127.0.0.1:{http_port}/readyz", worker, within=90)
        ready = time.monotonic()  # in its room: the maximum duration runs from the join
        rc = await asyncio.to_thread(worker.wait, MAX_DURATION + 60)
        in_room = time.monotonic() - ready
        wlog = worker.log()
        assert rc == 0, wlog[-3000:]
        # it leaves at the maximum duration: not before, and not long after (the HLS is
        # finalized within MIXER_SHUTDOWN_BUDGET, 20 s); /readyz is polled every 0.3 s
        assert MAX_DURATION - 2 <= in_room < MAX_DURATION + 20, in_room
        events = [json.loads(ln) for ln in wlog.splitlines() if ln.startswith("{")]
        assert any(e.get("event") == "joined" for e in events), wlog[-3000:]
        ends = [(e["state"], e.get("reason")) for e in events if e.get("event") == "status"]
        assert ends[-1] == ("ended", "max-participant-duration"), ends
        assert SECRET not in wlog

    # MIXER_HLS_DIR as the image sets it, under the data volume
    hls_dir = Path(image.env["MIXER_HLS_DIR"])
    assert hls_dir.is_relative_to("/data"), image.env["MIXER_HLS_DIR"]
    hls = read_hls(data / hls_dir.relative_to("/data") / "image")
    assert hls.ended, hls.playlist
    assert hls.codec == "aac"
    assert hls.duration > MAX_DURATION - 4, hls.duration
    levels = tone_levels(hls.audio, hls.sample_rate, [*TONES.values(), 550.0])
    noise = levels.pop(550.0)
    for f, a in levels.items():
        assert a > 0.02 and a > 20 * noise, (f, levels, noise)
    assert len(hls.payloads) >= 4, hls.payloads
    for name in TONES:
        heard = [p.levels[name] for _, p in hls.payloads if name in p.levels]
        assert heard and max(heard) > 1000, (name, heard)
    # the worker wrote its files as the image's user, on the volume only
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in data.rglob("*")}
    assert owners == {(image.uid, image.gid)}, owners


async def test_the_api_starts_from_the_image(image: Image, tmp_path: Path) -> None:
    port = free_port()
    with image_processes() as procs:
        api = ImageProc(
            image,
            ["api", "--host", "127.0.0.1", "--port", str(port)],
            tmp_path / "api.log",
            {"MIXER_AUTH_TOKEN": "image-api-token-0123456789", "MIXER_API_DATA_DIR": "/data/api"},
            binds={"/data": tmp_path / "data"},
        )
        procs.append(api)
        await _wait_http(f"http://127.0.0.1:{port}/healthz", api)
    assert (tmp_path / "data/api/api.db").is_file()


# --------------------------------------------------------------------------- what ships
def test_the_image_runs_as_a_numeric_non_root_user(image: Image) -> None:
    """The chart sets ``runAsNonRoot: true``; the kubelet then refuses to start the
    container unless its user is numeric and not 0, which it can verify only from a
    numeric USER in the image.  Root is refused there, not by the image itself."""
    uid, _, gid = image.user.partition(":")
    assert uid.isdigit() and gid.isdigit(), f"USER {image.user!r} is not numeric uid:gid"
    assert image.uid != 0 and image.gid != 0
    # the code is root's and read-only to the user; only the working directory is theirs
    venv = image.root / Path(image.env["PATH"].split(":")[0]).parent.relative_to("/")
    for path in [venv, *venv.rglob("*")]:
        if path.is_symlink():  # a link's own mode is 777 and means nothing
            continue
        st = path.lstat()
        assert st.st_uid == 0 and not st.st_mode & stat.S_IWOTH, path
    work = (image.root / image.workdir.lstrip("/")).stat()
    assert (work.st_uid, work.st_gid) == (image.uid, image.gid)


def _names(root: Path) -> set[str]:
    return {p.name for p in root.rglob("*") if not p.is_symlink() or p.exists()}


def test_the_image_ships_no_build_or_test_tools(image: Image) -> None:
    root = image.root
    bins = {p.name for d in ("usr/bin", "usr/local/bin", "bin") for p in (root / d).glob("*")}
    for tool in ("gcc", "cc", "c++", "g++", "clang", "ld", "make", "npm", "node", "npx"):
        assert tool not in bins, f"{tool} ships in the image"
    venv = root / "opt/mixer-ext"
    site = next(venv.glob("lib/python3*/site-packages"))
    packages = {p.name.lower() for p in site.iterdir()}
    for dev in ("pytest", "ruff", "mypy", "hypothesis", "twilio", "kubernetes_validate"):
        assert dev not in packages, f"the dev extra's {dev} ships in the image"
    assert "mixer_ext" in packages and "kubernetes" in packages and "av" in packages
    # a plain install, not an editable one pointing at a build directory
    (dist,) = site.glob("mixer_ext-*.dist-info")
    assert (
        not (dist / "direct_url.json").exists()
        or '"editable": true' not in (dist / "direct_url.json").read_text()
    )
    assert not (site / "mixer_ext" / "tests").exists()
    assert not list((site / "mixer_ext").rglob("test_*.py"))
    assert not list((site / "mixer_ext").rglob("conftest.py"))
    for gone in ("src", "web", "root/.cache/pip", "root/.npm", "data/.cache"):
        assert not (root / gone).exists(), f"/{gone} ships in the image"
    assert not list(root.glob("**/node_modules")), "a node_modules directory ships"
    # what the player page needs does ship
    player = Path(image.env["MIXER_PLAYER_DIR"])
    hls_js = root / player.relative_to("/") / "vendor/hls.min.js"
    assert hls_js.stat().st_size > 100_000
    assert (root / player.relative_to("/") / "index.html").is_file()
    # the Live Player SDK-compatible <script> build (Twilio.Live.Player), built in the image
    script = (root / player.relative_to("/") / "vendor/twilio-live-player.min.js").read_text()
    assert len(script) > 100_000 and "Twilio" in script


def test_the_images_size_is_the_documented_one(image: Image) -> None:
    """Every page holding the image's section (README.md, docs/) states its size."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    sections = {
        page.relative_to(ROOT): text.split("<!-- section: image -->")[1].split(
            "<!-- /section: image -->"
        )[0]
        for page in pages
        if "<!-- section: image -->" in (text := page.read_text())
    }
    assert sections, "no page holds the image's section"
    mb = image.size / 1e6
    for page, section in sections.items():
        documented = [float(w.split()[0]) for w in section.split("image is about ")[1:]]
        assert documented, f"{page}: the image's section states no size"
        assert abs(mb - documented[0]) <= 0.15 * documented[0], (page, mb, documented)


# --------------------------------------------------------------------------- chart and Job
def _pods(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc.get("kind") in ("Deployment", "Job"):
        return dict(doc["spec"]["template"]["spec"])
    return None


def _in_image_path(image: Image, program: str) -> bool:
    return any(
        (image.root / d.lstrip("/") / program).exists() for d in image.env["PATH"].split(":")
    )


def _check_pod(image: Image, where: str, pod: dict[str, Any]) -> int:
    """The pod runs as the image's uid:gid; its containers run the image's ENTRYPOINT in
    its WORKDIR.  An init container may run another program of the image (the chart's
    context assembler runs the venv's ``python``): that program must be on the image's
    PATH.  Returns the number of containers running the entrypoint."""
    sc = pod["securityContext"]
    assert sc["runAsNonRoot"] is True, where
    assert (sc["runAsUser"], sc["runAsGroup"]) == (image.uid, image.gid), where
    checked = 0
    init = [(c, True) for c in pod.get("initContainers", [])]
    for c, is_init in [*init, *[(c, False) for c in pod["containers"]]]:
        name = f"{where} {c['name']}"
        if c["image"].split("/")[-1].split(":")[0] != "mixer-ext":
            continue
        assert "runAsUser" not in c.get("securityContext", {}), name
        assert c.get("workingDir", image.workdir) == image.workdir, name
        if is_init and c["command"] != image.entrypoint:
            assert _in_image_path(image, c["command"][0]), (name, c["command"])
            continue
        assert c["command"] == image.entrypoint, (name, c["command"])
        checked += 1
    return checked


def test_chart_and_api_job_use_the_images_entrypoint_and_user(image: Image) -> None:
    from mixer_ext.api.kube import JobTemplate, RoomTokenRequest, build_job

    checked = 0
    for rendering in sorted((ROOT / "helm/rendered").glob("*.yaml")):
        for doc in yaml.safe_load_all(rendering.read_text()):
            pod = _pods(doc or {})
            if pod is not None:
                checked += _check_pod(image, f"{rendering.name} {doc['kind']}", pod)
    assert checked >= 5, "the renderings hold fewer mixer-ext containers than expected"
    template = JobTemplate(namespace="live", image="mixer-ext:0.1.0", room_secret_name="room")
    job = build_job(template, "ZX" + "b" * 32, {}, RoomTokenRequest("r", "audio-mixer-v1", 900))
    assert _check_pod(image, "kube.py Job", job["spec"]["template"]["spec"]) == 2
