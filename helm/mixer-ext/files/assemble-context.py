"""Write the run's extension context: the ConfigMap's context plus RTMP URLs from Secrets.

Runs as the Job's init container (same image), so the worker needs no chart-specific
feature.  Why: an RTMP URL holds a stream key, so it must never sit in a ConfigMap; the
chart passes each one from a Secret as ``MIXER_CONTEXT_RTMP_<i>`` (i < ``
MIXER_CONTEXT_RTMP_COUNT``), and this script appends them to the context's outputs.

Usage: ``python assemble-context.py SOURCE_JSON DEST_JSON``.  DEST is written mode 0600
(into a memory-backed emptyDir in the chart) and replaced atomically.  The result is
checked with the worker's own parser, so a bad context fails here with one line (exit 2),
before anything connects; that line never shows a stream key (the parser redacts URLs).
"""

from __future__ import annotations

import json
import os
import sys

from mixer_ext.context import parse_context
from mixer_ext.errors import ConfigError

EXIT_USAGE = 2


def assemble(source_text: str, environ: dict[str, str]) -> str:
    """The context JSON with the RTMP outputs from ``environ`` appended."""
    context = json.loads(source_text)
    if not isinstance(context, dict):
        raise ConfigError("context must be a JSON object")
    raw_count = environ.get("MIXER_CONTEXT_RTMP_COUNT", "0")
    try:
        count = int(raw_count)
    except ValueError:
        raise ConfigError(f"MIXER_CONTEXT_RTMP_COUNT {raw_count!r} is not an integer") from None
    outputs = list(context.get("outputs") or [])
    for i in range(count):
        name = f"MIXER_CONTEXT_RTMP_{i}"
        url = environ.get(name, "").strip()
        if not url:
            raise ConfigError(f"{name} is empty or missing (check its Secret key)")
        outputs.append(url)
    context["outputs"] = outputs
    text = json.dumps(context, separators=(",", ":"), ensure_ascii=False)
    parse_context(text)  # raises ConfigError naming the field
    return text


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: assemble-context.py SOURCE_JSON DEST_JSON", file=sys.stderr)
        return EXIT_USAGE
    source, dest = argv[1], argv[2]
    try:
        with open(source, encoding="utf-8") as f:
            text = assemble(f.read(), dict(os.environ))
    except (OSError, ValueError, ConfigError) as exc:
        print(f"assemble-context: {exc}", file=sys.stderr)
        return EXIT_USAGE
    tmp = f"{dest}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, dest)
    print(f"assemble-context: wrote {dest} ({len(json.loads(text)['outputs'])} outputs)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
