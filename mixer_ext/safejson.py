"""JSON from strangers: refuse nesting deeper than a bound before the decoder recurses.

CPython's ``json`` decoder recurses once per nested array or object and raises
``RecursionError`` (not ``JSONDecodeError``) at about a thousand levels: a 60 KB
message of ``[`` characters, inside every size limit, escapes a parser that only
catches ``JSONDecodeError`` (found by ``tests/test_fuzz_parsers.py``).
``loads_bounded`` counts the depth in one pass over the text first (brackets
inside strings do not count) and raises ``JSONDecodeError`` itself, so callers
keep one ``except``.
"""

from __future__ import annotations

import json
from typing import Any

#: deeper than any message or context this project reads, far below the recursion limit
MAX_DEPTH = 64


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (0 for a scalar)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def loads_bounded(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads``, but nesting deeper than ``max_depth`` is a ``JSONDecodeError``.

    Bytes must be UTF-8 (else ``UnicodeDecodeError``, as ``json.loads`` would raise
    for most invalid bytes).
    """
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8")
    if nesting_depth(text) > max_depth:
        raise json.JSONDecodeError(f"nested deeper than {max_depth} levels", text, 0)
    return json.loads(text)
