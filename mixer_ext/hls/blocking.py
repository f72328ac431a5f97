"""LL-HLS blocking playlist reload and delta-update rules, with no I/O.

RFC 8216bis draft-22 6.2.5: a client asks ``?_HLS_msn=M[&_HLS_part=N][&_HLS_skip=YES|v2]``;
the server holds the request until the playlist holds segment M (or its part
N), then sends the whole playlist (or its delta update).  This module turns
a query and a playlist ``Position`` into one decision; the HTTP origin only
waits, renders and answers:

* ``Ready(skip)``: answer now;
* ``Wait(msn, part)``: hold until ``is_ready()`` says the playlist reached
  that point, or until ``hold_limit()`` seconds passed (then 503);
* ``Reject(status, reason)``: 400 for a malformed or impossible request.

Rules (spec 6.2.5.2, with the choices made here):

* ``_HLS_part`` without ``_HLS_msn``, a non-integer or negative value, or an
  ``_HLS_skip`` other than ``YES``/``v2``: 400.
* ``_HLS_msn`` more than 2 past the last complete segment: 400.
* ``_HLS_part`` beyond the Advance Part Limit (3 parts, or 3 / PART-TARGET
  parts when the target is under 1 s) ahead of the last listed part: 400.
* a part index past the last part of a complete segment means part 0 of
  the next segment (hls.js #5608 asks that way).
* directives on a playlist without parts: ``_HLS_part`` is ignored (the
  request waits for the segment).
* after ``#EXT-X-ENDLIST`` every directive is ignored (answer now, whole).
* a request that waited 3 target durations: 503 (spec: SHOULD).
* ``_HLS_skip`` is honoured only when the playlist offers delta updates
  (CAN-SKIP-UNTIL); otherwise the whole playlist is sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from mixer_ext.hls.playlist import Position

#: held requests time out after this many target durations (spec 6.2.5.2: 503)
HOLD_TARGET_DURATIONS = 3


@dataclass(frozen=True, slots=True)
class Directives:
    msn: int | None = None
    part: int | None = None
    skip: bool = False


@dataclass(frozen=True, slots=True)
class Ready:
    skip: bool


@dataclass(frozen=True, slots=True)
class Wait:
    msn: int
    #: None: wait for the complete segment
    part: int | None
    skip: bool


@dataclass(frozen=True, slots=True)
class Reject:
    status: int
    reason: str


Decision = Ready | Wait | Reject


def _integer(name: str, value: str) -> int | Reject:
    if not value.isdigit() or len(value) > 12:
        return Reject(400, f"{name} must be a non-negative integer, got {value[:20]!r}")
    return int(value)


def parse_directives(query: Mapping[str, str]) -> Directives | Reject:
    """Read ``_HLS_msn``, ``_HLS_part``, ``_HLS_skip`` from a query (other keys ignored)."""
    msn: int | None = None
    part: int | None = None
    if "_HLS_msn" in query:
        got = _integer("_HLS_msn", query["_HLS_msn"])
        if isinstance(got, Reject):
            return got
        msn = got
    if "_HLS_part" in query:
        if msn is None:
            return Reject(400, "_HLS_part needs _HLS_msn")
        got = _integer("_HLS_part", query["_HLS_part"])
        if isinstance(got, Reject):
            return got
        part = got
    skip = False
    if "_HLS_skip" in query:
        value = query["_HLS_skip"]
        if value not in ("YES", "v2"):
            return Reject(400, f"_HLS_skip must be YES or v2, got {value[:20]!r}")
        skip = True
    return Directives(msn, part, skip)


def advance_part_limit(part_target: float) -> int:
    """Spec 6.2.5.2: 3 parts, or 3 / PART-TARGET when the target is under 1 s."""
    return math.ceil(3 / part_target - 1e-9) if part_target < 1 else 3


def decide(d: Directives, pos: Position) -> Decision:
    """What to do with a playlist request carrying ``d`` against a playlist at ``pos``."""
    skip = d.skip and pos.can_skip
    if pos.ended or d.msn is None:
        return Ready(skip)
    part = d.part if pos.part_target is not None else None
    if d.msn > pos.last_msn + 2:
        return Reject(
            400, f"_HLS_msn={d.msn} is too far ahead (last complete segment {pos.last_msn})"
        )
    if part is not None:
        if pos.part_target is None:  # an invariant of this class
            raise RuntimeError("internal: pos.part_target not set")
        limit = advance_part_limit(pos.part_target)
        if d.msn == pos.last_msn + 1 and part > pos.open_parts - 1 + limit:
            return Reject(400, f"_HLS_part={part} is too far ahead")
        if d.msn == pos.last_msn + 2 and part > limit - 1:
            return Reject(400, f"_HLS_part={part} is too far ahead")
    if is_ready(d.msn, part, pos):
        return Ready(skip)
    return Wait(d.msn, part, skip)


def is_ready(msn: int, part: int | None, pos: Position) -> bool:
    """Whether a playlist at ``pos`` holds segment ``msn`` (or its part ``part``) or later."""
    if pos.ended:
        return True
    if part is None:
        return pos.last_msn >= msn
    if msn < pos.last_msn:
        return True  # segment msn + 1 is complete: anything of msn is out
    if msn == pos.last_msn:
        if part < pos.last_msn_parts or pos.last_msn_parts == 0:
            return True
        return pos.open_parts >= 1  # past its last part = part 0 of the next segment
    if msn == pos.last_msn + 1:
        return pos.open_parts > part
    return False


def hold_limit(pos: Position) -> float:
    """Seconds a request may be held before it gets 503."""
    return float(HOLD_TARGET_DURATIONS * pos.target_duration)
