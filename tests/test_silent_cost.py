"""N silent participants must cost the mixer a small fraction of N talking ones (issue 13).

Runs ``bench/silent.py`` in a short form: the real room server, a real worker and
N pre-encoded participants over WebRTC (``PreEncodedOpusTrack``: 440 Hz tone,
libopus DTX frames, or the tone muted with ``set-enabled``), plus the worker alone
in the room (its fixed cost, subtracted).  The bound is generous (0.6x) so that a
shared machine cannot flake it; the precise figures come from the bench itself.

Today it fails, and is marked so (xfail strict: it starts failing the day it passes,
so the mark must then go).  Measured on this machine, per participant above the
worker alone: ``bench/silent.py --n 20 --seconds 15 --rounds 3`` DTX 1.04x and muted
1.21x of talking (medians; 1.79 % of a core per talking participant); shorter runs
gave 0.80-1.00x and 0.82-0.94x: silence costs as much as speech.  Why:
aiortc's per-track decoder thread decodes every received payload, a 1-byte DTX frame
too (bench/opus_decode.py: 60-80 % of a real frame's cost), and each decoded frame
crosses threads, the reader task and the jitter buffer like speech; and the embedded
room forwards a muted publisher's packets (its ``PacketFanout.enabled`` is never set
by ``set-enabled``), so muted audio is received and decoded too.  The fix is issue
13.1 (skip DTX and disabled tracks before decode) and the room's mute.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

BOUND = 0.6


@pytest.mark.xfail(
    strict=True,
    reason="aiortc decodes DTX frames like speech and the embedded room forwards muted "
    "audio: silent/muted cost ~1x talking (bench/silent.py: 1.04x, 1.21x at N=20)",
)
def test_silent_participants_cost_a_small_fraction_of_talking_ones() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "silent.py"), "--n", "10", "--seconds", "4",
         "--settle", "2", "--rounds", "1", "--json"],
        capture_output=True, text=True, timeout=150, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    print(out)
    line = next(ln for ln in out.splitlines() if ln.startswith("JSON "))
    figures = json.loads(line[5:])
    per = figures["per"]
    assert per["talking"] > 0, figures  # the talkers were mixed: a cost above the worker alone
    ratios = {m: per[m] / per["talking"] for m in ("dtx", "muted")}
    print(f"silent / talking per participant: {ratios}")
    assert all(r < BOUND for r in ratios.values()), ratios
