"""The timed-metadata payload (its in-band carriers are in ``mixer_ext.outputs.carriers``).

Payload (compact JSON, as the hosted extension sent it)::

    {"s":23,"p":{"alice":{"v":300},"bob":{"v":-1}}}

``s`` rises by exactly 1 per payload for the whole run; ``v`` is the
participant's peak absolute sample value (0..32767) over the 500 ms window,
``-1`` when the participant has no enabled audio track.

"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

MAX_LEVEL = 32_767
MUTED = -1


@dataclass(frozen=True, slots=True)
class MetadataPayload:
    """One payload: ``seq`` (``s``), ``levels`` (identity -> v) and the pts of its window."""

    seq: int
    levels: Mapping[str, int]
    #: sample index (48 kHz) of the first sample of the window described
    pts: int = 0
    _json: str = field(default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.seq < 0:
            raise ValueError("seq must be >= 0")
        for identity, v in self.levels.items():
            if not (v == MUTED or 0 <= v <= MAX_LEVEL):
                raise ValueError(f"level of {identity!r} out of range: {v}")
        text = json.dumps(
            {"s": self.seq, "p": {k: {"v": int(v)} for k, v in self.levels.items()}},
            separators=(",", ":"),
            ensure_ascii=False,
        )
        object.__setattr__(self, "_json", text)

    def to_json(self) -> str:
        return self._json

    @classmethod
    def from_json(cls, text: str | bytes, pts: int = 0) -> MetadataPayload:
        """Parse and validate a payload; raises ValueError with a one-line reason."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"payload is not JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("s"), int):
            raise ValueError("payload has no integer 's'")
        p = data.get("p")
        if not isinstance(p, dict):
            raise ValueError("payload has no object 'p'")
        levels: dict[str, int] = {}
        for identity, entry in p.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("v"), int):
                raise ValueError(f"participant {identity!r} has no integer 'v'")
            levels[identity] = entry["v"]
        return cls(seq=data["s"], levels=levels, pts=pts)
