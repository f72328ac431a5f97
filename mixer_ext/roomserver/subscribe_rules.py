"""Twilio's Subscribe Rules (Track Subscriptions API): which tracks a participant receives.

No I/O.  A rule is ``{"type": "include"|"exclude"}`` and one or more filters, all of which a
track must match: ``"all": true``, ``"publisher": identity``, ``"track": name``,
``"kind": "audio"|"video"|"data"``, ``"priority": "low"|"standard"|"high"`` (every track here
is ``standard``).  Rules apply in order and the last rule that matches a track decides; a
track no rule matches is not received.  A participant with no rules set (``None``) follows
its ``automaticSubscription`` choice instead; an empty list of rules receives nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

KINDS = ("audio", "video", "data")
PRIORITIES = ("low", "standard", "high")
FILTERS = ("all", "publisher", "track", "kind", "priority")
#: at most this many rules in one update (Twilio documents no number; a bound is ours)
MAX_RULES = 20
#: every track here has the default priority
TRACK_PRIORITY = "standard"


class RuleError(ValueError):
    """Rules that are not Twilio's grammar (the message names what is wrong)."""


@dataclass(frozen=True, slots=True)
class SubscribeRule:
    type: str
    all: bool = False
    publisher: str | None = None
    track: str | None = None
    kind: str | None = None
    priority: str | None = None

    def matches(self, publisher: str, track: str, kind: str, priority: str) -> bool:
        return (
            (self.publisher is None or self.publisher == publisher)
            and (self.track is None or self.track == track)
            and (self.kind is None or self.kind == kind)
            and (self.priority is None or self.priority == priority)
        )

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.all:
            out["all"] = True
        for name in ("publisher", "track", "kind", "priority"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def _rule(n: int, raw: object) -> SubscribeRule:
    if not isinstance(raw, dict):
        raise RuleError(f"rule {n} is not an object")
    unknown = sorted(set(raw) - {"type", *FILTERS})
    if unknown:
        raise RuleError(f"rule {n}: unknown field {unknown[0][:30]!r}")
    kind = raw.get("type")
    if kind not in ("include", "exclude"):
        raise RuleError(f"rule {n}: type must be 'include' or 'exclude'")
    if not any(name in raw for name in FILTERS):
        raise RuleError(f"rule {n}: needs a filter (all, publisher, track, kind, priority)")
    if "all" in raw and raw["all"] is not True:
        raise RuleError(f"rule {n}: all must be true")
    for name in ("publisher", "track"):
        if name in raw and not (isinstance(raw[name], str) and raw[name]):
            raise RuleError(f"rule {n}: {name} must be a non-empty string")
    if "kind" in raw and raw["kind"] not in KINDS:
        raise RuleError(f"rule {n}: kind must be one of {', '.join(KINDS)}")
    if "priority" in raw and raw["priority"] not in PRIORITIES:
        raise RuleError(f"rule {n}: priority must be one of {', '.join(PRIORITIES)}")
    return SubscribeRule(
        type=kind,
        all="all" in raw,
        publisher=raw.get("publisher"),
        track=raw.get("track"),
        kind=raw.get("kind"),
        priority=raw.get("priority"),
    )


def parse_rules(raw: str) -> tuple[SubscribeRule, ...]:
    """The ``Rules`` form parameter: a JSON list of rules (the twilio client sends JSON)."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise RuleError("Rules is not JSON") from None
    if isinstance(data, dict) and "rules" in data:  # {"rules": [...]} as some apps send it
        data = data["rules"]
    if not isinstance(data, list):
        raise RuleError("Rules must be a JSON list of rules")
    if len(data) > MAX_RULES:
        raise RuleError(f"at most {MAX_RULES} rules")
    return tuple(_rule(n, item) for n, item in enumerate(data))


def wanted(
    rules: Sequence[SubscribeRule], publisher: str, track: str, kind: str, priority: str
) -> bool:
    """Whether a track is received under ``rules``: the last matching rule decides."""
    decision = False
    for rule in rules:
        if rule.matches(publisher, track, kind, priority):
            decision = rule.type == "include"
    return decision
