"""The Kubernetes launcher: its Job and Secret pass ``kubernetes-validate --strict``, and
its control flow runs against a local fake of the Kubernetes API.

The fake (``_FakeKube``) is a stand-in for the API server in a unit test of the code
around the official ``kubernetes`` client: the real client sends real HTTP to it; the
fake keeps Jobs and Secrets in dicts and answers as the API server does for the calls
used (create, read, delete, list by label). Nothing here ran on a real cluster.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

kubernetes = pytest.importorskip("kubernetes")
import kubernetes_validate  # noqa: E402

from mixer_ext.api.kube import (  # noqa: E402
    SID_LABEL,
    JobTemplate,
    KubernetesLauncher,
    build_job,
    build_secret,
    job_name,
)
from mixer_ext.api.resources import new_sid  # noqa: E402

TEMPLATE = JobTemplate(namespace="live", image="mixer-ext:0.1.0", room_secret_name="mixer-room")
ENV = {
    "MIXER_ROOM_URL": "ws://room:7880",
    "MIXER_STATUS_CALLBACK_URL": "http://api/x?key=k3y-s3cret",
}


@pytest.mark.parametrize("version", ["1.25.0", kubernetes_validate.latest_version()])
def test_manifests_validate_strict(version: str) -> None:
    sid = new_sid("ZX")
    job = build_job(TEMPLATE, sid, ENV)
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


class _FakeKube(BaseHTTPRequestHandler):
    jobs: dict[str, dict[str, Any]]
    secrets: dict[str, dict[str, Any]]

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self, name: str) -> None:
        self._send(
            404,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": "NotFound",
                "code": 404,
                "message": f"{name} not found",
            },
        )

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body["metadata"]["uid"] = str(uuid.uuid4())
        store = self.jobs if "/jobs" in self.path else self.secrets
        store[body["metadata"]["name"]] = body
        self._send(201, body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path.endswith("/jobs"):
            selector = parse_qs(url.query).get("labelSelector", [""])[0]
            key, _, value = selector.partition("=")
            items = [j for j in self.jobs.values() if j["metadata"]["labels"].get(key) == value]
            self._send(
                200, {"kind": "JobList", "apiVersion": "batch/v1", "metadata": {}, "items": items}
            )
            return
        name = url.path.rsplit("/", 1)[1]
        if name not in self.jobs:
            self._not_found(name)
            return
        self._send(200, self.jobs[name])

    def do_DELETE(self) -> None:
        name = urlsplit(self.path).path.rsplit("/", 1)[1]
        if self.jobs.pop(name, None) is None:
            self._not_found(name)
            return
        self.secrets.pop(name, None)  # owner reference: garbage-collected with the Job
        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


@pytest.fixture
def fake_kube() -> Iterator[tuple[KubernetesLauncher, type[_FakeKube]]]:
    handler = type("Fake", (_FakeKube,), {"jobs": {}, "secrets": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg = kubernetes.client.Configuration()
    cfg.host = f"http://127.0.0.1:{server.server_address[1]}"
    api = kubernetes.client.ApiClient(cfg)
    launcher = KubernetesLauncher(
        TEMPLATE, kubernetes.client.BatchV1Api(api), kubernetes.client.CoreV1Api(api)
    )
    try:
        yield launcher, handler
    finally:
        server.shutdown()
        api.close()


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
