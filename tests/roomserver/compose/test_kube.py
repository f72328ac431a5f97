"""Compositions as Kubernetes Jobs (issue 23.4): ``KubeCompositionJobs`` behind the
``CompositionRunner`` interface.

Level of realism, the same as tests/api/test_kube.py for the worker launcher, one step
further for what runs in the Job: the Job manifest passes ``kubernetes-validate
--strict``; the runner talks through the official ``kubernetes`` client (real HTTP) to a
local fake of the API server (``mixer_ext.testing.fakekube.FakeKube``, a stand-in in a
unit test of the code around the client), whose ``LocalKubelet`` runs each Job's
container command (``mixer-ext compose --job … --status …``) for real, as a local process
with the Job's env, on the directory the Job mounts; the mix is checked by FFT.  Nothing
here ran on a real cluster (no scheduler, images, PVCs or security contexts).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes")
import kubernetes_validate  # noqa: E402

from mixer_ext.roomserver.compose.kube import (  # noqa: E402
    ComposeJobTemplate,
    KubeCompositionJobs,
    build_compose_job,
    compose_job_name,
    job_files,
)
from mixer_ext.roomserver.compose.spec import Source, plan  # noqa: E402
from mixer_ext.roomserver.compose.workers import CompositionFailed  # noqa: E402
from mixer_ext.testing.fakekube import FakeKube, LocalKubelet  # noqa: E402
from mixer_ext.testing.net import ROOT  # noqa: E402
from mixer_ext.testing.timeline import decode_timeline, tone_level  # noqa: E402
from tests.support.compose import RATE, record  # noqa: E402


def _template(root: Path) -> ComposeJobTemplate:
    return ComposeJobTemplate(
        namespace="live", image="mixer-ext:0.1.0", claim="mixer-ext-recordings", root=root
    )


@pytest.mark.parametrize("version", ["1.25.0", kubernetes_validate.latest_version()])
def test_compose_job_manifest_validates_strict(version: str) -> None:
    t = _template(Path("/recordings"))
    job = build_compose_job(t, "CJ" + "a" * 32)
    kubernetes_validate.validate(job, version, strict=True)
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert spec["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    assert spec["ttlSecondsAfterFinished"] == 3600
    assert pod["automountServiceAccountToken"] is False and "initContainers" not in pod
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["args"] == [
        "compose", "--job", f"/recordings/compositions/.CJ{'a' * 32}.job.json",
        "--status", f"/recordings/compositions/.CJ{'a' * 32}.status.json",
    ]  # fmt: skip
    # the recordings' claim at the room server's own MIXER_RECORDINGS_DIR; no secret at all
    assert {"name": "recordings", "mountPath": "/recordings"} in c["volumeMounts"]
    assert {
        "name": "recordings",
        "persistentVolumeClaim": {"claimName": "mixer-ext-recordings"},
    } in pod["volumes"]
    assert {e["name"] for e in c["env"]} == {"MIXER_RECORDINGS_DIR", "MIXER_LOG_FORMAT"}
    assert "secret" not in json.dumps(job).lower()


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("recordings")
    d = root / "recordings" / "RM1"
    d.mkdir(parents=True)
    record(d / "RTalice", 440, 0.0, [(0.0, 2.0)])
    record(d / "RTbob", 1000, 1.0, [(0.0, 2.0)])
    for f in d.iterdir():
        f.rename(f.with_suffix(".mka"))
    return root


@pytest.fixture
def cluster() -> Iterator[tuple[FakeKube, LocalKubelet, Any]]:
    kube = FakeKube()
    kubelet = LocalKubelet(kube)
    api = kube.client()
    try:
        yield kube, kubelet, kubernetes.client.BatchV1Api(api)
    finally:
        kubelet.close()
        api.close()
        kube.close()


def _job(root: Path, sid: str, *, missing: bool = False) -> Any:
    sources = [
        Source("alice", root / "recordings/RM1/RTalice.mka", 0, 2 * RATE),
        Source(
            "bob", root / f"recordings/RM1/{'RTgone' if missing else 'RTbob'}.mka", RATE, 2 * RATE
        ),
    ]
    return plan(sources, root / f"compositions/{sid}.webm", fmt="webm", trim=False)


@pytest.mark.slow
async def test_compositions_run_as_jobs(cluster: Any, storage: Path) -> None:
    """Two compositions with one slot: each becomes a Job running the real
    ``mixer-ext compose``, the second only once the first ended; progress and the result
    come back through the status file on the shared storage; the mix holds both tones at
    their times.  A composition whose recording is missing fails with the Job's reason;
    a cancelled one deletes its Job; the job and status files are cleaned up."""
    kube, kubelet, batch = cluster
    runner = KubeCompositionJobs(_template(storage), batch, max_jobs=1, poll=0.1)
    progress: dict[str, list[float]] = {"CJ1": [], "CJ2": []}
    running_at_start: list[int] = []

    def started() -> None:
        running_at_start.append(sum(1 for j in kube.jobs.values() if "status" not in j))

    one, two = (
        asyncio.create_task(runner.run(_job(storage, sid), progress[sid].append, started))
        for sid in ("CJ1", "CJ2")
    )
    first, second = await asyncio.wait_for(asyncio.gather(one, two), 120)
    # bounded: each started with no other Job running
    assert running_at_start == [0, 0], running_at_start
    assert kubelet.started == [compose_job_name("CJ1"), compose_job_name("CJ2")]
    for sid, result in (("CJ1", first), ("CJ2", second)):
        assert abs(result.duration - 3.0) < 0.01 and result.channels == 1
        assert result.levels == storage / f"compositions/{sid}-levels.json"
        # (a 3 s mix ends between two polls: only its last progress may be seen)
        assert progress[sid][-1] == 1.0 and progress[sid] == sorted(progress[sid]), progress
        pcm = decode_timeline(storage / f"compositions/{sid}.webm", keep_start=True)
        assert tone_level(pcm, 440, 0.2, 0.8) > 0.2 and tone_level(pcm, 1000, 0.2, 0.8) < 0.01
        assert tone_level(pcm, 1000, 2.2, 2.8) > 0.2 and tone_level(pcm, 440, 2.2, 2.8) < 0.01
        assert not any(p.exists() for p in job_files(runner.t, sid))
        assert kube.jobs[compose_job_name(sid)]["status"] == {"succeeded": 1}

    # a recording missing: the Job fails (exit 1), the reason names the file
    with pytest.raises(CompositionFailed, match=r"RTgone\.mka.*Job compose-cj3"):
        await asyncio.wait_for(runner.run(_job(storage, "CJ3", missing=True)), 60)
    assert not (storage / "compositions/CJ3.webm").exists()

    # cancelled (the composition deleted): its Job is deleted, its process killed
    hold = threading.Event()
    kubelet.hold = hold
    task = asyncio.create_task(runner.run(_job(storage, "CJ4")))
    for _ in range(200):
        if compose_job_name("CJ4") in kube.jobs:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert compose_job_name("CJ4") not in kube.jobs
    hold.set()
    assert runner.running == 0
    # the room server's Role in the chart grants exactly these calls
    assert kube.calls == _granted_to_the_room_server()


@pytest.mark.slow
async def test_a_stopping_server_leaves_its_job_and_the_next_one_follows_it(
    cluster: Any, storage: Path
) -> None:
    """The room server stops (``close`` then its runs cancelled) while a Job is pending:
    the Job stays; the restarted server's run of the same composition finds it (409),
    follows it rather than start a second writer, and gets its result."""
    kube, kubelet, batch = cluster
    hold = threading.Event()
    kubelet.hold = hold
    runner = KubeCompositionJobs(_template(storage), batch, poll=0.1)
    task = asyncio.create_task(runner.run(_job(storage, "CJ5")))
    for _ in range(200):
        if compose_job_name("CJ5") in kube.jobs:
            break
        await asyncio.sleep(0.05)
    runner.close()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert compose_job_name("CJ5") in kube.jobs
    assert job_files(runner.t, "CJ5")[0].exists()  # the pod still reads its job

    again = KubeCompositionJobs(_template(storage), batch, poll=0.1)
    follow = asyncio.create_task(again.run(_job(storage, "CJ5")))
    await asyncio.sleep(0.3)
    hold.set()
    result = await asyncio.wait_for(follow, 60)
    assert abs(result.duration - 3.0) < 0.01
    assert kubelet.started == [compose_job_name("CJ5")]  # one Job, one writer
    assert kube.calls <= _granted_to_the_room_server()


def _granted_to_the_room_server() -> set[tuple[str, str, str]]:
    """(group, resource, verb) of the chart's Role for the room server (the committed
    rendering of helm/examples/room-server.yaml, kept up to date by tests/deploy/test_helm.py)."""
    import yaml

    rendering = ROOT / "helm" / "rendered" / "room-server.yaml"
    (role,) = [d for d in yaml.safe_load_all(rendering.read_text()) if d and d["kind"] == "Role"]
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_kubernetes_runner_needs_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from mixer_ext.errors import ConfigError
    from mixer_ext.settings import load_settings

    monkeypatch.setenv("MIXER_COMPOSITION_RUNNER", "kubernetes")
    monkeypatch.setenv("MIXER_RECORDINGS_DIR", "/recordings")
    with pytest.raises(ConfigError, match="MIXER_COMPOSITION_KUBE_IMAGE"):
        load_settings()
    monkeypatch.setenv("MIXER_COMPOSITION_KUBE_IMAGE", "mixer-ext:0.1.0")
    monkeypatch.setenv("MIXER_COMPOSITION_KUBE_CLAIM", "rec")
    monkeypatch.setenv("MIXER_RECORDINGS_DIR", "recordings")
    with pytest.raises(ConfigError, match="absolute MIXER_RECORDINGS_DIR"):
        load_settings()
    monkeypatch.setenv("MIXER_RECORDINGS_DIR", "/recordings")
    monkeypatch.setenv("MIXER_COMPOSITION_KUBE_POD_SPEC", '{"hostNetwork": true}')
    with pytest.raises(ConfigError, match="hostNetwork not allowed"):
        load_settings()
    monkeypatch.setenv("MIXER_COMPOSITION_KUBE_POD_SPEC", '{"nodeSelector": {"a": "b"}}')
    s = load_settings()
    t = ComposeJobTemplate.from_settings(s)
    assert (t.image, t.claim, t.root, t.pod_spec) == (
        "mixer-ext:0.1.0", "rec", Path("/recordings"), {"nodeSelector": {"a": "b"}},
    )  # fmt: skip


def test_the_charts_room_server_builds_jobs_that_share_its_recordings() -> None:
    """The committed rendering of helm/examples/room-server.yaml: the room server's own
    env (its MIXER_* values) makes a composition Job with the chart's image, mounting the
    rendered recordings claim (ReadWriteMany) at the room server's own mount path, with a
    pod as restricted as the chart's; the server runs as the ServiceAccount the Role is
    bound to, and no credential is a literal value."""
    import yaml

    from mixer_ext.settings import Settings

    rendering = ROOT / "helm" / "rendered" / "room-server.yaml"
    docs = [d for d in yaml.safe_load_all(rendering.read_text()) if d]
    (deploy,) = [
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-room-server")
    ]
    pod = deploy["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    for secret in ("MIXER_ROOM_SECRET", "MIXER_ACCOUNT_SID", "MIXER_API_KEYS", "MIXER_AUTH_TOKEN"):
        assert env[secret] is None, secret  # by secretKeyRef only
    settings = Settings(
        **{k.removeprefix("MIXER_").lower(): v for k, v in env.items() if v is not None}
    )
    job = build_compose_job(ComposeJobTemplate.from_settings(settings), "CJ" + "b" * 32)
    kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)
    (pvc,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    (claim,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claim["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    (mount,) = [m for m in server["volumeMounts"] if m["name"] == claim["name"]]
    job_pod = job["spec"]["template"]["spec"]
    (c,) = job_pod["containers"]
    assert c["image"] == server["image"]
    assert {
        "name": "recordings",
        "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]},
    } in job_pod["volumes"]
    assert {"name": "recordings", "mountPath": mount["mountPath"]} in c["volumeMounts"]
    assert job_pod["securityContext"] == pod["securityContext"]
    assert c["securityContext"] == server["securityContext"]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
    assert pod["automountServiceAccountToken"] is True
