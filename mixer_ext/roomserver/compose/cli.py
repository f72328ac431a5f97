"""``mixer-ext compose``: mix one composition job in this process, outside the room server.

What a composition runner other than the room server's local process pool runs (a
Kubernetes Job mounting the recordings' storage, or an operator re-running a composition
by hand): the job is ``spec.encode_job``'s JSON (``--job FILE``, ``-`` for stdin), its
media keys resolved under ``MIXER_RECORDINGS_DIR`` (or ``--root``).  Progress and the
result are JSON lines on stdout, ``{"progress": 0.05}`` … then
``{"done": {"duration", "size", "channels", "min_gain", "levels"}}``; exit 0.  A job that
cannot be read is one line on stderr and exit 2; a composition that fails (a recording
missing or unreadable) is ``{"failed": reason}`` and exit 1.

``--status FILE`` also keeps the last of those lines in ``FILE`` (replaced atomically,
so a reader never sees half of one): how the Kubernetes runner (``compose/kube.py``)
reads a Job's progress and result from the shared storage, without reading pod logs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import av

from mixer_ext.errors import ConfigError
from mixer_ext.roomserver.compose.engine import compose
from mixer_ext.roomserver.compose.spec import CompositionSpecError, decode_job
from mixer_ext.roomserver.compose.workers import PROGRESS_STEP
from mixer_ext.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--job", required=True, help="the composition job (JSON) to run; - reads stdin"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="the media storage's directory (default: MIXER_RECORDINGS_DIR)",
    )
    parser.add_argument(
        "--status",
        type=Path,
        default=None,
        help="also keep the last progress/done/failed line in this file (replaced atomically)",
    )


def _say(doc: dict[str, object], status: Path | None = None) -> None:
    line = json.dumps(doc)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if status is not None:
        part = status.with_name(f".{status.name}.{os.getpid()}.tmp")
        part.write_text(line + "\n")
        os.replace(part, status)


def main(args: argparse.Namespace, settings: Settings) -> int:
    root: Path = args.root or settings.recordings_dir
    try:
        text = sys.stdin.read() if args.job == "-" else Path(args.job).read_text()
    except OSError as exc:
        raise ConfigError(f"--job: cannot read {args.job[:200]!r}: {exc.strerror}") from None
    try:
        job = decode_job(text, root)
    except CompositionSpecError as exc:
        raise ConfigError(f"--job: {exc}") from None
    last = [0.0]

    def progress(fraction: float) -> None:
        if fraction - last[0] >= PROGRESS_STEP or fraction >= 1.0:
            last[0] = fraction
            _say({"progress": round(fraction, 4)}, args.status)

    try:
        result = compose(job, progress)
    except (OSError, ValueError, av.error.FFmpegError) as exc:
        _say({"failed": f"{type(exc).__name__}: {exc}"[:500]}, args.status)
        return 1
    _say(
        {
            "done": {
                "duration": result.duration,
                "size": result.size,
                "channels": result.channels,
                "min_gain": result.min_gain,
                "levels": result.levels.relative_to(root).as_posix() if result.levels else None,
            }
        },
        args.status,
    )
    return 0
