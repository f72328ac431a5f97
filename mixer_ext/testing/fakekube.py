"""A local stand-in for the Kubernetes API server, for unit tests of the code around the
official ``kubernetes`` client (which sends it real HTTP).

``FakeKube`` keeps Jobs and Secrets in dicts and answers as the API server does for the
calls the project makes: create (409 ``AlreadyExists`` for a name taken), get, delete
(a Job's owned Secret goes with it, as the garbage collector does), list by label, list
pods (one per Job, at ``pod_ip``).  It records each request as the (API group, resource,
RBAC verb) the API server would authorize, so a test compares them with a chart's Role.

``LocalKubelet`` plays the Job controller and the kubelet for a Job whose container runs
``mixer-ext``: it runs the container's command and args as a local process with the
container's literal env (the volumes' mount paths must exist locally: a test mounts its
own directory at the same path), and sets the Job's status from the exit code
(``succeeded``, or ``failed`` with a ``Failed`` condition, as ``backoffLimit: 0`` does).
Deleting the Job kills the process.  Nothing here is a cluster: no scheduling, images,
security contexts, volumes or quotas are enforced.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mixer_ext.testing.net import ROOT, mixer_ext_cmd


class FakeKube:
    """The fake API server on 127.0.0.1 (``url``); ``client()`` is a real ``ApiClient``."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
        #: (API group, resource, RBAC verb) of every request
        self.calls: set[tuple[str, str, str]] = set()
        #: the IP of every Job's pod (as the Job controller and the kubelet would report it)
        self.pod_ip = "10.0.0.1"
        #: called (in the server's thread) with each Job created
        self.on_job_created: Callable[[dict[str, Any]], None] | None = None
        #: called with the name of each Job deleted
        self.on_job_deleted: Callable[[str], None] | None = None
        self.lock = threading.Lock()
        fake = self

        class Handler(_Handler):
            kube = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def client(self) -> Any:
        import kubernetes

        cfg = kubernetes.client.Configuration()
        cfg.host = self.url
        return kubernetes.client.ApiClient(cfg)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    kube: FakeKube

    def log_message(self, *args: Any) -> None:
        pass

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok:
            url = urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            group = parts[1] if parts[0] == "apis" else ""
            rest = parts[parts.index("namespaces") + 2 :]
            named = len(rest) > 1
            verb = {"POST": "create", "DELETE": "delete", "PUT": "update", "PATCH": "patch"}.get(
                self.command, "get" if named else "list"
            )
            if "watch=true" in url.query:
                verb = "watch"
            self.kube.calls.add((group, rest[0], verb))
        return ok

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str, message: str) -> None:
        self._send(
            code,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": reason,
                "code": code,
                "message": message,
            },
        )

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        name = body["metadata"]["name"]
        is_job = "/jobs" in self.path
        store = self.kube.jobs if is_job else self.kube.secrets
        with self.kube.lock:
            if name in store:
                self._status(409, "AlreadyExists", f'"{name}" already exists')
                return
            body["metadata"]["uid"] = str(uuid.uuid4())
            store[name] = body
        self._send(201, body)
        if is_job and self.kube.on_job_created is not None:
            self.kube.on_job_created(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path.endswith("/pods"):
            self._send(200, self._pods())
            return
        if url.path.endswith("/jobs"):
            selector = parse_qs(url.query).get("labelSelector", [""])[0]
            key, _, value = selector.partition("=")
            with self.kube.lock:
                items = [
                    j for j in self.kube.jobs.values() if j["metadata"]["labels"].get(key) == value
                ]
            self._send(
                200, {"kind": "JobList", "apiVersion": "batch/v1", "metadata": {}, "items": items}
            )
            return
        name = url.path.rsplit("/", 1)[1]
        with self.kube.lock:
            job = self.kube.jobs.get(name)
            body = json.loads(json.dumps(job)) if job is not None else None
        if body is None:
            self._status(404, "NotFound", f"{name} not found")
            return
        self._send(200, body)

    def do_DELETE(self) -> None:
        name = urlsplit(self.path).path.rsplit("/", 1)[1]
        with self.kube.lock:
            gone = self.kube.jobs.pop(name, None)
            if gone is not None:
                self.kube.secrets.pop(name, None)  # owner reference: collected with the Job
        if gone is None:
            self._status(404, "NotFound", f"{name} not found")
            return
        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
        if self.kube.on_job_deleted is not None:
            self.kube.on_job_deleted(name)

    def _pods(self) -> dict[str, Any]:
        with self.kube.lock:
            jobs = list(self.kube.jobs.items())
        return {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {},
            "items": [
                {
                    "metadata": {"name": n + "-x", "labels": j["metadata"]["labels"]},
                    "status": {"podIP": self.kube.pod_ip},
                }
                for n, j in jobs
            ],
        }


class LocalKubelet:
    """Runs each Job's ``mixer-ext`` container as a local process (see the module docstring)."""

    def __init__(self, kube: FakeKube, *, hold: threading.Event | None = None) -> None:
        self.kube = kube
        #: when set: a created Job's process starts only once this is set (a pending pod)
        self.hold = hold
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        #: every Job name whose process ran, in the order they started
        self.started: list[str] = []
        self._threads: list[threading.Thread] = []
        kube.on_job_created = self._created
        kube.on_job_deleted = self._deleted

    def _created(self, job: dict[str, Any]) -> None:
        t = threading.Thread(target=self._run, args=(job,), daemon=True)
        t.start()
        self._threads.append(t)

    def _run(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        if self.hold is not None:
            self.hold.wait(60)
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        for mount in container.get("volumeMounts", []):
            if mount["mountPath"] != "/tmp" and not os.path.isdir(mount["mountPath"]):
                self._finish(name, 1, f"volume {mount['name']} not mounted at {mount['mountPath']}")
                return
        assert container["command"] == ["mixer-ext"], container["command"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIXER_")}
        env |= {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        with self.kube.lock:
            if name not in self.kube.jobs:
                return
            proc = subprocess.Popen(
                [*mixer_ext_cmd(), *container["args"]],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            self.procs[name] = proc
            self.started.append(name)
        _, err = proc.communicate()
        self._finish(name, proc.returncode, err.decode(errors="replace").strip()[-300:])

    def _finish(self, name: str, code: int, message: str) -> None:
        with self.kube.lock:
            job = self.kube.jobs.get(name)
            if job is None:
                return
            if code == 0:
                job["status"] = {"succeeded": 1}
            else:
                job["status"] = {
                    "failed": 1,
                    "conditions": [
                        {
                            "type": "Failed",
                            "status": "True",
                            "reason": "BackoffLimitExceeded",
                            "message": f"Job has reached the specified backoff limit (exit {code}"
                            f"{': ' + message if message else ''})",
                        }
                    ],
                }

    def _deleted(self, name: str) -> None:
        with self.kube.lock:
            proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            proc.kill()

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        for proc in list(self.procs.values()):
            if proc.poll() is None:
                proc.kill()
        for t in self._threads:
            t.join(10)
