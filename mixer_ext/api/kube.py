"""The Kubernetes launcher: one Job per MediaProcessor, with the official ``kubernetes`` client.

The Job follows the chart's own Job (``helm/mixer-ext/templates/job.yaml``): non-root,
read-only root filesystem, no service-account token, no service links, ``backoffLimit:
0`` and ``restartPolicy: Never`` (a finished mixer is never started into the room
again). The context (it may hold RTMP stream keys) and the worker's status URL (it
holds the per-processor key) go into a Secret owned by the Job, so deleting the Job
removes them; the room secret comes from an existing Secret by reference. Nothing
secret is in the Job spec or a ConfigMap.

Ending a processor deletes its Job (propagation ``Background``): the pod gets SIGTERM
and finalizes its outputs within its grace period. ``reconcile()`` lists this API's Jobs
by label, for adoption when the API starts.

``KubeJobs`` is what ``mixer-ext api`` uses (``MIXER_API_LAUNCHER=kubernetes``): every
call to the cluster runs in a thread (``asyncio.to_thread``), never on the event loop.
``refresh()`` lists this API's Jobs and their pods by label (on start, before adoption,
and every watch period): ``alive``/``adopt`` answer from that view, so the state is
reconciled from the cluster. Listeners reach a stream through the API, which proxies
``/hls/`` to the pod's own HTTP endpoint (pod IP, port 8080) behind the grant check.

Status: tested against ``kubernetes-validate --strict`` and, for its control flow, a
local fake of the Kubernetes API (tests/test_api_kube.py); never run on a real cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixer_ext.api.resources import MAX_MAX_DURATION

log = logging.getLogger(__name__)

MANAGED_BY = "mixer-ext-api"
WORKER_PORT = 8080
#: seconds between two listings of the API's Jobs and pods (the API watches every 0.5 s)
REFRESH_INTERVAL = 5.0
#: settings a Job never gets as plain env: secrets (the room secret comes by Secret
#: reference), the API's own, and what the Job sets itself
_NOT_FOR_JOBS = {
    "MIXER_AUTH_TOKEN",
    "MIXER_API_KEYS",
    "MIXER_ROOM_SECRET",
    "MIXER_ROOM_TOKEN",
    "MIXER_JANUS_API_SECRET",
    "MIXER_JANUS_TOKEN",
    "MIXER_HLS_DIR",
    "MIXER_HTTP_HOST",
    "MIXER_HTTP_PORT",
    "MIXER_METRICS_PORT",
    "MIXER_PLAYER_DIR",
}
SID_LABEL = "mixer-ext.io/processor-sid"
CONTEXT_PATH = "/run/mixer/context.json"


@dataclass(frozen=True)
class JobTemplate:
    namespace: str
    image: str
    #: an existing Secret holding the room credentials (key ``room-secret``)
    room_secret_name: str
    image_pull_policy: str = "IfNotPresent"
    termination_grace_seconds: int = 60
    ttl_after_finished: int = 3600
    cpu_request: str = "250m"
    memory_request: str = "192Mi"
    memory_limit: str = "512Mi"


def job_name(sid: str) -> str:
    return f"mixer-{sid.lower()}"


def build_job(t: JobTemplate, sid: str, env: dict[str, str]) -> dict[str, Any]:
    """The Job manifest; ``env`` holds non-secret settings only (room URL, backend, ...)."""
    name = job_name(sid)
    labels = {
        "app.kubernetes.io/name": "mixer-ext",
        "app.kubernetes.io/component": "mixer",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        SID_LABEL: sid,
    }
    container_env: list[dict[str, Any]] = [
        {"name": k, "value": v} for k, v in sorted(env.items()) if k != "MIXER_STATUS_CALLBACK_URL"
    ]
    container_env += [
        {"name": "MIXER_HLS_DIR", "value": "/data/hls"},
        {"name": "MIXER_HTTP_HOST", "value": "0.0.0.0"},
        {"name": "MIXER_HTTP_PORT", "value": "8080"},
        {
            "name": "MIXER_STATUS_CALLBACK_URL",
            "valueFrom": {"secretKeyRef": {"name": name, "key": "status-callback-url"}},
        },
        {
            "name": "MIXER_ROOM_SECRET",
            "valueFrom": {"secretKeyRef": {"name": t.room_secret_name, "key": "room-secret"}},
        },
    ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": t.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": MAX_MAX_DURATION + 600,
            "ttlSecondsAfterFinished": t.ttl_after_finished,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": t.termination_grace_seconds,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "mixer",
                            "image": t.image,
                            "imagePullPolicy": t.image_pull_policy,
                            "command": ["mixer-ext"],
                            "args": ["run", "--context", CONTEXT_PATH],
                            "workingDir": "/data",
                            "env": container_env,
                            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": "http"},
                                "periodSeconds": 5,
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "resources": {
                                "requests": {"cpu": t.cpu_request, "memory": t.memory_request},
                                "limits": {"memory": t.memory_limit},
                            },
                            "volumeMounts": [
                                {"name": "context", "mountPath": "/run/mixer", "readOnly": True},
                                {"name": "data", "mountPath": "/data"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "context",
                            "secret": {
                                "secretName": name,
                                "items": [{"key": "context.json", "path": "context.json"}],
                                "defaultMode": 0o400,
                            },
                        },
                        {"name": "data", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }


def build_secret(
    t: JobTemplate, sid: str, context_text: str, status_url: str, job_uid: str
) -> dict[str, Any]:
    """The processor's private Secret, owned by its Job (deleted with it)."""
    name = job_name(sid)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": t.namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY, SID_LABEL: sid},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": job_uid,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "stringData": {"context.json": context_text, "status-callback-url": status_url},
    }


class KubernetesLauncher:
    """``Launcher`` over the Kubernetes API; ``batch``/``core`` are the client's
    ``BatchV1Api``/``CoreV1Api`` (in-cluster config or kubeconfig, see ``from_config``)."""

    name = "kubernetes"

    def __init__(self, template: JobTemplate, batch: Any, core: Any) -> None:
        self.t = template
        self.batch = batch
        self.core = core

    @classmethod
    def from_config(cls, template: JobTemplate) -> KubernetesLauncher:
        from kubernetes import client, config

        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        return cls(template, client.BatchV1Api(), client.CoreV1Api())

    def start(self, sid: str, context_text: str, env: dict[str, str]) -> dict[str, Any]:
        job = self.batch.create_namespaced_job(self.t.namespace, build_job(self.t, sid, env))
        uid = job.metadata.uid
        status_url = env.get("MIXER_STATUS_CALLBACK_URL", "")
        self.core.create_namespaced_secret(
            self.t.namespace, build_secret(self.t, sid, context_text, status_url, uid)
        )
        return {"job": job_name(sid), "namespace": self.t.namespace, "uid": uid}

    def _job(self, handle: dict[str, Any]) -> Any | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.batch.read_namespaced_job(handle["job"], handle["namespace"])
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def stop(self, handle: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.batch.delete_namespaced_job(
                handle["job"], handle["namespace"], propagation_policy="Background"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def alive(self, handle: dict[str, Any]) -> bool:
        job = self._job(handle)
        if job is None or job.metadata.uid != handle.get("uid"):
            return False
        if job.metadata.deletion_timestamp is not None:
            return False
        status = job.status
        if status is None:
            return True
        return not (status.succeeded or status.failed or status.completion_time)

    def adopt(self, handle: dict[str, Any]) -> bool:
        return self.alive(handle)

    def reconcile(self) -> dict[str, dict[str, Any]]:
        """Processor SID -> handle of every Job this API made that still exists."""
        jobs = self.batch.list_namespaced_job(
            self.t.namespace, label_selector=f"app.kubernetes.io/managed-by={MANAGED_BY}"
        )
        return {
            j.metadata.labels[SID_LABEL]: {
                "job": j.metadata.name,
                "namespace": self.t.namespace,
                "uid": j.metadata.uid,
            }
            for j in jobs.items
        }

    def snapshot(self) -> tuple[dict[str, bool], dict[str, str]]:
        """(SID -> the Job is still running, SID -> its pod's IP) for this API's Jobs."""
        selector = f"app.kubernetes.io/managed-by={MANAGED_BY}"
        jobs = self.batch.list_namespaced_job(self.t.namespace, label_selector=selector)
        running = {}
        for j in jobs.items:
            st = j.status
            done = st is not None and bool(st.succeeded or st.failed or st.completion_time)
            running[j.metadata.labels[SID_LABEL]] = (
                not done and j.metadata.deletion_timestamp is None
            )
        pods = self.core.list_namespaced_pod(self.t.namespace, label_selector=selector)
        ips = {
            p.metadata.labels[SID_LABEL]: p.status.pod_ip
            for p in pods.items
            if p.status is not None and p.status.pod_ip
        }
        return running, ips


def job_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The API's ``MIXER_*`` settings a Job inherits (room URL, backend, HLS tuning...)."""
    env = os.environ if environ is None else environ
    return {
        k: v
        for k, v in env.items()
        if k.startswith("MIXER_") and not k.startswith("MIXER_API_") and k not in _NOT_FOR_JOBS
    }


class KubeJobs:
    """The control plane's ``WorkerLauncher`` over ``KubernetesLauncher``; no call blocks.

    ``start``/``stop`` hand the cluster call to a thread (a named, kept task) and return;
    a Job whose creation failed is not alive, so the watcher marks its processor failed.
    """

    name = "kubernetes"

    def __init__(self, jobs: KubernetesLauncher, data_dir: Path) -> None:
        self.jobs = jobs
        self.work = data_dir / "work"
        self._running: dict[str, bool] = {}
        self._ips: dict[str, str] = {}
        #: SIDs whose Job is being created (alive until the next refresh after creation)
        self._creating: set[str] = set()
        #: SID -> when its Job was created (a refresh listed before that keeps it alive)
        self._created: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: the pods' HTTP port, and the least time between two listings of the cluster
        self.worker_port = WORKER_PORT
        self.min_interval = REFRESH_INTERVAL
        self._listed_at: float | None = None

    def _spawn(self, name: str, fn: Any, *args: Any) -> None:
        async def call() -> None:
            try:
                await asyncio.to_thread(fn, *args)
            except Exception as exc:  # the cluster refused: say so; the watcher reacts
                log.error("kubernetes: %s failed: %s", name, exc)

        task = asyncio.get_running_loop().create_task(call(), name=f"kube:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self, sid: str, context_text: str, env: dict[str, str]) -> dict[str, Any]:
        job_environment = {
            **job_env(),
            "MIXER_STATUS_CALLBACK_URL": env["MIXER_STATUS_CALLBACK_URL"],
        }
        self._creating.add(sid)

        def create() -> None:
            try:
                self.jobs.start(sid, context_text, job_environment)
                self._created[sid] = time.monotonic()
                self._running[sid] = True
            finally:
                self._creating.discard(sid)

        self._spawn(f"create {job_name(sid)}", create)
        return {"job": job_name(sid), "namespace": self.jobs.t.namespace, "sid": sid}

    def stop(self, handle: dict[str, Any]) -> None:
        self._spawn(f"delete {handle['job']}", self.jobs.stop, handle)

    kill = stop

    def alive(self, handle: dict[str, Any]) -> bool:
        sid = str(handle["sid"])
        return sid in self._creating or self._running.get(sid, False)

    adopt = alive

    def exit_code(self, handle: dict[str, Any]) -> int | None:
        return None

    def forget(self, sid: str, handle: dict[str, Any]) -> None:
        self._ips.pop(sid, None)

    async def refresh(self) -> None:
        since = time.monotonic()
        if self._listed_at is not None and since - self._listed_at < self.min_interval:
            return
        self._listed_at = since
        running, self._ips = await asyncio.to_thread(self.jobs.snapshot)
        for sid, at in list(self._created.items()):
            if at >= since:  # created while the listing ran: not in it yet
                running.setdefault(sid, True)
            elif sid in running or at < since - 600:
                del self._created[sid]
        self._running = running

    def stream_base(self, handle: dict[str, Any]) -> str | None:
        ip = self._ips.get(str(handle["sid"]))
        return f"http://{ip}:{self.worker_port}" if ip else None

    async def close(self) -> None:
        for task in list(self._tasks):
            await asyncio.wait({task}, timeout=10)
