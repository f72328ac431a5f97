"""Running a Job on Kubernetes the project's way, shared by the two launchers that do it.

``api/kube.py`` runs each MediaProcessor's worker as a Job; ``roomserver/compose/kube.py``
runs each composition (``mixer-ext compose``) as a Job.  Both build their own Job (what
runs, what is mounted, which labels) and share here what must not drift between them:

- the pod's and container's security context (non-root 10001, read-only root
  filesystem, every capability dropped, seccomp ``RuntimeDefault``), the same as the
  chart's own pods;
- which placement fields of a pod spec a setting may add (``POD_SPEC_FIELDS``,
  ``check_pod_spec``) and the patterns of Kubernetes names and quantities;
- the clients (``clients``: in-cluster configuration, else the kubeconfig), reading a
  Job that may be gone (``read_job``), deleting one (``delete_job``, a 404 is done),
  whether it finished (``job_finished``) and why it failed (``failure_reason``).

The ``kubernetes`` package is imported inside the functions that call the cluster, so a
process that never talks to Kubernetes never imports it (11 MiB).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
#: what a ``…_KUBE_POD_SPEC`` setting may set in a Job's pod spec: placement and pulling
POD_SPEC_FIELDS = frozenset(
    {"nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets"}
)
#: the pod's security context (the chart's ``podSecurityContext``)
POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
#: each container's security context (the chart's ``securityContext``)
CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def check_pod_spec(value: Mapping[str, Any]) -> dict[str, Any]:
    """``value`` when it sets only ``POD_SPEC_FIELDS``; else ValueError naming the others."""
    unknown = sorted(set(value) - POD_SPEC_FIELDS)
    if unknown:
        raise ValueError(
            f"{', '.join(unknown)} not allowed (only {', '.join(sorted(POD_SPEC_FIELDS))})"
        )
    return dict(value)


def clients() -> tuple[Any, Any]:
    """``(BatchV1Api, CoreV1Api)`` of the pod's own service account (in a cluster), else
    of the kubeconfig (``KUBECONFIG`` or ``~/.kube/config``)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.BatchV1Api(), client.CoreV1Api()


def read_job(batch: Any, name: str, namespace: str) -> Any | None:
    """The Job (the client's ``V1Job``), or None when it does not exist."""
    from kubernetes.client.exceptions import ApiException

    try:
        return batch.read_namespaced_job(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def delete_job(batch: Any, name: str, namespace: str) -> None:
    """Delete the Job and, in the background, its pods (a Job already gone is fine)."""
    from kubernetes.client.exceptions import ApiException

    try:
        batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise


def job_finished(job: Any) -> bool:
    """The Job ran to its end (succeeded or failed) or is being deleted."""
    if job.metadata.deletion_timestamp is not None:
        return True
    st = job.status
    return st is not None and bool(st.succeeded or st.failed or st.completion_time)


def failure_reason(job: Any) -> str:
    """Why a failed Job failed, from its ``Failed`` condition (one line)."""
    for cond in (job.status.conditions if job.status else None) or []:
        if cond.type == "Failed" and cond.status == "True":
            return f"{cond.reason or 'Failed'}: {cond.message or ''}".rstrip(": ")
    return "the Job failed"
