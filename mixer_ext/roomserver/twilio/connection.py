"""The twilio-video.js connection protocol (TCMP v2), server side, with no I/O.

What the SDK's ``TwilioConnection`` (``lib/twilioconnection.js``) does and expects:

* it opens the WebSocket and sends ``{"type": "hello", "version": 2, "id", "timeout": ms,
  "body"?}``; it retries the hello ``welcomeTimeout`` (5 s) apart, three times, then fails
  with 53000.  The body is the first signaling message (``ice`` or ``connect``);
* the server answers ``{"type": "welcome", "negotiatedTimeout": ms}``; from then on the SDK
  sends a ``heartbeat`` when it has sent nothing for ``negotiatedTimeout - 200`` ms, and
  closes (53000/timeout) when it has *received* nothing for ``3 * negotiatedTimeout``;
* signaling messages travel as ``{"type": "msg", "body": {...}}`` both ways; every message
  counts as a heartbeat;
* ``bye`` ends the connection (the SDK sends it on ``disconnect()``); ``bad`` refuses a hello.

``TcmpServer`` is the server's half: feed it received text and the time, send bodies,
and take the text to write from ``data_to_send()``.  Time is monotonic seconds, passed in.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

VERSION = 2
#: the SDK asks for 5000 ms; the server grants at most this
MAX_TIMEOUT_MS = 5000
MIN_TIMEOUT_MS = 1000
#: a client that has not said hello within this many seconds is dropped
HELLO_TIMEOUT = 15.0
#: consecutive heartbeat periods without a message before the client counts as gone
MISSED_HEARTBEATS = 3
#: the server's heartbeat goes out this much earlier than the period, seconds
HEARTBEAT_MARGIN = 0.5


class State(enum.Enum):
    AWAITING_HELLO = "awaiting-hello"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Opened:
    """The hello was accepted; ``body`` is the signaling message it carried, if any."""

    body: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Received:
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Closed:
    #: ``bye`` (the client left), ``timeout`` (no hello or heartbeats), ``protocol`` (garbage)
    reason: str
    detail: str = ""


Event = Opened | Received | Closed


class TcmpServer:
    """One client connection's TCMP state machine (the server side)."""

    def __init__(self, now: float) -> None:
        self.state = State.AWAITING_HELLO
        self.timeout = MAX_TIMEOUT_MS / 1000.0
        self._opened_at = now
        self._last_received = now
        self._last_sent = now
        self._outgoing: list[str] = []

    # --- input -------------------------------------------------------------------------------

    def receive(self, text: str | bytes, now: float) -> list[Event]:
        """Handle one WebSocket text message received at ``now``."""
        if self.state is State.CLOSED:
            return []
        try:
            message = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            return self._violation("not JSON")
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return self._violation("not a TCMP message")
        kind = message["type"]
        self._last_received = now
        if self.state is State.AWAITING_HELLO:
            if kind != "hello":
                self._queue({"type": "bad", "reason": f"expected hello, got {kind[:20]!r}"})
                return []
            return self._hello(message, now)
        if kind == "heartbeat":
            return []
        if kind == "msg":
            body = message.get("body")
            if not isinstance(body, dict):
                return self._violation("msg without a body object")
            return [Received(body)]
        if kind == "bye":
            self.state = State.CLOSED
            return [Closed("bye")]
        if kind == "hello":  # a retried hello after our welcome crossed it: welcome again
            self._welcome(message, now)
            return []
        return self._violation(f"unknown message type {kind[:20]!r}")

    def _hello(self, message: dict[str, Any], now: float) -> list[Event]:
        if message.get("version") != VERSION:
            self._queue({"type": "bad", "reason": f"unsupported version {message.get('version')}"})
            return []
        body = message.get("body")
        if body is not None and not isinstance(body, dict):
            self._queue({"type": "bad", "reason": "hello body must be an object"})
            return []
        requested = message.get("timeout")
        if isinstance(requested, int | float) and not isinstance(requested, bool):
            self.timeout = max(MIN_TIMEOUT_MS, min(MAX_TIMEOUT_MS, float(requested))) / 1000.0
        self.state = State.OPEN
        self._welcome(message, now)
        return [Opened(body)]

    def _welcome(self, message: dict[str, Any], now: float) -> None:
        welcome: dict[str, Any] = {
            "type": "welcome",
            "negotiatedTimeout": round(self.timeout * 1000),
        }
        if isinstance(message.get("id"), str):
            welcome["id"] = message["id"]
        self._queue(welcome)

    def _violation(self, detail: str) -> list[Event]:
        self.state = State.CLOSED
        return [Closed("protocol", detail)]

    # --- output ------------------------------------------------------------------------------

    def send(self, body: dict[str, Any], now: float) -> None:
        """Queue one signaling message for the client (dropped once closed)."""
        if self.state is State.OPEN:
            self._queue({"type": "msg", "body": body})
            self._last_sent = now

    def bye(self) -> None:
        """Queue ``bye`` and close: the server ends the connection."""
        if self.state is not State.CLOSED:
            self._queue({"type": "bye"})
            self.state = State.CLOSED

    def _queue(self, message: dict[str, Any]) -> None:
        self._outgoing.append(json.dumps(message, separators=(",", ":")))

    def data_to_send(self) -> list[str]:
        """Texts to write, in order; each is one WebSocket message."""
        out, self._outgoing = self._outgoing, []
        return out

    # --- time --------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Event]:
        """Send a heartbeat when due; report a client that went silent."""
        if self.state is State.AWAITING_HELLO:
            if now - self._opened_at >= HELLO_TIMEOUT:
                self.state = State.CLOSED
                return [Closed("timeout", "no hello")]
            return []
        if self.state is State.CLOSED:
            return []
        if now - self._last_received >= MISSED_HEARTBEATS * self.timeout:
            self.state = State.CLOSED
            return [Closed("timeout", f"nothing received for {now - self._last_received:.1f} s")]
        if now - self._last_sent >= self.timeout - HEARTBEAT_MARGIN:
            self._queue({"type": "heartbeat"})
            self._last_sent = now
        return []

    def next_deadline(self) -> float:
        """When ``tick`` next has something to do (monotonic seconds)."""
        if self.state is State.AWAITING_HELLO:
            return self._opened_at + HELLO_TIMEOUT
        return min(
            self._last_sent + self.timeout - HEARTBEAT_MARGIN,
            self._last_received + MISSED_HEARTBEATS * self.timeout,
        )


def pending(conn: TcmpServer) -> int:
    """How many texts wait in ``conn`` to be written (for the I/O layer's bound)."""
    return len(conn._outgoing)
