"""The dominant-speaker detector (``roomserver.speakers``) on a fake clock: RFC 6464
levels as a browser sends them (50 packets/s), no I/O."""

from __future__ import annotations

from mixer_ext.roomserver.speakers import TICK, DominantSpeaker

TONE, QUIET = 20, 127  # RFC 6464: -20 dBov talking, digital silence


def run(script: list[tuple[float, dict[str, int]]]) -> list[tuple[float, str | None]]:
    """``script``: (seconds, levels by participant) segments; the changes, timed."""
    d = DominantSpeaker()
    now, changes = 0.0, []
    for seconds, levels in script:
        end = now + seconds
        while now < end - 1e-9:
            for _ in range(round(TICK / 0.02)):
                for who, level in levels.items():
                    d.level(who, level)
            now += TICK
            changed, who = d.tick(now)
            if changed:
                changes.append((round(now, 1), who))
    return changes


def test_two_talkers_taking_turns_change_once_per_turn() -> None:
    turns = [(3.0, {"A": TONE, "B": QUIET}), (3.0, {"A": QUIET, "B": TONE})] * 3
    changes = run(turns)
    assert [who for _, who in changes] == ["A", "B", "A", "B", "A", "B"], changes
    for n, (at, _) in enumerate(changes):
        assert n * 3.0 < at < n * 3.0 + 2.0, changes  # within 2 s of the turn


def test_an_interjection_or_a_louder_overlap_too_short_changes_nothing() -> None:
    changes = run(
        [
            (3.0, {"A": TONE, "B": QUIET}),
            (0.6, {"A": TONE, "B": 5}),  # B talks over A, louder, briefly
            (2.0, {"A": TONE, "B": QUIET}),
            (0.4, {"A": QUIET, "B": TONE}),  # a one-word interjection in a pause
            (2.0, {"A": TONE, "B": QUIET}),
        ]
    )
    assert [who for _, who in changes] == ["A"] and changes[0][0] < 1.0, changes


def test_silence_keeps_the_last_speaker_and_leaving_clears_it() -> None:
    d = DominantSpeaker()
    now = 0.0
    for _ in range(10):
        for _ in range(10):
            d.level("A", TONE)
        now += TICK
        d.tick(now)
    assert d.dominant == "A"
    for _ in range(20):  # A's packets stop (muted): nobody speaks
        now += TICK
        assert d.tick(now) == (False, "A")
    d.forget("A")
    assert d.tick(now + TICK) == (True, None)
