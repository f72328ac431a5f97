"""Errors that end a run with a one-line reason, and their formatting."""

from __future__ import annotations

from pydantic import ValidationError


class MixerError(Exception):
    """Base of the errors this project raises on purpose."""


class ConfigError(MixerError):
    """A setting or the extension context is wrong.  ``str()`` is one line."""


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path


def describe_validation_error(
    exc: ValidationError, *, prefix: str = "", upper: bool = False
) -> str:
    """Turn a pydantic error into one line: ``field: what is wrong``.

    Only the first problem is named (one line, no traceback); the count of
    the others follows so nothing is hidden.
    """
    errors = exc.errors(include_url=False)
    if not errors:
        return str(exc).splitlines()[0]
    first = errors[0]
    # Drop pydantic's tagged-union / function-validator noise from the location.
    loc = tuple(p for p in first.get("loc", ()) if not (isinstance(p, str) and "[" in p))
    field = _loc_to_path(loc)
    if upper:
        field = field.upper()
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        msg = "unknown field"
    elif first.get("type") == "missing":
        msg = "required field is missing"
    line = f"{prefix}{field}: {msg}" if field else msg
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return " ".join(line.split())
