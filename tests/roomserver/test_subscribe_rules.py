"""The subscribe-rule grammar of the Track Subscriptions API (roomserver/subscribe_rules.py)."""

from __future__ import annotations

import pytest

from mixer_ext.roomserver.subscribe_rules import RuleError, parse_rules, wanted


def test_rule_grammar() -> None:
    rules = parse_rules('[{"type": "include", "all": true}, {"type": "exclude", "publisher": "d"}]')
    assert wanted(rules, "bob", "mic", "audio", "standard")
    assert not wanted(rules, "d", "mic", "audio", "standard")  # the last match decides
    kinds = parse_rules('[{"type": "include", "kind": "audio", "track": "mic"}]')
    assert wanted(kinds, "x", "mic", "audio", "standard")
    assert not wanted(kinds, "x", "screen", "audio", "standard")  # filters are ANDed
    assert not wanted(parse_rules("[]"), "x", "mic", "audio", "standard")
    for bad, says in (
        ("nope", "not JSON"),
        ('{"type": "include"}', "list"),
        ('[{"type": "maybe", "all": true}]', "type"),
        ('[{"type": "include"}]', "filter"),
        ('[{"type": "include", "kind": "smell"}]', "kind"),
        ('[{"type": "include", "priority": "urgent"}]', "priority"),
        ('[{"type": "include", "all": false}]', "all must be true"),
        ('[{"type": "include", "colour": "red"}]', "unknown field"),
    ):
        with pytest.raises(RuleError, match=says):
            parse_rules(bad)
