"""The ``mixer-ext`` command line.

Each subcommand lives in its own module, which provides
``add_arguments(parser)`` and ``main(args, settings) -> int``; modules are
imported only when their command runs (aiortc and PyAV are slow to import).
Errors that a user can fix (``ConfigError``) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from mixer_ext import __version__
from mixer_ext.errors import ConfigError
from mixer_ext.log import setup_logging, stop_logging
from mixer_ext.settings import load_settings

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("mixer_ext.worker.runner", "join a room and stream the mix (the extension itself)"),
    "room-server": ("mixer_ext.roomserver.cli", "run the embedded room server"),
    "compose": (
        "mixer_ext.roomserver.compose.cli",
        "mix one composition job (JSON) from the recordings' storage, outside the room server",
    ),
    "token": ("mixer_ext.roomserver.tokens", "print an access token for the embedded room server"),
    "talker": (
        "mixer_ext.sim.talker",
        "join a room as a synthetic participant playing a tone or WAV",
    ),
    "api": (
        "mixer_ext.api.cli",
        "serve the Media v1 API (MediaProcessors, PlayerStreamers) that launches workers",
    ),
    "demo": (
        "mixer_ext.sim.demo",
        "room server + three talkers + the Media v1 API launching the mixer + player",
    ),
}

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixer-ext",
        description="Self-hosted live audio mixer extension. Settings come from MIXER_* "
        "environment variables (docs/reference/settings.md).",
    )
    parser.add_argument("--version", action="version", version=f"mixer-ext {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Arguments are added lazily in main() for the chosen command only.
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # First pass: find the command; second pass: parse its own arguments.
    known, _ = parser.parse_known_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    module_name: str = known._module
    module = importlib.import_module(module_name)
    sub_parser = argparse.ArgumentParser(
        prog=f"mixer-ext {known.command}", description=COMMANDS[known.command][1]
    )
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"mixer-ext: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(settings.log_level, settings.log_format.value)
    try:
        rc: int = module.main(args, settings)
    except ConfigError as exc:
        stop_logging()  # the queued lines first, then the one-line error
        print(f"mixer-ext {known.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    finally:
        stop_logging()  # every queued line is written before the process exits
    logging.shutdown()
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
