"""The Helm chart, rendered and linted by Helm's own engine (tests/deploy/helm_engine.py).

What a user relies on: ``helm lint`` passes for every example, values that install are
exactly the values the worker accepts (schema mirrors mixer_ext/context.py; Helm's own
validator and jsonschema agree on it), the committed reference renderings are what Helm
renders from the chart, they are valid Kubernetes objects (kubernetes-validate, strict,
offline), no credential or stream key ever lands in a ConfigMap, and the Job has the
shape the issue asks for (OnFailure, bounded retries, deadline above the maximum
duration, non-root, read-only root, probes on /healthz and /readyz).

Tests that need Helm's library take the ``helm`` fixture: without the library (``make
helm-lib`` fetches it) they fail under CI=true and skip elsewhere, with the reason.  The
checks of the committed renderings need only those files.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mixer_ext.context import parse_context
from mixer_ext.errors import ConfigError
from mixer_ext.settings import JitterBufferSize
from tests.deploy.helm_engine import (
    CHART_DIR,
    RENDERED_DIR,
    ROOT,
    Helm,
    HelmError,
    HelmUnavailable,
    TemplateError,
    coalesce,
    example_release,
    examples,
    iter_values_paths,
    load_yaml,
    render_example,
)
from tests.deploy.helm_engine import helm as load_helm
from tests.support.env import IN_CI

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
DEFAULTS = load_yaml(CHART_DIR / "values.yaml")
EXAMPLES = examples()
#: the examples that render the per-room Job (api.yaml is API-only: job.enabled false)
JOB_EXAMPLES = [e for e in EXAMPLES if (load_yaml(e).get("job") or {}).get("enabled", True)]
API_EXAMPLES = [e for e in EXAMPLES if (load_yaml(e).get("api") or {}).get("enabled", False)]
#: the oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest bundled
K8S_VERSIONS = ["1.25.0", kubernetes_validate.latest_version()]


def _validator() -> jsonschema.Draft7Validator:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    return jsonschema.Draft7Validator(SCHEMA)


def _merged(override: dict[str, Any]) -> dict[str, Any]:
    """values.yaml with ``override`` on top, as Helm merges before validating."""
    return coalesce(copy.deepcopy(DEFAULTS), override)


def _errors(values: dict[str, Any]) -> list[str]:
    return [e.message for e in _validator().iter_errors(values)]


def _docs(example: Path) -> list[dict[str, Any]]:
    text = (RENDERED_DIR / example.name).read_text(encoding="utf-8")
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="module")
def helm() -> Helm:
    """Helm's engine; without its library: a failure under CI=true, a skip elsewhere."""
    try:
        return load_helm()
    except HelmUnavailable as exc:
        if IN_CI:
            pytest.fail(f"{exc} (CI fetches it with `make helm-lib`)")
        pytest.skip(str(exc))


def _render(
    helm: Helm, override: dict[str, Any], release: str = "room-test"
) -> list[dict[str, Any]]:
    return helm.render(CHART_DIR, override, release).docs()


def _lint_findings(helm: Helm, values: dict[str, Any] | None) -> list[str]:
    """What ``helm lint`` reports beyond INFO (helm lint fails on ERROR, --strict on WARNING)."""
    return [str(m) for m in helm.lint(CHART_DIR, values) if m.severity != "INFO"]


def _one(docs: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"expected one {kind}*{suffix}, got {[d['metadata'] for d in found]}"
    return found[0]


BASE = {"context": {"room": {"name": "RM1"}}, "settings": {"roomUrl": "ws://rooms:7880"}}


# --------------------------------------------------------------------------- values schema
def test_the_schema_offers_every_jitter_buffer_mode_the_worker_knows() -> None:
    # MIXER_JITTER_BUFFER=adaptive (issue 27.3) must be choosable through the chart
    enum = SCHEMA["properties"]["settings"]["properties"]["jitterBuffer"]["enum"]
    assert enum == [s.value for s in JitterBufferSize]


def test_values_yaml_validates_against_the_schema() -> None:
    assert _errors(DEFAULTS) == []


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3, EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_against_the_schema(example: Path) -> None:
    assert _errors(_merged(load_yaml(example))) == []


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_helm_lint_passes_for_the_example(helm: Helm, example: Path) -> None:
    """Helm's own lint rules (chart metadata, schema, every template renders to valid
    YAML with valid names, deprecated APIs), strict: no warning either."""
    assert _lint_findings(helm, load_yaml(example)) == []


def test_helm_lint_can_fail(helm: Helm, tmp_path: Path) -> None:
    """The lint above sees a broken template and a resource name Kubernetes refuses."""
    chart = tmp_path / "mixer-ext"
    shutil.copytree(CHART_DIR, chart)
    (chart / "templates" / "broken.yaml").write_text("a: [\n", encoding="utf-8")
    (chart / "templates" / "badname.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_A_Name\n", encoding="utf-8"
    )
    findings = [str(m) for m in helm.lint(chart, load_yaml(EXAMPLES[0]))]
    assert "[ERROR] templates/broken.yaml" in findings
    assert "[WARNING] templates/badname.yaml" in findings


BAD_VALUES: dict[str, dict[str, Any]] = {
    "audioBitrate 999": {"context": {"audioBitrate": 999}},
    "audioBitrate 31": {"context": {"audioBitrate": 31}},
    "audioBitrate as a string": {"context": {"audioBitrate": "128"}},
    "audioBitrate fractional": {"context": {"audioBitrate": 128.5}},
    "duration 90000": {"context": {"maxParticipantDuration": 90000}},
    "duration 0": {"context": {"maxParticipantDuration": 0}},
    "no outputs at all": {"context": {"outputs": []}, "rtmpOutputs": []},
    "17 outputs": {"context": {"outputs": [f"hls:o{i}" for i in range(17)]}},
    "rtmp url in the context (ConfigMap)": {
        "context": {"outputs": ["rtmp://live.example.com/app/KEY"]}
    },
    "unknown output": {"context": {"outputs": ["ftp://x/y/z"]}},
    "hls name with a slash": {"context": {"outputs": ["hls:a/b"]}},
    "recording with a bad extension": {"context": {"outputs": ["file:rec.wav"]}},
    "duplicate outputs": {"context": {"outputs": ["hls:main", "hls:main"]}},
    "room name of 257 characters": {"context": {"room": {"name": "r" * 257}}},
    "blank room name": {"context": {"room": {"name": "   "}}},
    "identity with a newline": {"context": {"identity": "bot\nx"}},
    "identity of 129 characters": {"context": {"identity": "i" * 129}},
    "unknown context field": {"context": {"bitrate": 128}},
    "rtmp output without a stream key": {"rtmpOutputs": [{"url": "rtmp://live.example.com/app"}]},
    "rtmp output neither url nor secretKeyRef": {"rtmpOutputs": [{"name": "x"}]},
    "unknown top-level value": {"contxt": {}},
    "bad log format": {"settings": {"logFormat": "xml"}},
    "bad playlist type": {"settings": {"hlsPlaylistType": "vod"}},
    "room url not a websocket": {"settings": {"roomUrl": "http://rooms:7880"}},
    "backoffLimit 50": {"job": {"backoffLimit": 50}},
}


@pytest.mark.parametrize("override", BAD_VALUES.values(), ids=list(BAD_VALUES))
def test_bad_values_are_rejected_by_the_schema(helm: Helm, override: dict[str, Any]) -> None:
    """By jsonschema (which says why) and by Helm's own validator (what installs)."""
    assert _errors(_merged(BASE)) == []
    assert _errors(_merged(coalesce(BASE, override))) != []
    assert "[ERROR] values.yaml" in _lint_findings(helm, coalesce(BASE, override))


def test_base_values_pass_helm_lint(helm: Helm) -> None:
    """The values every bad case above starts from are fine: the case is what fails."""
    assert _lint_findings(helm, BASE) == []


# The schema mirrors the worker: a context the chart accepts is one the worker accepts,
# and the other way round (RTMP aside: the chart takes those through rtmpOutputs).
CONTEXT_CASES: list[dict[str, Any]] = [
    {"audioBitrate": b} for b in (31, 32, 128, 320, 321)
] + [
    {"maxParticipantDuration": d} for d in (0, 1, 14400, 86400, 86401)
] + [
    {"room": {"name": n}} for n in ("", " ", "a", "RM 1", "x" * 256, "x" * 257)
] + [
    {"identity": i}
    for i in ("", " ", "audio-mixer-v1", "émile", "a\tb", "a\x7fb", "i" * 128, "i" * 129)
] + [
    {"outputs": o}
    for o in (
        [],
        ["hls:main"],
        ["HLS:main"],
        ["hls:"],
        ["hls:.hidden"],
        ["hls:" + "n" * 128],
        ["hls:" + "n" * 129],
        ["VJ" + "0123456789abcdef" * 2],
        ["VJ" + "0123456789abcdef" * 2 + "0"],
        ["file:rec.m4a"],
        ["file:/data/x/rec.MP4"],
        ["file:rec.ts"],
        ["file:rec.wav"],
        ["file:"],
        ["hls:a", "hls:a"],
        ["hls:a", "file:a.ts"],
        [f"hls:o{i}" for i in range(16)],
        [f"hls:o{i}" for i in range(17)],
        ["gopher://x"],
    )
]  # fmt: skip


@pytest.mark.parametrize("case", CONTEXT_CASES, ids=lambda c: json.dumps(c)[:60])
def test_schema_and_chart_accept_exactly_what_the_worker_accepts(
    helm: Helm, case: dict[str, Any]
) -> None:
    context = {
        "room": {"name": "RM1"},
        "identity": "audio-mixer-v1",
        "outputs": ["hls:main"],
        "audioBitrate": 128,
        "maxParticipantDuration": 14400,
    } | case
    try:
        parse_context(json.dumps(context))
        worker_ok = True
    except ConfigError:
        worker_ok = False
    values = _merged({"context": context, "settings": BASE["settings"]})
    values["context"]["outputs"] = context["outputs"]  # lists replace, never merge
    schema_ok = not _errors(values)
    try:  # Helm validates the schema and renders: what `helm install` would do
        _render(helm, {"context": context, "settings": BASE["settings"]})
        chart_ok = True
    except HelmError:
        chart_ok = False
    assert chart_ok == worker_ok, f"chart {'accepts' if chart_ok else 'refuses'} {case}"
    if worker_ok:
        assert schema_ok, f"jsonschema refuses what Helm and the worker accept: {case}"


# --------------------------------------------------------------------------- templates
def test_every_values_path_in_the_templates_exists_in_values_yaml() -> None:
    paths = list(iter_values_paths())
    assert len(paths) > 40
    missing = []
    for path, where in paths:
        node: Any = DEFAULTS
        for key in path.split("."):
            if not isinstance(node, dict) or key not in node:
                missing.append(f"{where}: .Values.{path}")
                break
            node = node[key]
    assert missing == []


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_reference_rendering_is_up_to_date(helm: Helm, example: Path) -> None:
    committed = RENDERED_DIR / example.name
    assert committed.exists(), f"{committed} missing: run `make helm-render`"
    assert render_example(example, helm) == committed.read_text(encoding="utf-8"), (
        f"{committed.relative_to(ROOT)} is stale: run `make helm-render` and commit it"
    )


def test_a_chart_change_makes_the_rendering_stale(helm: Helm, tmp_path: Path) -> None:
    """The check above can fail: Helm renders the chart, not the committed file."""
    chart = tmp_path / "mixer-ext"
    shutil.copytree(CHART_DIR, chart)
    job = chart / "templates" / "job.yaml"
    job.write_text(
        job.read_text(encoding="utf-8").replace("restartPolicy: OnFailure", "restartPolicy: Never")
    )
    example = JOB_EXAMPLES[0]
    values, release = load_yaml(example), example_release(example)
    ours = helm.render(CHART_DIR, values, release).text()
    changed = helm.render(chart, values, release).text()
    assert ours in (RENDERED_DIR / example.name).read_text(encoding="utf-8")
    assert "restartPolicy: Never" in changed and changed != ours


def test_no_rendering_without_an_example() -> None:
    assert sorted(p.name for p in RENDERED_DIR.glob("*.yaml")) == [p.name for p in EXAMPLES]


# --------------------------------------------------------------------------- Kubernetes objects
#: ServiceMonitor is a Prometheus Operator CRD that kubernetes-validate does not ship; this
#: is the part of its monitoring.coreos.com/v1 API the chart writes, strict likewise.
_DURATION = {"type": "string", "pattern": "^(0|([0-9]+(ms|s|m|h))+)$"}
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "endpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                        },
                    },
                },
            },
        },
    },
}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_reference_rendering_validates_as_kubernetes_objects(example: Path, version: str) -> None:
    docs = _docs(example)
    kinds = {d["kind"] for d in docs}
    assert {"ConfigMap", "Service"} <= kinds and ({"Job", "Deployment"} & kinds)
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
            continue
        # raises ValidationError (or SchemaNotFoundError for an unknown kind)
        kubernetes_validate.validate(doc, version, strict=True)


#: the volume types Pod Security "restricted" allows
_RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What keeps a pod spec from the Pod Security Standard "restricted" (the rules of
    the Kubernetes documentation's profile, as the admission controller applies them;
    no API server runs here to apply them)."""
    out: list[str] = []
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            out.append(host)
    for v in pod.get("volumes", []):
        kind = next(k for k in v if k != "name")
        if kind not in _RESTRICTED_VOLUMES:
            out.append(f"volume {v['name']}: {kind}")
    psc = pod.get("securityContext", {})
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation not false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            out.append(f"{name}: capabilities not dropping ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: adds capabilities")
        if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            out.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile {seccomp}")
        if c.get("ports") and any(p.get("hostPort") for p in c["ports"]):
            out.append(f"{name}: hostPort")
    return out


def _pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{d['kind']} {d['metadata']['name']}", d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in ("Job", "Deployment")
    ]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_pod_meets_the_restricted_pod_security_standard(example: Path) -> None:
    pods = _pod_specs(_docs(example))
    assert pods
    for where, pod in pods:
        assert restricted_violations(pod) == [], where


def test_the_restricted_check_can_fail() -> None:
    (_, pod), *_ = _pod_specs(_docs(JOB_EXAMPLES[0]))
    pod = copy.deepcopy(pod)
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    pod["securityContext"].pop("seccompProfile")
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert restricted_violations(pod) == [
        "volume host: hostPath",
        "room-token: seccompProfile None",
        "context: seccompProfile None",
        "mixer: allowPrivilegeEscalation not false",
        "mixer: seccompProfile None",
    ]


def test_strict_validation_catches_a_misplaced_field() -> None:
    """The check above can fail: a field in the wrong place is refused."""
    job = _one(_docs(JOB_EXAMPLES[0]), "Job")
    job["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSIONS[-1], strict=True)


def test_hls_ingress_extra_validates() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "helm/extras/hls-ingress.yaml").read_text()) if d]
    assert [d["kind"] for d in docs] == ["Ingress"]
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(docs[0], version, strict=True)


# --------------------------------------------------------------------------- secrets
def _example_secret_values(example: Path) -> set[str]:
    values = load_yaml(example)
    found = {v for v in (values.get("secrets") or {}).values() if isinstance(v, str) and v}
    found.discard((values.get("secrets") or {}).get("existingSecret", ""))
    found |= {o["url"] for o in values.get("rtmpOutputs") or [] if "url" in o}
    return found


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_no_secret_value_appears_in_a_configmap(example: Path) -> None:
    docs = _docs(example)
    secret_values = _example_secret_values(example)
    for doc in docs:
        if doc["kind"] == "Secret":
            for v in (doc.get("data") or {}).values():
                secret_values.add(base64.b64decode(v).decode())
            secret_values |= set((doc.get("stringData") or {}).values())
    configmaps = [d for d in docs if d["kind"] == "ConfigMap"]
    assert configmaps
    for cm in configmaps:
        blob = json.dumps(cm)
        for value in secret_values:
            assert value not in blob, f"a Secret value is in ConfigMap {cm['metadata']['name']}"
        assert not re.search(r"rtmps?://", blob, re.IGNORECASE), "an RTMP URL is in a ConfigMap"
    # nor in the pod spec as a literal: credentials only as secretKeyRef
    for doc in docs:
        if doc["kind"] in ("Job", "Deployment"):
            blob = json.dumps(doc)
            for value in secret_values:
                assert value not in blob, f"a Secret value is written into {doc['kind']}"


def test_the_secret_check_can_fail() -> None:
    """Feed the check a value that is in a ConfigMap: it must notice."""
    example = next(p for p in EXAMPLES if _example_secret_values(p))
    docs = _docs(example)
    cm = _one(docs, "ConfigMap", "-env")
    leaked = next(iter(_example_secret_values(example)))
    cm["data"]["LEAK"] = leaked
    assert leaked in json.dumps(cm)


def test_every_example_with_credentials_has_them_in_a_secret() -> None:
    for example in EXAMPLES:
        values = load_yaml(example)
        docs = _docs(example)
        existing = (values.get("secrets") or {}).get("existingSecret")
        if existing:
            assert not [d for d in docs if d["kind"] == "Secret"]
            continue
        secret = _one(docs, "Secret")
        stored = {base64.b64decode(v).decode() for v in secret["data"].values()}
        assert _example_secret_values(example) <= stored


# --------------------------------------------------------------------------- the Job
@pytest.mark.parametrize("example", JOB_EXAMPLES, ids=lambda p: p.name)
def test_job_shape(example: Path) -> None:
    values = _merged(load_yaml(example))
    docs = _docs(example)
    job = _one(docs, "Job")
    spec = job["spec"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure"
    assert 0 <= spec["backoffLimit"] <= 3
    max_duration = values["context"]["maxParticipantDuration"]
    assert max_duration < spec["activeDeadlineSeconds"] <= max_duration + 3600
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    (mixer,) = pod["containers"]
    assert mixer["command"] + mixer["args"] == [
        "mixer-ext",
        "run",
        "--context",
        "/run/mixer/context.json",
    ]
    for container in pod["containers"] + pod["initContainers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
    assert mixer["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert mixer["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    env_cm = _one(docs, "ConfigMap", "-env")["data"]
    ports = {p["name"]: p["containerPort"] for p in mixer["ports"]}
    assert env_cm["MIXER_HTTP_HOST"] == "0.0.0.0"
    assert int(env_cm["MIXER_HTTP_PORT"]) == ports["http"]
    assert int(env_cm["MIXER_METRICS_PORT"]) == ports["metrics"]
    # HLS goes to a writable volume, not the read-only root
    mounts = {m["mountPath"]: m["name"] for m in mixer["volumeMounts"]}
    assert env_cm["MIXER_HLS_DIR"].startswith("/data/")
    assert mounts["/data"] == "data" and mounts["/tmp"] == "tmp"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["data"] or "persistentVolumeClaim" in volumes["data"]
    assert volumes["context"]["emptyDir"]["medium"] == "Memory"
    # the Service selects this pod and names both ports
    (service,) = [
        d
        for d in docs
        if d["kind"] == "Service"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "mixer"
    ]
    labels = spec["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http", "metrics"}


def test_grace_period_covers_the_workers_drain() -> None:
    """job.terminationGracePeriodSeconds (the chart's Job, and the API's Jobs through
    MIXER_API_KUBE_GRACE_SECONDS) outlasts the worker's shutdown after SIGTERM: one
    budget, MIXER_SHUTDOWN_BUDGET, shared out among the stages (worker/budget.py; the
    HLS linger is skipped after a signal), plus a margin for the interpreter's exit."""
    from mixer_ext.api.config import ApiSettings
    from mixer_ext.settings import Settings

    grace = DEFAULTS["job"]["terminationGracePeriodSeconds"]
    budget = Settings.model_fields["shutdown_budget"].default
    # the chart hands the worker its budget (MIXER_SHUTDOWN_BUDGET), the worker's default
    assert DEFAULTS["settings"]["shutdownBudget"] == budget
    assert grace >= budget + 5, (grace, budget)
    # `mixer-ext api` outside the chart builds Jobs with the chart's defaults too
    api = ApiSettings.model_fields
    assert api["api_kube_grace_seconds"].default == grace
    assert api["api_kube_resources"].default == DEFAULTS["resources"]
    assert api["api_kube_data_size_limit"].default == DEFAULTS["data"]["sizeLimit"]


def test_deadline_follows_the_maximum_duration(helm: Helm) -> None:
    docs = _render(
        helm,
        BASE
        | {
            "context": {"room": {"name": "R"}, "maxParticipantDuration": 60},
            "job": {"deadlineMarginSeconds": 120},
        },
    )
    assert _one(docs, "Job")["spec"]["activeDeadlineSeconds"] == 180


def test_room_server_is_off_by_default_and_service_monitor_too(helm: Helm) -> None:
    kinds = [d["kind"] for d in _render(helm, BASE)]
    assert "Deployment" not in kinds and "ServiceMonitor" not in kinds
    assert sorted(kinds) == ["ConfigMap", "ConfigMap", "Job", "Secret", "Service"]


def test_room_server_release_points_the_mixer_at_it(helm: Helm) -> None:
    docs = _render(
        helm,
        {
            "context": {"room": {"name": "R"}},
            "secrets": {"roomSecret": "s3cret"},
            "roomServer": {"enabled": True},
        },
    )
    deployment = _one(docs, "Deployment")
    service = _one(docs, "Service", "-room-server")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] + container["args"] == [
        "mixer-ext", "room-server", "--host", "0.0.0.0", "--port", "7880",
    ]  # fmt: skip
    env_cm = _one(docs, "ConfigMap", "-env")["data"]
    assert env_cm["MIXER_ROOM_URL"] == f"ws://{service['metadata']['name']}:7880"


def test_room_server_recordings_off_or_local(helm: Helm) -> None:
    """Recordings off (the default): no volume, no claim, no service-account token.  On
    with the local runner on an existing ReadWriteOnce claim: the volume and the settings,
    still no token, no Role and no claim of the chart's own."""
    base = {
        "context": {"room": {"name": "R"}},
        "secrets": {
            "roomSecret": "s3cret",
            "accountSid": "AC" + "0" * 32,
            "apiKeys": "SK" + "0" * 32 + ":k",
        },
    }
    off = _render(helm, base | {"roomServer": {"enabled": True}})
    pod = _one(off, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert "MIXER_RECORDINGS_DIR" not in _env(pod["containers"][0])
    local = _render(
        helm,
        base
        | {
            "roomServer": {
                "enabled": True,
                "recordings": {
                    "enabled": True,
                    "persistence": {"existingClaim": "mine", "accessMode": "ReadWriteOnce"},
                    "compositions": {"runner": "local", "maxConcurrent": 3},
                },
            }
        },
    )
    kinds = {d["kind"] for d in local}
    assert not kinds & {"PersistentVolumeClaim", "Role", "RoleBinding", "ServiceAccount"}
    pod = _one(local, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert {"name": "recordings", "persistentVolumeClaim": {"claimName": "mine"}} in pod["volumes"]
    env = _env(pod["containers"][0])
    assert env["MIXER_COMPOSITION_RUNNER"]["value"] == "local"
    assert env["MIXER_COMPOSITION_WORKERS"]["value"] == "3"
    assert "MIXER_COMPOSITION_KUBE_IMAGE" not in env


REFUSED_RENDERS: dict[str, tuple[dict[str, Any], str]] = {
    "no room name": ({"settings": BASE["settings"]}, "context.room.name is required"),
    "embedded backend without a room url": (
        {"context": {"room": {"name": "R"}}},
        "settings.roomUrl is required",
    ),
    "janus without its url": (
        {"context": {"room": {"name": "R"}}, "settings": {"roomBackend": "janus"}},
        "settings.janusUrl is required",
    ),
    "url output with an existing secret": (
        BASE
        | {
            "secrets": {"existingSecret": "mine"},
            "rtmpOutputs": [{"url": "rtmp://h/app/KEY"}],
        },
        "give secretKeyRef instead of url",
    ),
    "secretKeyRef without a secret name": (
        BASE | {"rtmpOutputs": [{"secretKeyRef": {"key": "yt"}}]},
        "secretKeyRef.name is required",
    ),
    "room server without its secret": (
        {"context": {"room": {"name": "R"}}, "roomServer": {"enabled": True}},
        "roomServer.enabled needs secrets.roomSecret",
    ),
    "recordings without the twilio front-end's credentials": (
        {
            "context": {"room": {"name": "R"}},
            "secrets": {"roomSecret": "s3cret", "accountSid": "AC" + "0" * 32},
            "roomServer": {"enabled": True, "recordings": {"enabled": True}},
        },
        "roomServer.recordings.enabled needs secrets.accountSid and secrets.apiKeys",
    ),
    "composition jobs on a ReadWriteOnce claim": (
        {
            "context": {"room": {"name": "R"}},
            "secrets": {
                "roomSecret": "s3cret",
                "accountSid": "AC" + "0" * 32,
                "apiKeys": "SK" + "0" * 32 + ":k",
            },
            "roomServer": {
                "enabled": True,
                "recordings": {"enabled": True, "persistence": {"accessMode": "ReadWriteOnce"}},
            },
        },
        "runner kubernetes needs persistence.accessMode ReadWriteMany",
    ),
    "grace period shorter than the shutdown budget": (
        BASE
        | {
            "job": {"terminationGracePeriodSeconds": 40},
            "settings": BASE["settings"] | {"shutdownBudget": 36},
        },
        "job.terminationGracePeriodSeconds must be at least settings.shutdownBudget + 5",
    ),
    "17 outputs in all": (
        BASE | {"rtmpOutputs": [{"url": f"rtmp://h/app/K{i}"} for i in range(16)]},
        "at most 16 outputs",
    ),
}


@pytest.mark.parametrize("case", REFUSED_RENDERS.values(), ids=list(REFUSED_RENDERS))
def test_render_refuses_with_one_clear_line(helm: Helm, case: tuple[dict[str, Any], str]) -> None:
    override, message = case
    with pytest.raises(TemplateError, match=re.escape(message)):
        _render(helm, override)


def test_notes_render_for_the_release_and_namespace(helm: Helm) -> None:
    rendering = helm.render(CHART_DIR, BASE, "room-rm1", namespace="rooms")
    assert "job/room-rm1-mixer-ext" in rendering.notes and '"RM1"' in rendering.notes
    assert "kubectl --namespace rooms get job room-rm1-mixer-ext" in rendering.notes


# --------------------------------------------------------------------------- the API
API_SECRETS = {
    "authToken": "api-auth-t0ken-s3cret",
    "accountSid": "AC" + "2" * 32,
    "apiKeys": "SK" + "1" * 32 + ":api-key-s3cret",
    "roomSecret": "room-signing-s3cret",
}
API_ONLY: dict[str, Any] = {
    "job": {"enabled": False},
    "settings": {"roomUrl": "ws://rooms:7880"},
    "secrets": API_SECRETS,
    "api": {"enabled": True, "publicUrl": "https://media.example.com"},
}


def _labels_select(selector: dict[str, str], pod_labels: dict[str, str]) -> bool:
    return selector.items() <= pod_labels.items()


def test_api_only_install(helm: Helm) -> None:
    """job.enabled false + api.enabled: the API and what it needs, no Job, no room name;
    the credentials are in the Secret and reach the pod only by reference."""
    rendering = helm.render(CHART_DIR, API_ONLY, "media", namespace="media")
    assert 'client.media.base_url = "https://media.example.com"' in rendering.notes
    assert rendering.notes.startswith("Media v1 API: deployment/media-mixer-ext-api")
    docs = _render(helm, API_ONLY, "media")
    assert sorted(d["kind"] for d in docs) == [
        "ConfigMap", "Deployment", "PersistentVolumeClaim", "PodDisruptionBudget", "Role",
        "RoleBinding", "Secret", "Service", "ServiceAccount",
    ]  # fmt: skip
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
    secret = _one(docs, "Secret")
    stored = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert stored == {
        "auth-token": API_SECRETS["authToken"],
        "account-sid": API_SECRETS["accountSid"],
        "api-keys": API_SECRETS["apiKeys"],
        "room-secret": API_SECRETS["roomSecret"],
    }
    for doc in docs:
        if doc["kind"] != "Secret":
            blob = json.dumps(doc)
            for value in API_SECRETS.values():
                assert value not in blob, f"a credential is written into {doc['kind']}"
    deployment = _one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # one SQLite owner
    pod = deployment["spec"]["template"]["spec"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (api,) = pod["containers"]
    assert api["command"] + api["args"] == [
        "mixer-ext", "api", "--host", "0.0.0.0", "--port", "8080",
    ]  # fmt: skip
    env = {e["name"]: e for e in api["env"]}
    assert env["MIXER_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "auth-token",
    }  # required: the pod does not start without it
    assert env["MIXER_API_KEYS"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert all("valueFrom" in e for e in api["env"])  # nothing literal in the pod spec
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = api["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert api[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["resources"]["limits"]["memory"]
    # the database and data directory on the PVC the chart made
    settings = _one(docs, "ConfigMap", "-api-env")["data"]
    mounts = {m["mountPath"]: m["name"] for m in api["volumeMounts"]}
    assert settings["MIXER_API_DATA_DIR"] == "/data" and mounts["/data"] == "data"
    volumes = {v["name"]: v for v in pod["volumes"]}
    pvc = _one(docs, "PersistentVolumeClaim")
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # the Service and the PDB select the pod; the pod runs as the bound ServiceAccount
    service = _one(docs, "Service")
    assert _labels_select(service["spec"]["selector"], pod_labels)
    assert service["metadata"]["name"] in settings["MIXER_API_INTERNAL_URL"]
    pdb = _one(docs, "PodDisruptionBudget")
    assert _labels_select(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    account = _one(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["serviceAccountName"] == account and pod["automountServiceAccountToken"] is True
    binding = _one(docs, "RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": "default"}
    ]
    assert binding["roleRef"]["name"] == _one(docs, "Role")["metadata"]["name"]
    assert settings["MIXER_API_LAUNCHER"] == "kubernetes"
    assert settings["MIXER_API_KUBE_ROOM_SECRET"] == secret["metadata"]["name"]


def test_api_without_persistence_uses_an_empty_dir(helm: Helm) -> None:
    docs = _render(helm, coalesce(API_ONLY, {"api": {"persistence": {"enabled": False}}}))
    assert "PersistentVolumeClaim" not in [d["kind"] for d in docs]
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}


API_REFUSALS: dict[str, tuple[dict[str, Any], str]] = {
    "no public url": (coalesce(API_ONLY, {"api": {"publicUrl": ""}}), "api.publicUrl is required"),
    "no auth token": (
        coalesce(API_ONLY, {"secrets": {"authToken": ""}}),
        "api.enabled needs secrets.authToken",
    ),
    "no room url": (
        coalesce(API_ONLY, {"settings": {"roomUrl": ""}}),
        "settings.roomUrl is required",
    ),
}


@pytest.mark.parametrize("case", API_REFUSALS.values(), ids=list(API_REFUSALS))
def test_api_render_refuses_with_one_clear_line(
    helm: Helm, case: tuple[dict[str, Any], str]
) -> None:
    override, message = case
    with pytest.raises(TemplateError, match=re.escape(message)):
        _render(helm, override)


def _api_environment(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The API container's environment as Kubernetes would give it (ConfigMap and Secret
    references resolved), from a rendering."""
    deployment = _one(docs, "Deployment", "-api")
    (api,) = deployment["spec"]["template"]["spec"]["containers"]
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    secrets = {
        d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d["data"].items()}
        for d in docs
        if d["kind"] == "Secret"
    }
    env: dict[str, str] = {}
    for source in api["envFrom"]:
        env |= configmaps[source["configMapRef"]["name"]]
    for var in api["env"]:
        ref = var["valueFrom"]["secretKeyRef"]
        if ref["key"] in secrets[ref["name"]]:
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def test_the_apis_jobs_have_the_charts_worker_pod(
    helm: Helm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One release with both: the Job the API builds for a processor (mixer_ext/api/kube.py,
    from the settings the chart gives the API) has the chart's own worker pod: image,
    resources, grace period, security, probes, ports, mounts, placement, settings and
    credential references.  What differs by design: the API's Job runs once
    (restartPolicy Never, backoffLimit 0: the API reports a crash as failed) and gets its
    context from its own Secret instead of the init container."""
    from mixer_ext.api.config import load_api_settings
    from mixer_ext.api.kube import JobTemplate, RoomTokenRequest, build_job, job_env

    values = coalesce(
        copy.deepcopy(BASE),
        {
            "secrets": API_SECRETS,
            "api": {"enabled": True, "publicUrl": "https://media.example.com"},
            "resources": {"requests": {"cpu": "300m", "memory": "300Mi"}},
            "job": {"terminationGracePeriodSeconds": 75},
            "data": {"sizeLimit": "3Gi"},
            "image": {"pullPolicy": "Always"},
            "nodeSelector": {"pool": "media"},
            "tolerations": [{"key": "media", "operator": "Exists", "effect": "NoSchedule"}],
            "imagePullSecrets": [{"name": "registry"}],
        },
    )
    docs = _render(helm, values, "media")
    chart_pod = _one(docs, "Job")["spec"]["template"]["spec"]
    (chart,) = chart_pod["containers"]

    environ = _api_environment(docs)
    for key in [k for k in os.environ if k.startswith("MIXER_")]:
        monkeypatch.delenv(key)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    cfg = load_api_settings()  # the chart's settings load as the API would load them
    # the processor's context is the chart's: the API mints the same token for it
    request = RoomTokenRequest.from_context(
        _one(docs, "ConfigMap", "-mixer-ext")["data"]["context.json"]
    )
    api_job = build_job(JobTemplate.from_settings(cfg), "ZX" + "a" * 32, job_env(), request)
    kubernetes_validate.validate(api_job, K8S_VERSIONS[-1], strict=True)
    assert restricted_violations(api_job["spec"]["template"]["spec"]) == []
    assert api_job["metadata"]["namespace"] == "default"
    api_pod = api_job["spec"]["template"]["spec"]
    (ours,) = api_pod["containers"]

    for field in (
        "terminationGracePeriodSeconds", "automountServiceAccountToken", "enableServiceLinks",
        "securityContext", "nodeSelector", "tolerations", "imagePullSecrets",
    ):  # fmt: skip
        assert api_pod.get(field) == chart_pod.get(field), field
    assert api_pod["terminationGracePeriodSeconds"] == 75
    for field in (
        "image", "imagePullPolicy", "command", "args", "workingDir", "resources",
        "securityContext", "livenessProbe", "readinessProbe", "ports",
    ):  # fmt: skip
        assert ours[field] == chart[field], field
    assert [m["mountPath"] for m in ours["volumeMounts"]] == [
        m["mountPath"] for m in chart["volumeMounts"]
    ]
    volumes = {v["name"]: v for v in api_pod["volumes"]}
    chart_volumes = {v["name"]: v for v in chart_pod["volumes"]}
    for name in ("data", "room-token", "tmp"):
        assert volumes[name] == chart_volumes[name], name
    # the init container that mints the worker's room token: the same, field by field
    (token_init,) = [c for c in chart_pod["initContainers"] if c["name"] == "room-token"]
    assert api_pod["initContainers"] == [token_init]
    assert "MIXER_ROOM_SECRET" not in {e["name"] for e in ours["env"]}
    # the same worker settings, and the same credentials by reference from the same Secret
    plain = {e["name"]: e["value"] for e in ours["env"] if "value" in e}
    assert plain == _one(docs, "ConfigMap", "-mixer-ext-env")["data"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in ours["env"]
        if "valueFrom" in e and e["name"] != "MIXER_STATUS_CALLBACK_URL"
    }
    chart_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in chart["env"]
        if e["name"] != "MIXER_STATUS_CALLBACK_URL"
    }
    assert refs == chart_refs
    blob = json.dumps(api_job)
    for value in API_SECRETS.values():
        assert value not in blob, "a credential is written into the API's Job"


# --------------------------------------------------------------------------- the init container
def _configmap_script(tmp_path: Path, docs: list[dict[str, Any]]) -> tuple[Path, Path]:
    """The assembler script and context exactly as the ConfigMap ships them."""
    data = _one(docs, "ConfigMap", "-mixer-ext")["data"]
    script = tmp_path / "assemble-context.py"
    script.write_text(data["assemble-context.py"], encoding="utf-8")
    source = tmp_path / "context.json"
    source.write_text(data["context.json"], encoding="utf-8")
    return script, source


def _run_assembler(
    script: Path, source: Path, dest: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MIXER_")} | env
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, str(script), str(source), str(dest)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_shipped_script_is_the_chart_file() -> None:
    docs = _docs(next(p for p in EXAMPLES if p.name == "room-server.yaml"))
    shipped = _one(docs, "ConfigMap", "-mixer-ext")["data"]["assemble-context.py"]
    assert shipped == (CHART_DIR / "files/assemble-context.py").read_text(encoding="utf-8")


def test_init_container_appends_rtmp_urls_from_the_secret(tmp_path: Path) -> None:
    docs = _docs(next(p for p in EXAMPLES if p.name == "rtmp-existing-secret.yaml"))
    script, source = _configmap_script(tmp_path, docs)
    job = _one(docs, "Job")
    (init,) = [
        c for c in job["spec"]["template"]["spec"]["initContainers"] if c["name"] == "context"
    ]
    env = {e["name"]: e for e in init["env"]}
    assert env["MIXER_CONTEXT_RTMP_COUNT"]["value"] == "2"
    # what the kubelet would inject from the Secret keys the chart references
    secret = {
        "youtube": "rtmps://a.rtmps.youtube.com/live2/yt-KEY",
        "twitch": "rtmp://live.twitch.tv/app/tw-KEY",
    }
    values = {"MIXER_CONTEXT_RTMP_COUNT": "2"}
    for i in range(2):
        ref = env[f"MIXER_CONTEXT_RTMP_{i}"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "rm456-mixer"
        values[f"MIXER_CONTEXT_RTMP_{i}"] = secret[ref["key"]]
    dest = tmp_path / "run" / "context.json"
    dest.parent.mkdir()
    proc = _run_assembler(script, source, dest, values)
    assert proc.returncode == 0, proc.stderr
    assert "KEY" not in proc.stdout + proc.stderr
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    context = parse_context(dest.read_text(encoding="utf-8"))
    assert context.outputs == [
        "hls:main",
        "file:RM456.m4a",
        secret["youtube"],
        secret["twitch"],
    ]
    assert context.audio_bitrate == 160 and context.max_participant_duration == 7200
    assert context.room.name == "RM456"


def test_init_container_refuses_a_bad_url_without_showing_its_key(tmp_path: Path) -> None:
    docs = _docs(next(p for p in EXAMPLES if p.name == "room-server.yaml"))
    script, source = _configmap_script(tmp_path, docs)
    dest = tmp_path / "context.json.out"
    env = {
        "MIXER_CONTEXT_RTMP_COUNT": "1",
        "MIXER_CONTEXT_RTMP_0": "rtmp:///app/SECRETKEY",
    }  # no host
    proc = _run_assembler(script, source, dest, env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("assemble-context: context: outputs[1]:"), proc.stderr
    assert "SECRETKEY" not in proc.stderr
    assert not dest.exists()
    missing = _run_assembler(script, source, dest, {"MIXER_CONTEXT_RTMP_COUNT": "1"})
    assert missing.returncode == 2
    assert "MIXER_CONTEXT_RTMP_0 is empty or missing" in missing.stderr


# --------------------------------------------------------------------------- least privilege
def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _secret_data(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {
        d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d["data"].items()}
        for d in docs
        if d["kind"] == "Secret"
    }


def test_the_worker_gets_a_minted_token_never_the_signing_secret(helm: Helm) -> None:
    """Issue 16.3: with job.roomToken mint (the default) the init container `room-token`
    alone reads room-secret; the worker reads the token file from a memory volume."""
    docs = _render(helm, BASE | {"secrets": {"roomSecret": "s" * 40}})
    pod = _one(docs, "Job")["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    assert "MIXER_ROOM_SECRET" not in _env(worker) and "MIXER_ROOM_TOKEN" not in _env(worker)
    env_cm = _one(docs, "ConfigMap", "-mixer-ext-env")["data"]
    assert env_cm["MIXER_ROOM_TOKEN_FILE"] == "/run/mixer-token/token"
    assert {"name": "room-token", "mountPath": "/run/mixer-token", "readOnly": True} in worker[
        "volumeMounts"
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["room-token"] == {
        "name": "room-token",
        "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"},
    }
    init = {c["name"]: c for c in pod["initContainers"]}["room-token"]
    assert init["command"] == ["mixer-ext"]
    assert init["args"] == [
        "token", "--role", "mixer", "--room", "RM1", "--identity", "audio-mixer-v1",
        "--ttl", "15000", "--output", "/run/mixer-token/token",
    ]  # fmt: skip
    assert _env(init)["MIXER_ROOM_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "room-test-mixer-ext",
        "key": "room-secret",
    }
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    # within the lifetime the room server accepts on verify
    from mixer_ext.roomserver.tokens import MAX_TTL

    worst = coalesce(
        copy.deepcopy(BASE),
        {"context": {"maxParticipantDuration": 86400}, "job": {"deadlineMarginSeconds": 86400}},
    )
    init = _one(_render(helm, worst), "Job")["spec"]["template"]["spec"]["initContainers"][0]
    assert float(init["args"][init["args"].index("--ttl") + 1]) <= MAX_TTL


def test_the_worker_can_take_its_token_from_the_secret_instead(helm: Helm) -> None:
    docs = _render(helm, BASE | {"job": {"roomToken": "secret"}})
    pod = _one(docs, "Job")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["context"]
    (worker,) = pod["containers"]
    assert _env(worker)["MIXER_ROOM_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "room-token"
    assert "MIXER_ROOM_SECRET" not in _env(worker)
    assert "MIXER_ROOM_TOKEN_FILE" not in _one(docs, "ConfigMap", "-mixer-ext-env")["data"]
    # Janus: neither
    janus = _render(
        helm, BASE | {"settings": {"roomBackend": "janus", "janusUrl": "ws://janus:8188"}}
    )
    jpod = _one(janus, "Job")["spec"]["template"]["spec"]
    assert [c["name"] for c in jpod["initContainers"]] == ["context"]
    assert not {"MIXER_ROOM_SECRET", "MIXER_ROOM_TOKEN"} & set(_env(jpod["containers"][0]))


def test_room_server_admin_token_and_limits(helm: Helm) -> None:
    """MIXER_ROOM_ADMIN_TOKEN only by secretKeyRef (never a ConfigMap or argv); the
    connection limits are values (maxConnectionsPerAddress: raise behind an ingress)."""
    docs = _render(
        helm,
        BASE
        | {
            "secrets": {"roomSecret": "s" * 40, "roomAdminToken": "admin-t0ken-s3cret-xyz"},
            "roomServer": {"enabled": True, "settings": {"maxConnectionsPerAddress": 1000}},
        },
    )
    (server,) = _one(docs, "Deployment", "-room-server")["spec"]["template"]["spec"]["containers"]
    env = _env(server)
    assert env["MIXER_ROOM_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "room-test-mixer-ext",
        "key": "room-admin-token",
        "optional": True,
    }
    assert _secret_data(docs)["room-test-mixer-ext"]["room-admin-token"] == "admin-t0ken-s3cret-xyz"
    blob = json.dumps([d for d in docs if d["kind"] != "Secret"])
    assert "admin-t0ken-s3cret-xyz" not in blob
    assert env["MIXER_ROOM_MAX_CONNECTIONS_PER_ADDRESS"]["value"] == "1000"
    assert env["MIXER_ROOM_MIXER_IDENTITIES"]["value"] == "audio-mixer-v1,audio-mixer-v2"
    for var in (
        "JOIN_TIMEOUT",
        "MAX_ERRORS_BEFORE_JOIN",
        "MAX_PENDING_CONNECTIONS",
        "MESSAGE_RATE",
        "MESSAGE_BURST",
    ):
        assert f"MIXER_ROOM_{var}" in env, var
    # too short for the server: refused at install
    assert _errors(_merged(coalesce(BASE, {"secrets": {"roomAdminToken": "short"}}))) != []


async def test_the_init_containers_command_mints_a_token_the_real_server_accepts(
    tmp_path: Path,
) -> None:
    """The `room-token` init container's exact command line and env (from the committed
    rendering of helm/examples/room-server.yaml, Secret references resolved as the
    kubelet would; only --output moved to a local path) run here; a real room server
    with the rendered Deployment's settings accepts that token for the mixer identity
    through the worker's MIXER_ROOM_TOKEN_FILE, refuses a participant-role one for it,
    and the rendered admin token ends the room."""
    import aiohttp

    from mixer_ext.connectors.factory import make_connector, read_room_token_file
    from mixer_ext.roomserver.server import RoomServer
    from mixer_ext.settings import Settings
    from mixer_ext.testing.net import mixer_ext_cmd

    docs = _docs(next(p for p in EXAMPLES if p.name == "room-server.yaml"))
    secrets = _secret_data(docs)

    def resolved(container: dict[str, Any]) -> dict[str, str]:
        out = {}
        for name, var in _env(container).items():
            if "value" in var:
                out[name] = var["value"]
                continue
            ref = var["valueFrom"]["secretKeyRef"]
            if ref["key"] in secrets[ref["name"]]:
                out[name] = secrets[ref["name"]][ref["key"]]
            else:
                assert ref.get("optional"), f"{name}: key {ref['key']} missing"
        return out

    pod = _one(docs, "Job")["spec"]["template"]["spec"]
    init = {c["name"]: c for c in pod["initContainers"]}["room-token"]
    args = list(init["args"])
    out = tmp_path / "run" / "token"
    out.parent.mkdir()
    args[args.index("--output") + 1] = str(out)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MIXER_")}

    def mint(argv: list[str]) -> subprocess.CompletedProcess[str]:
        assert init["command"] == ["mixer-ext"]
        return subprocess.run(
            [*mixer_ext_cmd(), *argv],
            env=base_env | resolved(init),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    proc = mint(args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and stat.S_IMODE(out.stat().st_mode) == 0o600
    room = args[args.index("--room") + 1]
    identity = args[args.index("--identity") + 1]

    (server_container,) = _one(docs, "Deployment", "-room-server")["spec"]["template"]["spec"][
        "containers"
    ]
    server_env = {
        k.removeprefix("MIXER_").lower(): v for k, v in resolved(server_container).items()
    }
    server = RoomServer(Settings(**server_env), "127.0.0.1", 0)
    await server.start()
    try:
        worker = read_room_token_file(Settings(room_url=server.url, room_token_file=Path(str(out))))
        bot = make_connector(worker, room, identity)
        await bot.connect()
        assert identity in server.rooms[room].participants
        await bot.disconnect()
        # the same command without the mixer role: refused for the mixer's identity
        participant = [a for a in args if a not in ("--role", "mixer")]
        assert mint(participant).returncode == 0
        intruder = make_connector(
            read_room_token_file(Settings(room_url=server.url, room_token_file=out)),
            room,
            identity,
        )
        with pytest.raises(Exception, match=r"unauthorized|reserved|mixer"):
            await intruder.connect()
        await intruder.disconnect()
        admin = server_env["room_admin_token"]
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{server.port}/v1/rooms/{room}/end"
            async with http.post(url) as resp:
                assert resp.status == 401
            async with http.post(url, headers={"Authorization": f"Bearer {admin}"}) as resp:
                assert resp.status == 200, resp.status
    finally:
        await server.stop()
