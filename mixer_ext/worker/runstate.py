"""What a run persists beside its outputs, so that a restarted worker resumes it (issue 16.7).

A Kubernetes container restart (OOM kill, node hiccup, liveness kill) starts the
worker again with the same context and the same volume.  It must not start a
second stream under the same URLs: the HLS output continues its playlist (see
``hls.writer``), and this small JSON file keeps the rest of the run:

* ``first_join``: wall-clock time (Unix seconds) of the run's first successful
  join, so the maximum participant duration counts from it, not from the restart;
* ``status_sequence``: the last status report's sequence number, so reports go on
  rising across processes;
* ``runs``: how many processes have worked on this run;
* ``ended``: the run finished (its outputs were finalized); the next start is a
  new run.

Where: ``.mixer-run.json`` in the first HLS output's directory, else
``.NAME.run.json`` beside the first recording; a run with neither (RTMP only)
persists nothing.  Written atomically (temp file + rename); a missing or
unreadable file means a new run.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from mixer_ext.context import FileOutputSpec, HlsOutputSpec, OutputSpec

log = logging.getLogger(__name__)

STATE_NAME = ".mixer-run.json"


@dataclass
class RunState:
    first_join: float | None = None
    status_sequence: int = 0
    runs: int = 0
    ended: bool = False


def state_path(specs: list[OutputSpec], hls_dir: Path) -> Path | None:
    """Where a run with these outputs keeps its state (None: nowhere to keep it)."""
    for spec in specs:
        if isinstance(spec, HlsOutputSpec):
            return Path(hls_dir) / spec.name / STATE_NAME
    for spec in specs:
        if isinstance(spec, FileOutputSpec):
            return spec.path.with_name(f".{spec.path.name}.run.json")
    return None


class RunStateFile:
    """Loads and saves one ``RunState`` (no-ops without a path)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> RunState | None:
        """The state of an unfinished earlier run, or None (none, finished, unreadable)."""
        if self.path is None:
            return None
        try:
            raw = json.loads(self.path.read_text())
            state = RunState(
                first_join=None if raw.get("first_join") is None else float(raw["first_join"]),
                status_sequence=int(raw.get("status_sequence", 0)),
                runs=int(raw.get("runs", 0)),
                ended=bool(raw.get("ended", False)),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("run state %s is unreadable (%s); starting a new run", self.path, exc)
            return None
        return None if state.ended else state

    def save(self, state: RunState) -> None:
        """Write ``state`` atomically; a failure is logged, never raised (the run goes on)."""
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(asdict(state)))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot save the run state %s: %s", self.path, exc.strerror or exc)
