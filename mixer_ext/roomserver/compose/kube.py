"""Compositions as Kubernetes Jobs (``MIXER_COMPOSITION_RUNNER=kubernetes``).

Each composition is one Job running ``mixer-ext compose --job J --status S`` (``cli.py``)
in the room server's own image, with the recordings' PersistentVolumeClaim
(``MIXER_COMPOSITION_KUBE_CLAIM``) mounted at the room server's ``MIXER_RECORDINGS_DIR``,
so the job's media keys resolve to the same files.  The job (``spec.encode_job``: track
names, offsets, media keys; nothing secret) and the status go through that shared
storage, beside the output: ``compositions/.CJ….job.json`` and ``.CJ….status.json``.
The Job has no Secret, no service-account token and no credential in its spec or argv:
it reads recordings and writes one composition.

The pod is the project's (``mixer_ext/kube.py``: non-root, read-only root filesystem,
capabilities dropped); it runs once (``backoffLimit: 0``, ``restartPolicy: Never``: a
failed mix fails the composition, as a failed local worker does), for at most
``JOB_DEADLINE`` seconds, and is deleted ``MIXER_COMPOSITION_KUBE_TTL_SECONDS`` after it
ends (``ttlSecondsAfterFinished``).

``KubeCompositionJobs.run`` waits for one of ``MIXER_COMPOSITION_WORKERS`` slots (the
composition is ``enqueued`` meanwhile), creates the Job, then every ``poll`` seconds
reads it and the status file (in a thread, never on the loop): progress goes to
``on_progress``; the Job ``succeeded`` with a ``done`` status is the result; ``failed``
(or gone) is ``CompositionFailed`` with the status file's reason, else the Job's
``Failed`` condition.  Cancelling ``run`` (a deleted composition) deletes the Job.  A
room server that stops (``close``) leaves its Jobs running: the restarted server runs
the unfinished compositions again (``MediaService``), finds the Job of the same name
(409) and follows it rather than start a second writer.

The calls are create, get and delete of Jobs in one namespace: exactly what the chart's
Role for the room server grants (tests/roomserver/compose/test_kube.py checks the two together).

Status: tested with the real ``kubernetes`` client against a local fake of the API server
that runs each Job's container command as a local process (tests/roomserver/compose/test_kube.py);
never run on a real cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixer_ext.kube import (
    CONTAINER_SECURITY,
    POD_SECURITY,
    clients,
    delete_job,
    failure_reason,
    read_job,
)
from mixer_ext.roomserver.compose.engine import CompositionResult
from mixer_ext.roomserver.compose.spec import CompositionJob, encode_job
from mixer_ext.roomserver.compose.workers import BoundedRunner, CompositionFailed
from mixer_ext.settings import Settings

log = logging.getLogger(__name__)

MANAGED_BY = "mixer-ext-room-server"
SID_LABEL = "mixer-ext.io/composition-sid"
#: seconds between two reads of a running Job and its status file
POLL_INTERVAL = 2.0
#: the longest a composition Job may run (a 10 h room mixes in minutes: this only bounds
#: a stuck one)
JOB_DEADLINE = 6 * 3600


def _default_resources() -> dict[str, dict[str, Any]]:
    return {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


@dataclass(frozen=True)
class ComposeJobTemplate:
    """What a composition Job takes from the deployment (``MIXER_COMPOSITION_KUBE_*``)."""

    namespace: str
    image: str
    #: the PVC holding ``root`` (the room server's ``MIXER_RECORDINGS_DIR``)
    claim: str
    #: where the claim is mounted, in the room server and in the Job alike
    root: Path
    image_pull_policy: str = "IfNotPresent"
    ttl_after_finished: int = 3600
    resources: dict[str, dict[str, Any]] = field(default_factory=_default_resources)
    #: placement and pulling fields of the pod spec (nodeSelector, tolerations, ...)
    pod_spec: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, s: Settings) -> ComposeJobTemplate:
        if not s.composition_kube_image or not s.composition_kube_claim:
            raise ValueError("the kubernetes composition runner needs an image and a claim")
        return cls(
            namespace=s.composition_kube_namespace,
            image=s.composition_kube_image,
            claim=s.composition_kube_claim,
            root=s.recordings_dir,
            image_pull_policy=s.composition_kube_image_pull_policy,
            ttl_after_finished=s.composition_kube_ttl_seconds,
            resources={k: dict(v) for k, v in s.composition_kube_resources.items()},
            pod_spec=dict(s.composition_kube_pod_spec),
        )


def composition_sid(job: CompositionJob) -> str:
    """The composition's SID: its output is ``compositions/CJ….{mp4,webm}``."""
    return job.output.stem


def compose_job_name(sid: str) -> str:
    return f"compose-{sid.lower()}"


def job_files(t: ComposeJobTemplate, sid: str) -> tuple[Path, Path]:
    """(the job's JSON, its status file), beside the output on the shared storage."""
    base = t.root / "compositions"
    return base / f".{sid}.job.json", base / f".{sid}.status.json"


def build_compose_job(t: ComposeJobTemplate, sid: str) -> dict[str, Any]:
    """The Job manifest of composition ``sid`` (its job file is written beforehand)."""
    job_file, status_file = job_files(t, sid)
    labels = {
        "app.kubernetes.io/name": "mixer-ext",
        "app.kubernetes.io/component": "composition",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        SID_LABEL: sid,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": compose_job_name(sid), "namespace": t.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": JOB_DEADLINE,
            "ttlSecondsAfterFinished": t.ttl_after_finished,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    **t.pod_spec,
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": POD_SECURITY,
                    "containers": [
                        {
                            "name": "compose",
                            "image": t.image,
                            "imagePullPolicy": t.image_pull_policy,
                            "command": ["mixer-ext"],
                            "args": [
                                "compose",
                                "--job",
                                str(job_file),
                                "--status",
                                str(status_file),
                            ],
                            "env": [
                                {"name": "MIXER_RECORDINGS_DIR", "value": str(t.root)},
                                {"name": "MIXER_LOG_FORMAT", "value": "json"},
                            ],
                            "securityContext": CONTAINER_SECURITY,
                            "resources": t.resources,
                            "volumeMounts": [
                                {"name": "recordings", "mountPath": str(t.root)},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "recordings", "persistentVolumeClaim": {"claimName": t.claim}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }


def _result(done: dict[str, Any], root: Path) -> CompositionResult:
    levels = done.get("levels")
    return CompositionResult(
        duration=float(done["duration"]),
        size=int(done["size"]),
        channels=int(done["channels"]),
        min_gain=float(done["min_gain"]),
        levels=root / levels if levels else None,
    )


class KubeCompositionJobs(BoundedRunner):
    """``CompositionRunner`` over the Kubernetes API (see the module docstring)."""

    def __init__(
        self,
        template: ComposeJobTemplate,
        batch: Any,
        max_jobs: int = 1,
        poll: float = POLL_INTERVAL,
    ) -> None:
        super().__init__(max_jobs, "max_jobs")
        self.t = template
        self.batch = batch
        self.max_jobs = max_jobs
        self.poll = poll
        #: the room server is stopping: a cancelled run leaves its Job to a restarted server
        self._closing = False

    @classmethod
    def from_settings(cls, settings: Settings) -> KubeCompositionJobs:
        batch, _core = clients()
        return cls(ComposeJobTemplate.from_settings(settings), batch, settings.composition_workers)

    #: a Job goes on while the room server restarts; the next server follows it
    survives_restart = True

    def close(self) -> None:
        self._closing = True

    def _create(self, sid: str, text: str) -> None:
        """Write the job file and create the Job; a Job of that name already there (a
        restarted server's run of the same composition) is followed, not duplicated."""
        from kubernetes.client.exceptions import ApiException

        job_file, status_file = job_files(self.t, sid)
        job_file.parent.mkdir(parents=True, exist_ok=True)
        job_file.write_text(text)
        try:
            self.batch.create_namespaced_job(self.t.namespace, build_compose_job(self.t, sid))
        except ApiException as exc:
            if exc.status != 409:
                raise
            log.info("composition %s: its Job exists already; following it", sid)
            return
        status_file.unlink(missing_ok=True)  # a status left by an earlier, finished Job

    def _read(self, sid: str) -> tuple[Any | None, dict[str, Any]]:
        """The Job (None: gone) and the last status line its pod wrote."""
        job = read_job(self.batch, compose_job_name(sid), self.t.namespace)
        try:
            status = json.loads(job_files(self.t, sid)[1].read_text())
        except (OSError, ValueError):
            status = {}
        return job, status if isinstance(status, dict) else {}

    async def _run_one(
        self, job: CompositionJob, on_progress: Callable[[float], None] | None
    ) -> CompositionResult:
        sid = composition_sid(job)
        name = compose_job_name(sid)
        try:
            await asyncio.to_thread(self._create, sid, encode_job(job, self.t.root))
        except Exception as exc:  # the cluster refused (RBAC, quota, ...): one line
            raise CompositionFailed(f"the composition Job {name} was not created: {exc}") from exc
        finished = False
        try:
            last = -1.0
            while True:
                await asyncio.sleep(self.poll)
                k8s_job, status = await asyncio.to_thread(self._read, sid)
                progress = status.get("progress")
                if isinstance(progress, int | float) and progress > last:
                    last = float(progress)
                    if on_progress is not None:
                        on_progress(last)
                if k8s_job is None:
                    finished = True
                    raise CompositionFailed(f"the composition Job {name} is gone")
                st = k8s_job.status
                if st is not None and st.succeeded:
                    finished = True
                    if isinstance(status.get("done"), dict):
                        if on_progress is not None and last < 1.0:
                            on_progress(1.0)  # as a local worker's last message
                        return _result(status["done"], self.t.root)
                    raise CompositionFailed(f"the composition Job {name} left no result")
                if st is not None and st.failed:
                    finished = True
                    reason = status.get("failed") or failure_reason(k8s_job)
                    raise CompositionFailed(f"{reason} (Job {name})")
        except asyncio.CancelledError:
            if not finished and not self._closing:
                await asyncio.to_thread(delete_job, self.batch, name, self.t.namespace)
            elif not finished:
                log.info("composition %s: Job %s left running for the next start", sid, name)
            raise
        finally:
            if finished or not self._closing:
                # the job and status files, and what a failed or deleted pod half-wrote
                parts = list(job_files(self.t, sid)[0].parent.glob(f".{sid}*.part"))
                for path in [*job_files(self.t, sid), *parts]:
                    with contextlib.suppress(OSError):
                        path.unlink(missing_ok=True)
