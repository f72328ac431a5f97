"""Every bench script runs end to end in its ``--quick`` form: exit 0, method and figures printed.

Timings are never asserted (the machine is shared and slow); what a user of
the scripts relies on is: they run, they describe their method and the
machine, and they print the figures they promise.  About 50 s in all.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.env import ROOT

FIGURE = r"\d+\.\d+ ?(ms|%|MiB)"

#: script -> what its figures look like (regexes that must all match its output)
SCRIPTS = {
    "core_tick.py": [r"inputs +network", rf"\s10 +steady .*{FIGURE}"],
    "capacity.py": [
        rf"embedded +mixer +3 +{FIGURE}.*(held|FAILED)$",
        rf"embedded +floor +3 +{FIGURE}",
        r"result: backend=embedded: (largest N that held = 3|no N held)",
        r"N=3: mixer / floor CPU = .* = \d+\.\d+x",
    ],
    "composition.py": [
        rf"^ours +\d+\.\d+s +\d+\.\d+s +\d+\.\dx +\d+\.\dx +{FIGURE}",
        rf"^ffmpeg +\d+\.\d+s +\d+\.\d+s +\d+\.\dx +\d+\.\dx +{FIGURE}",
        r"ratio: ffmpeg cpu / ours cpu = \d+\.\d+x",
        r"check ours: every talker heard",
    ],
    "recording_cost.py": [
        r"recording 50 tracks: \d+\.\d % of one core, \d+\.\d us per payload, 0 dropped",
        r"\+\d+\.\d % at 50 tracks",
    ],
    "mono_buffer.py": [rf"buffered mono \(upmixed in the mix\): +{FIGURE} +\(\d+\.\d+x\)"],
    "latency.py": [
        rf"\(a\) in mixer, arrival -> packet to outputs: p50 +{FIGURE} +p99 +{FIGURE}",
        rf"glass -> segment available at the player: +p50 +{FIGURE}",
        rf"glass -> played \(live-edge player model\): +p50 +{FIGURE} +p99 +{FIGURE}",
    ],
    "endurance.py": [
        rf"input fast: buffered latency first hour mean {FIGURE}",
        rf"RSS at 1 h {FIGURE}",
        rf"start \(.*\): worker RSS {FIGURE}; buffered latency mean {FIGURE}",
        rf"end \(.*\): worker RSS {FIGURE}",
    ],
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_bench_quick(script: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{out}\n{proc.stderr[-3000:]}"
    assert re.search(r"^machine: .*nproc=2|^machine: .*(CPU|nproc)", out, re.M), out
    assert re.search(r"^method: ", out, re.M), out
    assert "FAILED:" not in out, f"a measurement broke (not a timing verdict):\n{out}"
    for pattern in SCRIPTS[script]:
        assert re.search(pattern, out, re.M), f"{script}: no line matching {pattern!r}:\n{out}"
