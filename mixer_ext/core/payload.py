"""The timed-metadata payload (its in-band carriers are in ``mixer_ext.outputs.carriers``).

Payload (compact JSON, as the hosted extension sent it)::

    {"s":23,"p":{"alice":{"v":300},"bob":{"v":-1}}}

``s`` rises by exactly 1 per payload for the whole run; ``v`` is the
participant's peak absolute sample value (0..32767) over the 500 ms window,
``-1`` when the participant has no enabled audio track.

``AppPayload`` is an app's own timed metadata (``POST
/v1/PlayerStreamers/{Sid}/TimedMetadata``): its string, verbatim, stamped with the
stream time at which it reached the mixer.  Both travel the same path (mixer clock ->
encoder fan-out -> every output); the carriers tell them apart (``outputs.carriers``:
an ID3 ``TXXX`` described ``app``, an ``onTextData`` with ``source: "app"``).

Timing (issue 26): a payload is stamped with the **end** of the window it
describes, as a level meter shows the last 500 ms: payload ``s`` has pts
``(s + 1) * 24000`` (stream time ``(s + 1) * 0.5`` s).  It can only be built
once that window's last sample is mixed, and it then enters every carrier right
after the audio up to that sample, so by pts it is never behind the audio it
travels with: an HLS part or segment carries it no later than the first part
holding the audio at its pts, an RTMP ``onTextData`` tag is never stamped
behind the audio already sent, and the WebSocket sends it as that audio is
mixed, before any listener hears it.  ``-1`` is then "muted for the whole
window that ends here", so also at that moment.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

MAX_LEVEL = 32_767
MUTED = -1
#: the largest app metadata string, in UTF-8 bytes (the API refuses longer ones)
MAX_APP_METADATA_BYTES = 1024
#: what marks an app's payload in the stream (the ID3 TXXX description)
APP_SOURCE = "app"


@dataclass(frozen=True, slots=True)
class MetadataPayload:
    """One payload: ``seq`` (``s``), ``levels`` (identity -> v) and the pts of its window."""

    seq: int
    levels: Mapping[str, int]
    #: sample index (48 kHz) at which the payload takes effect: the end of the window
    #: it describes (one past its last sample); see the module doc
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


@dataclass(frozen=True, slots=True)
class AppPayload:
    """An app's timed metadata: ``text`` verbatim, at ``pts`` (48 kHz samples)."""

    text: str
    pts: int = 0

    def __post_init__(self) -> None:
        size = len(self.text.encode("utf-8"))
        if size > MAX_APP_METADATA_BYTES:
            raise ValueError(f"app metadata is {size} bytes (at most {MAX_APP_METADATA_BYTES})")


#: what the mixer clock hands the outputs beside the audio
TimedPayload = MetadataPayload | AppPayload
