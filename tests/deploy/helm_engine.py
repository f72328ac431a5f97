"""Helm's own template engine and linter, for the chart's tests and reference renderings.

Helm (v4) is not a Python package, but the PyPI wheel ``helm-sdkpy`` ships Helm's Go
library as ``libhelm_sdkpy.so``.  The wheel itself wants Python >= 3.12; the library
loads from any Python through ctypes, so ``make helm-lib`` fetches the pinned wheel,
checks its sha256 and keeps only the library (``python -m tests.deploy.helm_engine fetch``,
pins in the Makefile).  Nothing here re-implements Helm's template language.

What the library exposes offline is ``helm lint`` (install/upgrade want a cluster), so:

- ``lint(chart, values)`` is ``helm lint`` of a copy of the chart whose values.yaml is
  the chart's defaults with ``values`` on top: every Helm lint rule, including the
  values.schema.json validation with Helm's own validator.  The library hands back the
  severity and the path of each finding but not its text (Go errors marshal as ``{}``).
- ``render(chart, values, release, namespace)`` runs that same lint with one extra
  template that ``include``s every template of the chart with ``.Release`` set to the
  given release and namespace and hands the result back through ``fail``.  Helm renders
  in lint mode, where ``fail`` and ``required`` log their message and render nothing
  instead of stopping; those messages are read from the library's log (stderr) and a
  chart's own ``fail``/``required`` is raised as ``TemplateError``, as ``helm template``
  would stop with it.  The output is ``helm template``'s stream: one ``# Source:`` per
  document, in Helm's install order by kind.

Two things stay in Python and are Helm's documented rules, not its engine: values are
coalesced onto values.yaml (maps merge, null deletes a key, anything else replaces),
and documents are split on ``---`` and ordered by kind as ``helm template`` prints them.

Run: ``python -m tests.deploy.helm_engine render`` (``make helm-render``) rewrites
helm/rendered/<example>.yaml for every helm/examples/*.yaml;
``python -m tests.deploy.helm_engine lint`` lints every example.
"""

from __future__ import annotations

import argparse
import base64
import codecs
import ctypes
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "mixer-ext"
EXAMPLES_DIR = ROOT / "helm" / "examples"
RENDERED_DIR = ROOT / "helm" / "rendered"
CACHE_DIR = ROOT / ".cache" / "helm-sdkpy"
LIBRARY = CACHE_DIR / "libhelm_sdkpy.so"
#: written by ``fetch`` when the library could not be had: why (shown by the tests)
UNAVAILABLE = CACHE_DIR / "unavailable"
#: the member of the wheel that is Helm's library (the wheel has only this platform)
_WHEEL_MEMBER = "helm_sdkpy/_lib/linux-amd64/libhelm_sdkpy.so"
_WHEEL_LICENSE = "LICENSE"

#: Helm's install order (pkg/release/util/kind_sorter.go), as ``helm template`` prints
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList",
    "Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
]  # fmt: skip

_SEVERITIES = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
_DUMP_MARK = "MIXER-EXT-HELM-DUMP:"
_DUMP_TEMPLATE = "zz-helm-engine-dump.yaml"
# Helm's lint-mode log lines for `fail` and `required` (log/slog text format)
_LOGGED = re.compile(
    r'(?:INFO funcMap fail|WARN missing required values) message=("(?:[^"\\]|\\.)*"|\S*)'
)
# Helm's pkg/release/util SplitManifests separator
_SEPARATOR = re.compile(r"(?:^|\s*\n)---\s*")


class HelmUnavailable(Exception):
    """Helm's library is not on this machine (``make helm-lib`` fetches it)."""


class HelmError(Exception):
    """Helm refused the chart or the values (a lint error, or a render that failed)."""


class TemplateError(HelmError):
    """The chart itself refused the values: the message of its ``fail`` or ``required``."""


@dataclass(frozen=True)
class LintMessage:
    severity: str  # INFO, WARNING or ERROR, as ``helm lint`` prints them
    path: str  # relative to the chart: "values.yaml", "templates/job.yaml", "templates/"

    def __str__(self) -> str:
        return f"[{self.severity}] {self.path}"


@dataclass(frozen=True)
class Manifest:
    source: str  # "mixer-ext/templates/job.yaml"
    text: str
    kind: str


@dataclass(frozen=True)
class Rendering:
    manifests: list[Manifest]
    notes: str  # NOTES.txt as Helm renders it ("" when the chart has none)

    def text(self) -> str:
        """The ``helm template`` stream: ``---`` and a ``# Source:`` line per document."""
        return "".join(f"---\n# Source: {m.source}\n{m.text}\n" for m in self.manifests)

    def docs(self) -> list[dict[str, Any]]:
        return [yaml.safe_load(m.text) for m in self.manifests]


# --------------------------------------------------------------------------- values
def coalesce(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of user values onto a chart's: maps merge deeply, null deletes
    the key, anything else (lists included) replaces."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = coalesce(out[key], value)
        else:
            out[key] = value
    return out


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise HelmError(f"{path}: values must be a mapping")
    return data


# --------------------------------------------------------------------------- the library
def library_path() -> Path:
    """The library to load: $HELM_SDKPY_LIB, else the one ``make helm-lib`` fetched."""
    override = os.environ.get("HELM_SDKPY_LIB")
    path = Path(override) if override else LIBRARY
    if path.is_file():
        return path
    if not override and UNAVAILABLE.is_file():
        reason = UNAVAILABLE.read_text(encoding="utf-8").strip()
        raise HelmUnavailable(f"Helm's library could not be fetched: {reason}")
    raise HelmUnavailable(f"Helm's library is not at {path}: run `make helm-lib`")


def _go_unquote(quoted: str) -> str:
    """A string as Go's strconv.Quote wrote it (slog's text format), or a bare word."""
    if not quoted.startswith('"'):
        return quoted
    body = quoted[1:-1]
    # \u / \U name code points; turn them into UTF-8 \x escapes for escape_decode
    body = re.sub(
        r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})",
        lambda m: "".join(f"\\x{b:02x}" for b in chr(int(m.group(1)[1:], 16)).encode()),
        body,
    )
    raw, _ = codecs.escape_decode(body.encode("utf-8"))  # type: ignore[attr-defined]
    return bytes(raw).decode("utf-8")


class Helm:
    """Helm's library, loaded once per process; calls are serialised (they share fd 2)."""

    _lock = threading.Lock()

    def __init__(self, library: Path | None = None) -> None:
        path = library or library_path()
        try:
            self._lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise HelmUnavailable(f"Helm's library at {path} does not load: {exc}") from exc
        self._lib.helm_sdkpy_version_string.restype = ctypes.c_char_p
        self._lib.helm_sdkpy_last_error.restype = ctypes.c_char_p
        self._lib.helm_sdkpy_lint.argtypes = [
            ctypes.c_ulonglong,
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_char_p),
        ]
        self.version = (self._lib.helm_sdkpy_version_string() or b"").decode()
        self._handle = ctypes.c_ulonglong()
        rc = self._lib.helm_sdkpy_config_create(
            b"default", b"", b"", b"{}", ctypes.byref(self._handle)
        )
        if rc != 0:
            raise HelmUnavailable(f"Helm's configuration failed: {self._last_error()}")

    def _last_error(self) -> str:
        error = self._lib.helm_sdkpy_last_error()
        return error.decode(errors="replace") if error else "(no message)"

    def _lint_dir(self, chart: Path) -> tuple[list[LintMessage], str]:
        """``helm lint chart``: its findings and what Helm logged meanwhile."""
        result = ctypes.c_char_p()
        with self._lock, tempfile.TemporaryFile() as log:
            # the library logs to fd 2; a file (not a pipe) so a long log cannot block it
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(log.fileno(), 2)
            try:
                rc = self._lib.helm_sdkpy_lint(
                    self._handle, str(chart).encode(), ctypes.byref(result)
                )
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            log.seek(0)
            text = log.read().decode("utf-8", errors="replace")
        if rc != 0 or result.value is None:
            raise HelmError(f"helm lint {chart.name}: {self._last_error()}")
        report = json.loads(result.value)
        messages = [
            LintMessage(_SEVERITIES.get(m["Severity"], str(m["Severity"])), m["Path"])
            for m in report.get("Messages") or []
        ]
        return messages, text

    @staticmethod
    def _copy(chart: Path, values: dict[str, Any] | None, into: Path) -> Path:
        copy = into / chart.name
        shutil.copytree(chart, copy)
        if values is not None:
            merged = coalesce(load_yaml(chart / "values.yaml"), values)
            (copy / "values.yaml").write_text(yaml.safe_dump(merged), encoding="utf-8")
        return copy

    def lint(
        self, chart: Path = CHART_DIR, values: dict[str, Any] | None = None
    ) -> list[LintMessage]:
        """``helm lint`` of ``chart`` with ``values`` over its values.yaml."""
        with tempfile.TemporaryDirectory(prefix="helm-lint-") as tmp:
            messages, _ = self._lint_dir(self._copy(chart, values, Path(tmp)))
        return messages

    def render(
        self,
        chart: Path = CHART_DIR,
        values: dict[str, Any] | None = None,
        release: str = "release-name",
        namespace: str = "default",
    ) -> Rendering:
        """``helm template RELEASE CHART -f values --namespace NAMESPACE``, by Helm."""
        meta = load_yaml(chart / "Chart.yaml")
        templates = sorted(
            p.relative_to(chart / "templates").as_posix()
            for p in (chart / "templates").rglob("*")
            if p.is_file() and not p.name.startswith("_")
        )
        names = [f"{meta['name']}/templates/{t}" for t in templates]
        release_values = {
            "Name": release,
            "Namespace": namespace,
            "IsInstall": True,
            "IsUpgrade": False,
            "Revision": 1,
            "Service": "Helm",
        }
        dump = (
            "{{- $ctx := merge (dict \"Release\" (fromJson "
            + json.dumps(json.dumps(release_values))
            + ")) $ -}}\n{{- $out := dict -}}\n{{- range $name := fromJsonArray "
            + json.dumps(json.dumps(names))
            + " -}}\n{{- $_ := set $out $name (include $name $ctx) -}}\n{{- end -}}\n"
            + '{{- fail (printf "' + _DUMP_MARK + '%s" (toJson $out | b64enc)) -}}\n'
        )  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="helm-render-") as tmp:
            copy = self._copy(chart, values, Path(tmp))
            (copy / "templates" / _DUMP_TEMPLATE).write_text(dump, encoding="utf-8")
            messages, log = self._lint_dir(copy)
        rendered: dict[str, str] | None = None
        for m in _LOGGED.finditer(log):
            message = _go_unquote(m.group(1))
            if message.startswith(_DUMP_MARK):
                rendered = json.loads(base64.b64decode(message[len(_DUMP_MARK) :]))
            else:
                raise TemplateError(message)
        errors = [m for m in messages if m.severity == "ERROR"]
        if errors:
            raise HelmError(
                f"helm lint: {', '.join(str(e) for e in errors)} (Helm's library gives"
                " the path, not the text: `values.yaml` is the schema, `templates/` a"
                " template that does not execute)"
            )
        if rendered is None:
            raise HelmError(f"Helm rendered nothing for {chart}: {log.strip()[:500]}")
        return _rendering(rendered)


def _rendering(rendered: dict[str, str]) -> Rendering:
    manifests: list[Manifest] = []
    notes = ""
    for source in sorted(rendered):
        if source.endswith("/NOTES.txt"):
            notes = rendered[source]
            continue
        for doc in _SEPARATOR.split(rendered[source]):
            doc = doc.strip()
            if not doc:
                continue
            data = yaml.safe_load(doc)
            if data is None:  # only comments
                continue
            if not isinstance(data, dict) or "kind" not in data:
                raise HelmError(f"{source}: a document without a kind")
            manifests.append(Manifest(source, doc, str(data["kind"])))

    def order(m: Manifest) -> tuple[int, str]:
        if m.kind in INSTALL_ORDER:
            return INSTALL_ORDER.index(m.kind), ""
        return len(INSTALL_ORDER), m.kind  # unknown kinds last, by kind

    return Rendering(sorted(manifests, key=order), notes)


_HELM: Helm | None = None


def helm() -> Helm:
    """The process's one ``Helm`` (raises ``HelmUnavailable`` with the reason)."""
    global _HELM
    if _HELM is None:
        _HELM = Helm()
    return _HELM


# --------------------------------------------------------------------------- examples
def examples() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.yaml"))


def example_release(example: Path) -> str:
    """Release name used for an example's reference rendering."""
    return f"room-{example.stem}"


def render_example(example: Path, engine: Helm | None = None) -> str:
    """The committed reference rendering of ``example`` (helm/rendered/<name>)."""
    engine = engine or helm()
    rendering = engine.render(CHART_DIR, load_yaml(example), example_release(example))
    header = (
        f"# Reference rendering of helm/mixer-ext with {example.relative_to(ROOT)}\n"
        f"# (release {example_release(example)!r}, namespace 'default') by Helm's own\n"
        f"# engine ({engine.version}).  Generated by `make helm-render`\n"
        "# (tests/deploy/helm_engine.py); do not edit by hand.\n"
    )
    return header + rendering.text()


def iter_values_paths(chart: Path = CHART_DIR) -> Iterator[tuple[str, str]]:
    """Every ``.Values.a.b`` path in the chart's templates, with where it occurs."""
    pattern = re.compile(r"\.Values((?:\.[A-Za-z0-9_]+)+)")
    for path in sorted((chart / "templates").rglob("*")):
        if not path.is_file():
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in pattern.finditer(line):
                yield m.group(1)[1:], f"{path.name}:{lineno}"


# --------------------------------------------------------------------------- commands
def fetch(version: str, sha256: str) -> int:
    """Fetch helm-sdkpy==VERSION from PyPI, check it, keep its library in CACHE_DIR.

    Never fails the build: when the library cannot be had, the reason goes to
    CACHE_DIR/unavailable and the exit status is still 0 (the Helm tests then fail
    under CI=true and skip elsewhere, with that reason)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    UNAVAILABLE.unlink(missing_ok=True)
    try:
        _fetch(version, sha256)
    except (HelmUnavailable, OSError, subprocess.SubprocessError, zipfile.BadZipFile) as exc:
        LIBRARY.unlink(missing_ok=True)  # never render with a library of another pin
        UNAVAILABLE.write_text(f"{exc}\n", encoding="utf-8")
        print(f"helm-lib: not available: {exc}", file=sys.stderr)
        return 0
    print(f"helm-lib: {LIBRARY.relative_to(ROOT)} (helm-sdkpy {version}, sha256 checked)")
    return 0


def _fetch(version: str, sha256: str) -> None:
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        raise HelmUnavailable(f"helm-sdkpy ships Linux x86_64 only, not {platform.machine()}")
    with tempfile.TemporaryDirectory(prefix="helm-sdkpy-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--retries", "2", "--timeout", "30",
            # the wheel declares Python >= 3.12; only its Go library is used, from any Python
            "--python-version", "3.12", "--only-binary=:all:",
            "--platform", "manylinux2014_x86_64", "-d", tmp, f"helm-sdkpy=={version}",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        wheels = list(Path(tmp).glob("helm_sdkpy-*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise HelmUnavailable(f"pip download helm-sdkpy=={version} failed: {last}")
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != sha256:
            raise HelmUnavailable(
                f"{wheels[0].name} has sha256 {digest}, the Makefile pins {sha256}"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            partial = LIBRARY.with_suffix(".so.part")
            with wheel.open(_WHEEL_MEMBER) as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            partial.replace(LIBRARY)
            license_member = next(n for n in wheel.namelist() if n.endswith(_WHEEL_LICENSE))
            (CACHE_DIR / "LICENSE").write_bytes(wheel.read(license_member))
    (CACHE_DIR / f"{sha256}.stamp").write_text(f"helm-sdkpy {version}\n", encoding="utf-8")


def write_renderings() -> int:
    """Rewrite helm/rendered/<example>.yaml for every example values file."""
    engine = helm()
    RENDERED_DIR.mkdir(parents=True, exist_ok=True)
    wanted = {p.name for p in examples()}
    for stale in RENDERED_DIR.glob("*.yaml"):
        if stale.name not in wanted:
            stale.unlink()
            print(f"helm-render: removed {stale.relative_to(ROOT)}")
    for example in examples():
        try:
            text = render_example(example, engine)
        except HelmError as exc:
            print(f"helm-render: {example.name}: {exc}", file=sys.stderr)
            return 1
        target = RENDERED_DIR / example.name
        target.write_text(text, encoding="utf-8")
        print(f"helm-render: wrote {target.relative_to(ROOT)}")
    return 0


def lint_examples() -> int:
    engine = helm()
    failed = 0
    for example in examples():
        findings = [m for m in engine.lint(CHART_DIR, load_yaml(example)) if m.severity != "INFO"]
        print(f"helm lint {example.name}: {', '.join(map(str, findings)) or 'ok'}")
        failed += bool(findings)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.deploy.helm_engine")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = sub.add_parser("fetch", help="fetch Helm's library (make helm-lib)")
    fetch_cmd.add_argument("--version", required=True)
    fetch_cmd.add_argument("--sha256", required=True)
    sub.add_parser("render", help="rewrite helm/rendered/ (make helm-render)")
    sub.add_parser("lint", help="helm lint every example")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        return fetch(args.version, args.sha256)
    try:
        return write_renderings() if args.command == "render" else lint_examples()
    except HelmUnavailable as exc:
        print(f"helm: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
