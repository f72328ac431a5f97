"""The Kubernetes launcher: one Job per MediaProcessor, with the official ``kubernetes`` client.

The Job has the chart's own worker pod (``helm/mixer-ext/templates/job.yaml``):
non-root, read-only root filesystem, all capabilities dropped, no service-account token, no
service links, the same probes, ports and mounts; the image, resources, grace period,
``/data`` size and placement come from the chart through ``MIXER_API_KUBE_*``
(``JobTemplate.from_settings``; tests/deploy/test_helm.py compares the two pods field by field,
init containers included). By design it runs once, ``backoffLimit: 0`` and
``restartPolicy: Never`` (a finished mixer is never started into the room again; a crash
is the processor's ``failed``). The context (it may hold RTMP stream keys) and the
worker's status URL (it holds the per-processor key) go into a Secret owned by the Job,
so deleting the Job removes them; the room credentials come from an existing Secret by
reference (``ROOM_SECRET_KEYS``, each optional, as in the chart). Nothing secret is in
the Job spec or a ConfigMap.

Least privilege (issue 16.3): the worker never gets the room server's signing secret.
With ``room_token_source`` ``mint`` (the default, embedded backend) an init container
``room-token`` runs ``mixer-ext token --role mixer --room R --identity I --ttl T
--output /run/mixer-token/token`` with ``room-secret`` and the worker reads the file
(``MIXER_ROOM_TOKEN_FILE``): a token for the processor's room and the mixer's identity
only, valid for the processor's maximum duration plus ``TOKEN_MARGIN``; with ``secret``
the worker gets the ``room-token`` key as ``MIXER_ROOM_TOKEN``.

The calls to the cluster are few, and the chart's Role grants exactly them: create,
list and delete Jobs, create Secrets, list pods (tests/api/test_kube.py checks the Role
against the calls the API makes).

Ending a processor deletes its Job (propagation ``Background``): the pod gets SIGTERM
and finalizes its outputs within its grace period. ``reconcile()`` lists this API's Jobs
by label, for adoption when the API starts.

``KubeJobs`` is what ``mixer-ext api`` uses (``MIXER_API_LAUNCHER=kubernetes``): every
call to the cluster runs in a thread (``asyncio.to_thread``), never on the event loop.
``refresh()`` lists this API's Jobs and their pods by label (on start, before adoption,
and every watch period): ``alive``/``adopt`` answer from that view, so the state is
reconciled from the cluster. Listeners reach a stream through the API, which proxies
``/hls/`` to the pod's own HTTP endpoint (pod IP, port 8080) behind the grant check.

Why one module: the Job, its Secret and the launcher that creates, lists and deletes them
are one contract with the chart's worker pod and Role, checked together by the tests.

Status: tested against ``kubernetes-validate --strict`` and, for its control flow, a
local fake of the Kubernetes API (tests/api/test_kube.py); never run on a real cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixer_ext.api.config import ApiSettings
from mixer_ext.api.resources import MAX_MAX_DURATION
from mixer_ext.errors import ConfigError
from mixer_ext.kube import (
    CONTAINER_SECURITY,
    POD_SECURITY,
    clients,
    delete_job,
    job_finished,
    read_job,
)

log = logging.getLogger(__name__)

MANAGED_BY = "mixer-ext-api"
WORKER_PORT = 8080
METRICS_PORT = 9090
#: seconds between two listings of the API's Jobs and pods (the API watches every 0.5 s)
REFRESH_INTERVAL = 5.0
#: settings a Job never gets as plain env: secrets (the room secret comes by Secret
#: reference), the API's own, and what the Job sets itself
_NOT_FOR_JOBS = {
    "MIXER_ACCOUNT_SID",
    "MIXER_AUTH_TOKEN",
    "MIXER_API_KEYS",
    "MIXER_ROOM_SECRET",
    "MIXER_ROOM_TOKEN",
    "MIXER_ROOM_TOKEN_FILE",
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


#: the credentials a Job's worker reads from ``JobTemplate.room_secret_name``, each
#: optional (the same keys as the chart's Job: templates/_helpers.tpl "mixer-ext.secretEnv");
#: ``room-token`` only with ``room_token_source`` ``secret``; never ``room-secret``
ROOM_SECRET_KEYS = {
    "room-token": "MIXER_ROOM_TOKEN",
    "janus-api-secret": "MIXER_JANUS_API_SECRET",
    "janus-token": "MIXER_JANUS_TOKEN",
}
#: the key the ``room-token`` init container mints from (``MIXER_ROOM_SECRET`` there only)
SIGNING_SECRET_KEY = "room-secret"
ROOM_TOKEN_DIR = "/run/mixer-token"
ROOM_TOKEN_FILE = f"{ROOM_TOKEN_DIR}/token"
#: a minted token is valid for the processor's maximum duration plus this (joining, the
#: clean end); the chart's default job.deadlineMarginSeconds
TOKEN_MARGIN = 600
#: the init containers' resources (the chart's "mixer-ext.initResources")
INIT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"memory": "128Mi"},
}


def _default_resources() -> dict[str, dict[str, Any]]:
    return {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}


@dataclass(frozen=True)
class JobTemplate:
    """What a processor's Job takes from the deployment (the chart passes each through the
    API's ``MIXER_API_KUBE_*`` environment, see ``from_settings``); the rest of the pod
    spec is fixed here, as in the chart's own Job."""

    namespace: str
    image: str
    #: an existing Secret holding the room credentials (``ROOM_SECRET_KEYS``)
    room_secret_name: str
    image_pull_policy: str = "IfNotPresent"
    #: ``mint`` (an init container mints the worker's token from ``room-secret``) or
    #: ``secret`` (the ``room-token`` key as is)
    room_token_source: str = "mint"
    termination_grace_seconds: int = 30
    ttl_after_finished: int = 3600
    resources: dict[str, dict[str, Any]] = field(default_factory=_default_resources)
    data_size_limit: str = "2Gi"
    #: placement and pulling fields of the pod spec (nodeSelector, tolerations, ...)
    pod_spec: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, cfg: ApiSettings) -> JobTemplate:
        if cfg.api_kube_image is None:  # load_api_settings refuses this earlier
            raise ConfigError("MIXER_API_KUBE_IMAGE is required by MIXER_API_LAUNCHER=kubernetes")
        return cls(
            namespace=cfg.api_kube_namespace,
            image=cfg.api_kube_image,
            room_secret_name=cfg.api_kube_room_secret,
            room_token_source=cfg.api_kube_room_token_source,
            image_pull_policy=cfg.api_kube_image_pull_policy,
            termination_grace_seconds=cfg.api_kube_grace_seconds,
            ttl_after_finished=cfg.api_kube_ttl_seconds,
            resources={k: dict(v) for k, v in cfg.api_kube_resources.items()},
            data_size_limit=cfg.api_kube_data_size_limit,
            pod_spec=dict(cfg.api_kube_pod_spec),
        )


def job_name(sid: str) -> str:
    return f"mixer-{sid.lower()}"


@dataclass(frozen=True, slots=True)
class RoomTokenRequest:
    """What the ``room-token`` init container mints: a mixer-role token for ``room`` and
    ``identity``, valid ``ttl`` seconds (the processor's maximum duration plus margin)."""

    room: str
    identity: str
    ttl: int

    @classmethod
    def from_context(cls, context_text: str) -> RoomTokenRequest:
        from mixer_ext.context import parse_context

        ctx = parse_context(context_text)
        duration = ctx.max_participant_duration or MAX_MAX_DURATION
        return cls(ctx.room.name, ctx.identity, duration + TOKEN_MARGIN)

    def args(self) -> list[str]:
        """``mixer-ext token`` arguments, as the chart's "mixer-ext.roomTokenArgs"."""
        return [
            "token", "--role", "mixer", "--room", self.room, "--identity", self.identity,
            "--ttl", str(self.ttl), "--output", ROOM_TOKEN_FILE,
        ]  # fmt: skip


def mints_room_token(t: JobTemplate, env: Mapping[str, str]) -> bool:
    """The Job's worker gets a minted token (embedded backend, ``room_token_source`` mint)."""
    backend = env.get("MIXER_ROOM_BACKEND", "embedded").strip().lower()
    return backend == "embedded" and t.room_token_source == "mint"


def _room_token_container(t: JobTemplate, request: RoomTokenRequest) -> dict[str, Any]:
    return {
        "name": "room-token",
        "image": t.image,
        "imagePullPolicy": t.image_pull_policy,
        "command": ["mixer-ext"],
        "args": request.args(),
        "env": [
            {
                "name": "MIXER_ROOM_SECRET",
                "valueFrom": {
                    "secretKeyRef": {"name": t.room_secret_name, "key": SIGNING_SECRET_KEY}
                },
            }
        ],
        "securityContext": CONTAINER_SECURITY,
        "resources": INIT_RESOURCES,
        "volumeMounts": [
            {"name": "room-token", "mountPath": ROOM_TOKEN_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def build_job(
    t: JobTemplate, sid: str, env: dict[str, str], room_token: RoomTokenRequest | None = None
) -> dict[str, Any]:
    """The Job manifest; ``env`` holds non-secret settings only (room URL, backend, ...).

    ``room_token`` (required when ``mints_room_token``): what the init container mints.
    """
    name = job_name(sid)
    mint = mints_room_token(t, env)
    if mint and room_token is None:
        raise ValueError("build_job: room_token is required when the Job mints its room token")
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
        {"name": "MIXER_HTTP_PORT", "value": str(WORKER_PORT)},
        {"name": "MIXER_METRICS_PORT", "value": str(METRICS_PORT)},
        *([{"name": "MIXER_ROOM_TOKEN_FILE", "value": ROOM_TOKEN_FILE}] if mint else []),
        {
            "name": "MIXER_STATUS_CALLBACK_URL",
            "valueFrom": {"secretKeyRef": {"name": name, "key": "status-callback-url"}},
        },
    ]
    container_env += [
        {
            "name": var,
            "valueFrom": {
                "secretKeyRef": {"name": t.room_secret_name, "key": key, "optional": True}
            },
        }
        for key, var in sorted(ROOM_SECRET_KEYS.items())
        if key != "room-token" or _uses_room_token_key(t, env)
    ]
    init_containers = [_room_token_container(t, room_token)] if mint and room_token else []
    token_mounts = (
        [{"name": "room-token", "mountPath": ROOM_TOKEN_DIR, "readOnly": True}] if mint else []
    )
    token_volumes = (
        [{"name": "room-token", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}]
        if mint
        else []
    )
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
                    **t.pod_spec,
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": t.termination_grace_seconds,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": POD_SECURITY,
                    **({"initContainers": init_containers} if init_containers else {}),
                    "containers": [
                        {
                            "name": "mixer",
                            "image": t.image,
                            "imagePullPolicy": t.image_pull_policy,
                            "command": ["mixer-ext"],
                            "args": ["run", "--context", CONTEXT_PATH],
                            "workingDir": "/data",
                            "env": container_env,
                            "ports": [
                                {"name": "http", "containerPort": WORKER_PORT, "protocol": "TCP"},
                                {
                                    "name": "metrics",
                                    "containerPort": METRICS_PORT,
                                    "protocol": "TCP",
                                },
                            ],
                            # the chart's probes (values.yaml livenessProbe, readinessProbe)
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": "http"},
                                "initialDelaySeconds": 10,
                                "periodSeconds": 10,
                                "timeoutSeconds": 3,
                                "failureThreshold": 3,
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": "http"},
                                "initialDelaySeconds": 2,
                                "periodSeconds": 5,
                                "timeoutSeconds": 3,
                                "failureThreshold": 3,
                            },
                            "securityContext": CONTAINER_SECURITY,
                            "resources": t.resources,
                            "volumeMounts": [
                                {"name": "context", "mountPath": "/run/mixer", "readOnly": True},
                                *token_mounts,
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
                        *token_volumes,
                        {"name": "data", "emptyDir": {"sizeLimit": t.data_size_limit}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }


def _uses_room_token_key(t: JobTemplate, env: Mapping[str, str]) -> bool:
    backend = env.get("MIXER_ROOM_BACKEND", "embedded").strip().lower()
    return backend == "embedded" and t.room_token_source == "secret"


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
        return cls(template, *clients())

    def start(self, sid: str, context_text: str, env: dict[str, str]) -> dict[str, Any]:
        request = (
            RoomTokenRequest.from_context(context_text) if mints_room_token(self.t, env) else None
        )
        job = self.batch.create_namespaced_job(
            self.t.namespace, build_job(self.t, sid, env, request)
        )
        uid = job.metadata.uid
        status_url = env.get("MIXER_STATUS_CALLBACK_URL", "")
        self.core.create_namespaced_secret(
            self.t.namespace, build_secret(self.t, sid, context_text, status_url, uid)
        )
        return {"job": job_name(sid), "namespace": self.t.namespace, "uid": uid}

    def stop(self, handle: dict[str, Any]) -> None:
        delete_job(self.batch, handle["job"], handle["namespace"])

    def alive(self, handle: dict[str, Any]) -> bool:
        job = read_job(self.batch, handle["job"], handle["namespace"])
        if job is None or job.metadata.uid != handle.get("uid"):
            return False
        return not job_finished(job)

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
        running = {j.metadata.labels[SID_LABEL]: not job_finished(j) for j in jobs.items}
        pods = self.core.list_namespaced_pod(self.t.namespace, label_selector=selector)
        ips = {
            p.metadata.labels[SID_LABEL]: p.status.pod_ip
            for p in pods.items
            if p.status is not None and p.status.pod_ip
        }
        return running, ips


#: a setting named like this is a credential, never copied into a Job spec (credentials
#: reach a Job by Secret reference only, ``ROOM_SECRET_KEYS``)
_CREDENTIAL_SUFFIXES = ("_SECRET", "_TOKEN", "_KEY", "_KEYS", "_PASSWORD")


def job_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The API's ``MIXER_*`` settings a Job inherits (room URL, backend, HLS tuning...)."""
    env = os.environ if environ is None else environ
    return {
        k: v
        for k, v in env.items()
        if k.startswith("MIXER_")
        and not k.startswith("MIXER_API_")
        and k not in _NOT_FOR_JOBS
        and not k.endswith(_CREDENTIAL_SUFFIXES)
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
