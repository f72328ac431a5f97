"""The Kubernetes launcher: its Job and Secret pass ``kubernetes-validate --strict``, and
its control flow runs against a local fake of the Kubernetes API.

The fake (``mixer_ext.testing.fakekube.FakeKube``, shared with the composition Jobs'
test) is a stand-in for the API server in a unit test of the code around the official
``kubernetes`` client: the real client sends real HTTP to it; the fake keeps Jobs and
Secrets in dicts and answers as the API server does for the calls used (create, read,
delete, list by label). Nothing here ran on a real cluster.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from mixer_ext.testing.wait import until, until_sync

kubernetes = pytest.importorskip("kubernetes")
import kubernetes_validate  # noqa: E402

from mixer_ext.api.client import basic_authorization  # noqa: E402
from mixer_ext.api.kube import (  # noqa: E402
    SID_LABEL,
    JobTemplate,
    KubernetesLauncher,
    RoomTokenRequest,
    build_job,
    build_secret,
    job_name,
)
from mixer_ext.api.resources import MAX_MAX_DURATION, new_sid  # noqa: E402
from mixer_ext.testing.fakekube import FakeKube  # noqa: E402

TEMPLATE = JobTemplate(namespace="live", image="mixer-ext:0.1.0", room_secret_name="mixer-room")
ENV = {
    "MIXER_ROOM_URL": "ws://room:7880",
    "MIXER_STATUS_CALLBACK_URL": "http://api/x?key=k3y-s3cret",
}


@pytest.mark.parametrize("version", ["1.25.0", kubernetes_validate.latest_version()])
def test_manifests_validate_strict(version: str) -> None:
    sid = new_sid("ZX")
    job = build_job(TEMPLATE, sid, ENV, RoomTokenRequest("r", "audio-mixer-v1", 15000))
    secret = build_secret(
        TEMPLATE, sid, '{"room":{"name":"r"}}', ENV["MIXER_STATUS_CALLBACK_URL"], "u1"
    )
    for doc in (job, secret):
        kubernetes_validate.validate(doc, version, strict=True)
    spec = job["spec"]["template"]["spec"]
    assert job["spec"]["backoffLimit"] == 0 and spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert job["metadata"]["labels"][SID_LABEL] == sid
    # no secret in the Job spec: the status URL (with its key) and the context are in the Secret
    assert "k3y-s3cret" not in json.dumps(job) and '"room"' not in json.dumps(job)
    # a Job whose room token is the Secret's room-token key, or Janus: no init container
    for template, env in (
        (dataclasses.replace(TEMPLATE, room_token_source="secret"), ENV),
        (TEMPLATE, ENV | {"MIXER_ROOM_BACKEND": "janus"}),
    ):
        other = build_job(template, sid, env)
        kubernetes_validate.validate(other, version, strict=True)
        pod = other["spec"]["template"]["spec"]
        assert "initContainers" not in pod
        names = {e["name"] for e in pod["containers"][0]["env"]}
        assert "MIXER_ROOM_SECRET" not in names and "MIXER_ROOM_TOKEN_FILE" not in names
        assert ("MIXER_ROOM_TOKEN" in names) == (template.room_token_source == "secret")
    with pytest.raises(ValueError, match="room_token is required"):
        build_job(TEMPLATE, sid, ENV)


@pytest.fixture
def fake_kube() -> Iterator[tuple[KubernetesLauncher, FakeKube]]:
    fake = FakeKube()
    api = fake.client()
    launcher = KubernetesLauncher(
        TEMPLATE, kubernetes.client.BatchV1Api(api), kubernetes.client.CoreV1Api(api)
    )
    try:
        yield launcher, fake
    finally:
        fake.close()
        api.close()


@pytest.mark.slow
def test_control_flow_against_a_fake_api(fake_kube: Any) -> None:
    launcher, fake = fake_kube
    sid = new_sid("ZX")
    handle = launcher.start(sid, '{"room":{"name":"r"},"outputs":["hls:a"]}', ENV)
    name = job_name(sid)
    assert handle["job"] == name and handle["uid"] == fake.jobs[name]["metadata"]["uid"]
    secret = fake.secrets[name]
    assert secret["metadata"]["ownerReferences"][0]["uid"] == handle["uid"]
    assert secret["stringData"]["status-callback-url"] == ENV["MIXER_STATUS_CALLBACK_URL"]
    assert launcher.alive(handle) and launcher.adopt(handle)
    assert launcher.reconcile() == {sid: handle}
    # a Job of the same name but another uid is not ours
    assert not launcher.adopt({**handle, "uid": "other"})
    # the Job finished by itself
    fake.jobs[name]["status"] = {"succeeded": 1}
    assert not launcher.alive(handle)
    fake.jobs[name]["status"] = {}
    launcher.stop(handle)
    assert name not in fake.jobs and name not in fake.secrets
    assert not launcher.alive(handle)
    launcher.stop(handle)  # stopping twice is harmless (404)
    assert launcher.reconcile() == {}


@pytest.mark.slow
async def test_api_with_the_kubernetes_launcher(
    fake_kube: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mixer-ext api`` with MIXER_API_LAUNCHER=kubernetes against the local fake of the
    Kubernetes API (a unit test of the code around the client; nothing ran on a cluster):
    creating a processor creates its Job and Secret, the stream is proxied from the pod's
    HTTP endpoint behind the grant, a restarted API re-adopts the Job from the cluster and
    fails a processor whose Job vanished, and ending deletes the Job."""

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from mixer_ext.api.config import ApiSettings
    from mixer_ext.api.kube import KubeJobs
    from mixer_ext.api.plane import ControlPlane
    from mixer_ext.api.routes import build_app

    launcher, fake = fake_kube
    fake.pod_ip = "127.0.0.1"
    monkeypatch.setenv("MIXER_ROOM_URL", "ws://room.live.svc:7880")
    monkeypatch.setenv("MIXER_ROOM_SECRET", "room-secret-never-in-a-job-" * 2)

    # the pod's own HTTP endpoint (what `mixer-ext run` serves on port 8080 in the pod)
    async def pod_hls(request: web.Request) -> web.Response:
        if request.match_info["file"] == "index.m3u8":
            return web.Response(
                text="#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg-000000.ts\n",
                content_type="application/vnd.apple.mpegurl",
            )
        return web.Response(body=b"\x47" * 188, content_type="video/mp2t")

    pod_app = web.Application()
    pod_app.router.add_get("/hls/{name}/{file}", pod_hls)
    pod = TestServer(pod_app)
    await pod.start_server()

    cfg = ApiSettings(
        account_sid="AC" + "5" * 32,
        auth_token="kube-auth-token",
        api_data_dir=tmp_path,
        api_launcher="kubernetes",
        api_kube_image="mixer-ext:0.1.0",
        api_internal_url="http://mixer-ext-api.live.svc:8080",
    )
    auth = {"Authorization": basic_authorization("AC" + "5" * 32, "kube-auth-token")}

    async def api() -> tuple[TestClient[Any, Any], ControlPlane, KubeJobs]:
        jobs = KubeJobs(launcher, tmp_path)
        jobs.min_interval, jobs.worker_port = 0.0, pod.port
        plane = ControlPlane(cfg, "127.0.0.1", 0, jobs)
        client = TestClient(TestServer(build_app(plane)))
        await client.start_server()
        await plane.start()
        return client, plane, jobs

    client, plane, _ = await api()
    try:
        vj = (await (await client.post("/v1/PlayerStreamers", headers=auth)).json())["sid"]
        ctx = json.dumps({"room": {"name": "r"}, "outputs": [vj]})
        form = {"Extension": "audio-mixer-v1", "ExtensionContext": ctx}
        resp = await client.post("/v1/MediaProcessors", data=form, headers=auth)
        assert resp.status == 201, await resp.text()
        zx = (await resp.json())["sid"]
        name = job_name(zx)
        await until(lambda: name in fake.jobs, 5, "the Job is created")
        job_env = fake.jobs[name]["spec"]["template"]["spec"]["containers"][0]["env"]
        env = {e["name"]: e for e in job_env}
        assert env["MIXER_ROOM_URL"]["value"] == "ws://room.live.svc:7880"
        # least privilege: the worker reads a minted token; the init container alone
        # gets the signing secret, by Secret reference
        assert "MIXER_ROOM_SECRET" not in env and "MIXER_ROOM_TOKEN" not in env
        assert env["MIXER_ROOM_TOKEN_FILE"]["value"] == "/run/mixer-token/token"
        (init,) = fake.jobs[name]["spec"]["template"]["spec"]["initContainers"]
        assert init["args"] == [
            "token", "--role", "mixer", "--room", "r", "--identity", "audio-mixer-v1",
            "--ttl", str(MAX_MAX_DURATION + 600), "--output", "/run/mixer-token/token",
        ]  # fmt: skip
        assert "valueFrom" in {e["name"]: e for e in init["env"]}["MIXER_ROOM_SECRET"]
        assert "room-secret-never" not in json.dumps(fake.jobs[name])
        status_url = fake.secrets[name]["stringData"]["status-callback-url"]
        assert status_url.startswith(f"http://mixer-ext-api.live.svc:8080/internal/workers/{zx}/")
        assert fake.secrets[name]["stringData"]["context.json"] == ctx

        # listeners: the grant's URL, proxied from the pod (once a listing has seen it)
        await until(lambda: plane.stream_base(vj) is not None, 5, "the pod is listed")
        grant = await client.post(f"/v1/PlayerStreamers/{vj}/PlaybackGrant", headers=auth)
        url = urlsplit((await grant.json())["grant"]["playbackUrl"])
        master = await (await client.get(f"{url.path}?{url.query}")).text()
        media = master.strip().splitlines()[-1]
        playlist = await client.get(f"/hls/{vj}/{media}")
        text = await playlist.text()
        assert playlist.status == 200 and "seg-000000.ts?session=" in text, text
        seg = text.strip().splitlines()[-1]
        body = await (await client.get(f"/hls/{vj}/{seg}")).read()
        assert body == b"\x47" * 188
        assert (await client.get(f"/hls/{vj}/seg-000000.ts")).status == 403
    finally:
        await client.close()
        await plane.stop()

    client, plane, _ = await api()
    try:
        got = await (await client.get(f"/v1/MediaProcessors/{zx}", headers=auth)).json()
        assert got["status"] == "started", got  # re-adopted from the cluster's Job list
        resp = await client.post(
            f"/v1/MediaProcessors/{zx}", data={"Status": "ended"}, headers=auth
        )
        assert (await resp.json())["ended_reason"] == "ended-via-api"
        await until(lambda: name not in fake.jobs, 5, "the Job is deleted")
        assert name not in fake.secrets
        # another processor, whose Job then vanishes while the API is down
        vj2 = (await (await client.post("/v1/PlayerStreamers", headers=auth)).json())["sid"]
        form["ExtensionContext"] = json.dumps({"room": {"name": "r"}, "outputs": [vj2]})
        zx2 = (await (await client.post("/v1/MediaProcessors", data=form, headers=auth)).json())[
            "sid"
        ]
        await until(lambda: job_name(zx2) in fake.jobs, 5, "the second Job is created")
    finally:
        await client.close()
        await plane.stop()
    del fake.jobs[job_name(zx2)]
    client, plane, _ = await api()
    try:
        got = await (await client.get(f"/v1/MediaProcessors/{zx2}", headers=auth)).json()
        assert got["status"] == "failed", got  # its Job is gone from the cluster
    finally:
        await client.close()
        await plane.stop()
        await pod.close()
    # the chart's Role grants exactly what this API asked of the cluster
    assert fake.calls == _granted_by_the_chart()


def _granted_by_the_chart() -> set[tuple[str, str, str]]:
    """(group, resource, verb) that the chart's Role for the API grants (the committed
    rendering of helm/examples/api.yaml, which tests/deploy/test_helm.py keeps up to date)."""
    import yaml

    rendering = Path(__file__).resolve().parents[2] / "helm" / "rendered" / "api.yaml"
    (role,) = [d for d in yaml.safe_load_all(rendering.read_text()) if d and d["kind"] == "Role"]
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_jobs_never_inherit_a_credential_as_plain_env() -> None:
    """The API's MIXER_* settings reach its Jobs as literal env in the Job spec: anything
    named like a credential stays out, including ones this list was not written for
    (MIXER_ROOM_ADMIN_TOKEN came later, issue 16)."""
    from mixer_ext.api.kube import job_env

    environ = {
        "MIXER_ROOM_URL": "ws://room:7880",
        "MIXER_HLS_LIST_SIZE": "6",
        "MIXER_ROOM_ADMIN_TOKEN": "admin-t0ken",
        "MIXER_ROOM_SECRET": "s",
        "MIXER_SOME_FUTURE_SECRET": "s2",
        "MIXER_UPLOAD_PASSWORD": "p",
        "MIXER_API_KEYS": "SK:k",
        "MIXER_ACCOUNT_SID": "AC" + "0" * 32,
        "MIXER_API_PUBLIC_URL": "https://x",
        "PATH": "/bin",
    }
    assert job_env(environ) == {"MIXER_ROOM_URL": "ws://room:7880", "MIXER_HLS_LIST_SIZE": "6"}


def _rendered_api_settings() -> dict[str, str]:
    """The API's ConfigMap in the committed rendering of helm/examples/api.yaml."""
    import yaml

    rendering = Path(__file__).resolve().parents[2] / "helm" / "rendered" / "api.yaml"
    docs = [d for d in yaml.safe_load_all(rendering.read_text()) if d]
    (cm,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-api-env")
    ]
    return dict(cm["data"])


@pytest.mark.slow
def test_mixer_ext_api_runs_with_the_charts_settings(fake_kube: Any, tmp_path: Path) -> None:
    """The real ``mixer-ext api`` process, with the environment the chart gives its pod
    (the rendered ConfigMap; the token as the Secret would give it), against the local
    fake of the Kubernetes API through a kubeconfig (the launcher's fallback outside a
    cluster; a unit test of the code around the client, nothing ran on a cluster):
    /healthz answers without credentials (the chart's probes), a MediaProcessor becomes
    a Job with the chart's image, resources, grace period and room Secret, and ending it
    deletes the Job; SIGTERM stops the API with exit 0."""
    import base64
    import os
    import signal
    import subprocess
    import urllib.error
    import urllib.parse
    import urllib.request

    from mixer_ext.testing.net import free_port, mixer_ext_cmd, wait_for_port

    _, fake = fake_kube
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
                "users": [{"name": "api", "user": {"token": "fake-sa-token"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "api"}}],
                "current-context": "fake",
            }
        )
    )
    port = free_port()
    settings = _rendered_api_settings()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIXER_", "KUBERNETES_"))}
    env |= settings | {
        "MIXER_AUTH_TOKEN": "chart-auth-token",
        "MIXER_API_DATA_DIR": str(tmp_path / "data"),  # the PVC's mount, /data, in the pod
        "MIXER_API_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "KUBECONFIG": str(kubeconfig),
    }
    auth = "Basic " + base64.b64encode(f"AC{'0' * 32}:chart-auth-token".encode()).decode()

    def call(method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, Any]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", data=data, method=method,
            headers={"Authorization": auth} if path.startswith("/v1/") else {},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                body = resp.read()
                return resp.status, json.loads(body) if path.startswith("/v1/") else body
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    api = subprocess.Popen(
        [*mixer_ext_cmd(), "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=30)
        assert call("GET", "/healthz") == (200, b"ok\n")
        status, vj = call("POST", "/v1/PlayerStreamers", {})
        assert status == 201, vj
        ctx = json.dumps({"room": {"name": "RM1"}, "outputs": [vj["sid"]]})
        status, zx = call(
            "POST", "/v1/MediaProcessors",
            {"Extension": "audio-mixer-v1", "ExtensionContext": ctx},
        )  # fmt: skip
        assert status == 201, zx
        name = job_name(zx["sid"])
        until_sync(lambda: name in fake.jobs, 20, "the Job is created")
        job = fake.jobs[name]
        assert job["metadata"]["namespace"] == settings["MIXER_API_KUBE_NAMESPACE"]
        pod = job["spec"]["template"]["spec"]
        (mixer,) = pod["containers"]
        assert mixer["image"] == settings["MIXER_API_KUBE_IMAGE"]
        assert mixer["resources"] == json.loads(settings["MIXER_API_KUBE_RESOURCES"])
        assert pod["terminationGracePeriodSeconds"] == int(settings["MIXER_API_KUBE_GRACE_SECONDS"])
        env_of_job = {e["name"]: e for e in mixer["env"]}
        assert env_of_job["MIXER_ROOM_URL"]["value"] == settings["MIXER_ROOM_URL"]
        assert "MIXER_ROOM_SECRET" not in env_of_job
        (init,) = pod["initContainers"]
        room = {e["name"]: e for e in init["env"]}["MIXER_ROOM_SECRET"]["valueFrom"]
        assert room["secretKeyRef"] == {
            "name": settings["MIXER_API_KUBE_ROOM_SECRET"],
            "key": "room-secret",
        }
        assert init["args"][init["args"].index("--room") + 1] == "RM1"
        assert "chart-auth-token" not in json.dumps(job)
        until_sync(lambda: name in fake.secrets, 20, "the Secret is created")  # after the Job
        status_url = fake.secrets[name]["stringData"]["status-callback-url"]
        assert status_url.startswith(settings["MIXER_API_INTERNAL_URL"] + "/internal/workers/")
        status, ended = call("POST", f"/v1/MediaProcessors/{zx['sid']}", {"Status": "ended"})
        assert status == 200 and ended["ended_reason"] == "ended-via-api", ended
        until_sync(lambda: name not in fake.jobs, 20, "the Job is deleted")
        api.send_signal(signal.SIGTERM)
        assert api.wait(timeout=20) == 0
    finally:
        if api.poll() is None:
            api.kill()
            api.wait()
        output = api.stdout.read().decode(errors="replace") if api.stdout else ""
    assert "chart-auth-token" not in output  # never logged
