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

Status: built and tested against ``kubernetes-validate --strict`` and, for its control
flow, a local fake of the Kubernetes API (tests/test_api_kube.py); not yet wired into
``mixer-ext api`` (``MIXER_API_LAUNCHER=kubernetes`` is refused) and never run against a
real cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mixer_ext.api.resources import MAX_MAX_DURATION

MANAGED_BY = "mixer-ext-api"
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
