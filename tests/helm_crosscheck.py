"""Manual cross-check of tests/helm_util.py against Helm's real template engine.

Not part of ``make test``: it needs Helm's Go library, which no registry reachable from
CI provides for this Python.  Where it is available (the ``libhelm_sdkpy.so`` in the
PyPI wheel ``helm-sdkpy``, 0.1.32 bundles Helm v4; the wheel needs Python >= 3.12 but
the library loads from any Python through ctypes), this renders every template of the
chart for every example with Helm itself, through ``helm lint`` (the only action that
needs no cluster), and compares it with this project's renderer byte for byte.  It also
lints each example's values (values.schema.json validated by Helm's own validator).

How Helm's output is obtained: lint runs on a copy of the chart whose values.yaml is the
example's merged values, with one extra template ``{{ fail (include <template> .) }}``;
Helm logs the failure message, which is the rendered template.

    pip download --no-deps --python-version 3.12 --only-binary=:all: \
        --platform manylinux2014_x86_64 -d /tmp/hsdk helm-sdkpy
    unzip -d /tmp/hsdk/x /tmp/hsdk/helm_sdkpy-*.whl
    HELM_LIB=/tmp/hsdk/x/helm_sdkpy/_lib/linux-amd64/libhelm_sdkpy.so \
        .venv/bin/python -m tests.helm_crosscheck
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests import helm_util as hu


class HelmLint:
    def __init__(self, library: str) -> None:
        self.lib = ctypes.CDLL(library)
        self.handle = ctypes.c_ulonglong()
        rc = self.lib.helm_sdkpy_config_create(b"", b"", b"", b"{}", ctypes.byref(self.handle))
        if rc != 0:
            raise RuntimeError("helm_sdkpy_config_create failed")

    def run(self, values: dict[str, Any], extra_template: str = "") -> tuple[list[Any], str]:
        """Lint a copy of the chart with ``values``; returns (errors, Helm's log)."""
        tmp = Path(tempfile.mkdtemp())
        try:
            chart = tmp / "mixer-ext"
            shutil.copytree(hu.CHART_DIR, chart)
            (chart / "values.yaml").write_text(yaml.safe_dump(values), encoding="utf-8")
            if extra_template:
                (chart / "templates" / "zz-dump.yaml").write_text(extra_template)
            read_end, write_end = os.pipe()
            saved = os.dup(2)
            os.dup2(write_end, 2)
            result = ctypes.c_char_p()
            try:
                self.lib.helm_sdkpy_lint(self.handle, str(chart).encode(), ctypes.byref(result))
            finally:
                os.dup2(saved, 2)
                os.close(write_end)
            log = b""
            while chunk := os.read(read_end, 1 << 16):
                log += chunk
            os.close(read_end)
            assert result.value is not None
            report = json.loads(result.value)
            return [m for m in report["Messages"] if m["Severity"] > 1], log.decode()
        finally:
            shutil.rmtree(tmp)


def main() -> int:
    library = os.environ.get("HELM_LIB")
    if not library:
        print("set HELM_LIB to libhelm_sdkpy.so (see the module docstring)", file=sys.stderr)
        return 2
    helm = HelmLint(library)
    names = [p.name for p in hu.template_files() if not p.name.startswith("_")]
    defaults = hu.load_yaml(hu.CHART_DIR / "values.yaml")
    chart = hu.load_yaml(hu.CHART_DIR / "Chart.yaml")
    failures = 0
    for example in hu.examples():
        values = hu.merge_values(defaults, hu.load_yaml(example))
        errors, _ = helm.run(values)
        print(f"{example.name}: helm lint {errors if errors else 'ok'}")
        failures += bool(errors)
        for name in names:
            dump = (
                '{{- fail (printf "DUMP:%s:%s" .Release.Name '
                f'(include "mixer-ext/templates/{name}" .)) }}}}\n'
            )
            _, log = helm.run(values, dump)
            m = re.search(r'message="DUMP:([^:]*):(.*?)"\n', log, re.DOTALL)
            if not m:
                print(f"  {name}: no rendering from Helm", log[:500])
                failures += 1
                continue
            theirs = json.loads('"' + m.group(2) + '"')
            root = {
                "Values": hu._helm_numbers(values),
                "Release": {"Name": m.group(1), "Namespace": "", "Service": "Helm"},
                "Chart": {
                    "Name": chart["name"],
                    "Version": chart["version"],
                    "AppVersion": chart["appVersion"],
                },
                "Files": hu._Files(hu.CHART_DIR),
            }
            defines: dict[str, list[Any]] = {}
            trees = {
                p.name: hu.parse(hu.lex(p.read_text(encoding="utf-8"), p.name), defines)
                for p in hu.template_files()
            }
            ours = hu.Renderer(defines, root).render(trees[name], root, {})
            ours = ours.replace("<no value>", "")
            same = ours == theirs
            print(f"  {name:32} {'identical' if same else 'DIFFERENT'}")
            failures += not same
    print("all identical" if not failures else f"{failures} differences")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
