"""``python -m mixer_ext.api``: the same as ``mixer-ext api``."""

from __future__ import annotations

import argparse
import sys

from mixer_ext.api.cli import add_arguments, main
from mixer_ext.errors import ConfigError
from mixer_ext.log import setup_logging
from mixer_ext.settings import load_settings


def _run() -> int:
    parser = argparse.ArgumentParser(prog="mixer-ext api")
    add_arguments(parser)
    args = parser.parse_args()
    try:
        settings = load_settings()
        setup_logging(settings.log_level, settings.log_format.value)
        return main(args, settings)
    except ConfigError as exc:
        print(f"mixer-ext api: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(_run())
