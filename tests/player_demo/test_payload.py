"""The player's payload parser and ordering rules (player_demo/payload.js).

The logic is JavaScript, so it is tested where it runs: node's built-in test
runner (``node --test tests/player_demo/js/``), no browser needed. This module runs that
suite from pytest so ``make test`` covers it, and hands it ID3 tags built by
the Python side (``id3_txxx(MetadataPayload(...).to_json())``), so the worker
and the page are held to the same bytes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from mixer_ext.core.payload import MetadataPayload
from mixer_ext.outputs.carriers import id3_txxx
from tests.support.env import ROOT, require_program

pytestmark = pytest.mark.slow

JS_TESTS = ROOT / "tests" / "player_demo" / "js"


def _vectors() -> list[dict[str, object]]:
    payloads = [
        MetadataPayload(seq=0, levels={}),
        MetadataPayload(seq=23, levels={"alice": 300, "bob": -1}),
        MetadataPayload(seq=7, levels={"zoë 🎤": 32767, "élodie": 0, "日本": -1}),
        MetadataPayload(seq=2**40, levels={f"talker-{i:02d}": i * 600 for i in range(50)}),
    ]
    return [
        {
            "id3_hex": id3_txxx(p.to_json()).hex(),
            "json": p.to_json(),
            "seq": p.seq,
            "levels": dict(p.levels),
        }
        for p in payloads
    ]


def test_payload_js_passes_its_node_tests(tmp_path: Path) -> None:
    node = require_program("node", package="nodejs")
    vectors = tmp_path / "vectors.json"
    vectors.write_text(json.dumps(_vectors(), ensure_ascii=False), encoding="utf-8")
    proc = subprocess.run(
        [node, "--test", "--test-reporter=tap", str(JS_TESTS)],
        cwd=ROOT,
        env={**os.environ, "MIXER_PAYLOAD_VECTORS": str(vectors)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    counts = {k: int(v) for k, v in re.findall(r"^# (pass|fail|skipped) (\d+)$", out, re.M)}
    assert counts.get("fail") == 0, out[-4000:]
    # the suite really ran, the cross-language vectors included (nothing skipped)
    assert counts.get("pass", 0) >= 40, out[-4000:]
    assert counts.get("skipped") == 0, out[-4000:]
