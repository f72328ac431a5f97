"""One Janus session over the WebSocket API: transactions, events, keepalive.

Janus speaks JSON over a websocket with the ``janus-protocol`` subprotocol.
Every request carries a ``transaction``; the final reply to it is
``success``/``error`` for core requests, ``ack`` for a keepalive, and an
``event`` (after an ``ack``) for a plugin ``message``.  Everything else the
server sends (plugin events without one of our transactions, ``webrtcup``,
``media``, ``hangup``, ``detached``, ``timeout``...) is an *event*, queued in
order for one consumer.

``JanusSession`` owns two named tasks: the reader (the only coroutine that
reads the socket, so it never awaits anything but the socket and the event
queue) and the keepalive (every ``KEEPALIVE_INTERVAL`` s; Janus drops a
session that is silent for 60 s).  ``close()`` cancels both with a timeout.

Malformed messages (not JSON, not an object, no ``janus`` field) are logged
with the ``janus:`` prefix, counted in ``mixer_janus_dropped_messages_total``
and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from mixer_ext import metrics
from mixer_ext.log import log_event
from mixer_ext.redact import redact_url
from mixer_ext.tasks import stop_tasks

log = logging.getLogger(__name__)

#: seconds between keepalives; Janus' default session_timeout is 60 s
KEEPALIVE_INTERVAL = 25.0
#: seconds to wait for the final reply to one request
REQUEST_TIMEOUT = 15.0
#: queued server events before the session is considered broken (see ``_on_event``)
EVENT_QUEUE_SIZE = 1024
#: largest message accepted from Janus (an SDP offer for many feeds is a few 10 kB)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: seconds to let a task finish after cancellation
TASK_STOP_TIMEOUT = 5.0

JANUS_SUBPROTOCOL = Subprotocol("janus-protocol")


class JanusError(Exception):
    """Janus refused a request: ``code`` is the core or plugin error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"janus error {code}: {message}")
        self.code = code
        self.reason = message


class JanusSessionClosed(Exception):
    """The websocket closed (or the session ended) while a request was pending."""


def drop_message(why: str, detail: str = "") -> None:
    """Log and count a Janus message this client cannot use."""
    metrics.JANUS_DROPPED_MESSAGES.labels(why).inc()
    log_event(log, "janus: dropped message", logging.WARNING, why=why, detail=detail[:200])


class JanusSession:
    """A Janus session: ``open()``, ``attach()``, ``message()``, ``next_event()``, ``close()``.

    ``api_secret`` and ``token`` are added to every request when set.  The
    websocket URL may carry credentials, so it is only logged redacted.
    """

    def __init__(
        self,
        url: str,
        *,
        api_secret: str | None = None,
        token: str | None = None,
        name: str = "janus",
    ) -> None:
        self.url = url
        self.session_id: int | None = None
        self._api_secret = api_secret
        self._token = token
        self._name = name
        self._ws: ClientConnection | None = None
        self._pending: dict[str, tuple[asyncio.Future[dict[str, Any]], bool]] = {}
        # Policy: bounded; when the consumer falls this far behind, the
        # session is closed as broken rather than dropping signaling state.
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = asyncio.Event()
        #: why the session ended, when it ended on its own ("" when closed by us)
        self.close_detail = ""

    # --- lifecycle ------------------------------------------------------------

    async def open(self, within: float = REQUEST_TIMEOUT) -> None:
        """Connect the websocket and create the session.

        Raises ``OSError``/``InvalidHandshake``/``TimeoutError`` when Janus
        cannot be reached and ``JanusError`` when it refuses (403: bad API
        secret or token).
        """
        try:
            self._ws = await asyncio.wait_for(
                connect(
                    self.url,
                    subprotocols=[JANUS_SUBPROTOCOL],
                    max_size=MAX_MESSAGE_BYTES,
                    open_timeout=within,
                    ping_interval=20,
                    ping_timeout=20,
                ),
                within,
            )
        except InvalidURI as exc:
            raise OSError(f"invalid Janus URL {redact_url(self.url)}") from exc
        self._tasks.append(asyncio.create_task(self._read_loop(), name=f"{self._name}-reader"))
        reply = await self.request({"janus": "create"}, within=within)
        self.session_id = _int_field(reply.get("data"), "id")
        self._tasks.append(
            asyncio.create_task(self._keepalive_loop(), name=f"{self._name}-keepalive")
        )

    async def close(self) -> None:
        """Destroy the session (best effort), close the socket, stop the tasks.  Idempotent."""
        if self._ws is not None and not self.closed.is_set() and self.session_id is not None:
            with contextlib.suppress(Exception):
                await self.request({"janus": "destroy"}, within=3.0)
        self.closed.set()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 3.0)
        await stop_tasks(self._tasks, TASK_STOP_TIMEOUT, log)
        self._tasks.clear()
        self._fail_pending()
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(None)

    # --- requests ----------------------------------------------------------------

    async def request(
        self, msg: dict[str, Any], *, handle_id: int | None = None, within: float = REQUEST_TIMEOUT
    ) -> dict[str, Any]:
        """Send one request and return its final reply; raise ``JanusError`` on ``error``."""
        if self._ws is None or self.closed.is_set():
            raise JanusSessionClosed(self.close_detail or "session closed")
        tx = secrets.token_hex(8)
        msg = {**msg, "transaction": tx}
        if self.session_id is not None and msg["janus"] != "create":
            msg["session_id"] = self.session_id
        if handle_id is not None:
            msg["handle_id"] = handle_id
        if self._api_secret:
            msg["apisecret"] = self._api_secret
        if self._token:
            msg["token"] = self._token
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[tx] = (fut, msg["janus"] == "keepalive")
        try:
            await self._ws.send(json.dumps(msg))
            reply = await asyncio.wait_for(fut, within)
        except ConnectionClosed as exc:
            raise JanusSessionClosed("websocket closed") from exc
        finally:
            self._pending.pop(tx, None)
        if reply.get("janus") == "error":
            err = reply.get("error")
            code = err.get("code") if isinstance(err, dict) else None
            text = err.get("reason") if isinstance(err, dict) else None
            raise JanusError(code if isinstance(code, int) else 0, str(text or "unknown error"))
        return reply

    async def attach(self, plugin: str) -> int:
        """Attach a handle to ``plugin``; returns the handle id."""
        reply = await self.request({"janus": "attach", "plugin": plugin})
        return _int_field(reply.get("data"), "id")

    async def detach(self, handle_id: int) -> None:
        """Detach a handle (Janus tears down whatever the plugin set up for it)."""
        await self.request({"janus": "detach"}, handle_id=handle_id)

    async def message(
        self,
        handle_id: int,
        body: dict[str, Any],
        jsep: dict[str, Any] | None = None,
        *,
        within: float = REQUEST_TIMEOUT,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """A plugin request: returns (plugindata.data, jsep); plugin errors raise ``JanusError``."""
        msg: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            msg["jsep"] = jsep
        reply = await self.request(msg, handle_id=handle_id, within=within)
        data = plugin_data(reply)
        if data is None:
            raise JanusError(0, "reply without plugindata")
        if "error_code" in data or "error" in data:
            code = data.get("error_code")
            raise JanusError(code if isinstance(code, int) else 0, str(data.get("error", "")))
        rjsep = reply.get("jsep")
        return data, rjsep if isinstance(rjsep, dict) else None

    def post_local_event(self, msg: dict[str, Any]) -> None:
        """Queue an event that did not come from Janus (e.g. the media path failed locally)."""
        self._on_event(msg)

    async def next_event(self) -> dict[str, Any] | None:
        """The next server event, or ``None`` once the session has closed."""
        if self.closed.is_set() and self._events.empty():
            return None
        return await self._events.get()

    # --- tasks ----------------------------------------------------------------------

    async def _read_loop(self) -> None:
        if self._ws is None:
            raise JanusSessionClosed("not connected")
        try:
            async for raw in self._ws:
                self._on_message(raw)
            self.close_detail = self.close_detail or "websocket closed by Janus"
        except ConnectionClosed as exc:
            self.close_detail = self.close_detail or f"websocket closed: {exc}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the task's top level: log where it came from
            log.exception("janus: reader failed")
            self.close_detail = f"reader failed: {exc}"
        finally:
            self._shutdown_from_reader()

    def _shutdown_from_reader(self) -> None:
        self.closed.set()
        self._fail_pending()
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(None)

    def _on_message(self, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            drop_message("not-json", str(raw)[:80])
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("janus"), str):
            drop_message("no-janus-field", str(raw)[:80])
            return
        kind = msg["janus"]
        tx = msg.get("transaction")
        if isinstance(tx, str) and tx in self._pending:
            fut, ack_is_final = self._pending[tx]
            if kind == "ack" and not ack_is_final:
                return  # the plugin's reply follows as an event with this transaction
            if not fut.done():
                fut.set_result(msg)
                return
            # A second event with the same transaction (VideoRoom's "updating"
            # reply is followed by the "updated" offer): an ordinary event.
            self._on_event(msg)
            return
        if kind == "ack":
            return  # Janus may ack a plugin message after its reply event
        if kind in ("success", "error") and tx is not None:
            # a late reply to a request that already timed out
            drop_message("stale-reply", kind)
            return
        if kind == "timeout":
            self.close_detail = "session timed out on Janus"
        self._on_event(msg)

    def _on_event(self, msg: dict[str, Any]) -> None:
        try:
            self._events.put_nowait(msg)
        except asyncio.QueueFull:
            log_event(log, "janus: event queue full, closing session", logging.ERROR)
            self.close_detail = "event queue overflow"
            self.closed.set()
            if self._ws is not None:
                self._tasks.append(
                    asyncio.create_task(self._ws.close(), name=f"{self._name}-close")  # type: ignore[arg-type]
                )

    async def _keepalive_loop(self) -> None:
        try:
            while not self.closed.is_set():
                await asyncio.sleep(KEEPALIVE_INTERVAL)
                await self.request({"janus": "keepalive"})
        except asyncio.CancelledError:
            raise
        except (JanusError, JanusSessionClosed, TimeoutError) as exc:
            log_event(log, "janus: keepalive failed", logging.WARNING, error=str(exc))
            self.close_detail = self.close_detail or f"keepalive failed: {exc}"
            if self._ws is not None:
                await self._ws.close()

    def _fail_pending(self) -> None:
        for fut, _ in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(JanusSessionClosed(self.close_detail or "session closed"))


def plugin_data(msg: dict[str, Any]) -> dict[str, Any] | None:
    """``plugindata.data`` of a Janus message, when it is an object."""
    pd = msg.get("plugindata")
    if not isinstance(pd, dict):
        return None
    data = pd.get("data")
    return data if isinstance(data, dict) else None


def _int_field(obj: object, key: str) -> int:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, int):
        raise JanusError(0, f"reply without integer {key!r}")
    return value


__all__ = [
    "InvalidHandshake",
    "JanusError",
    "JanusSession",
    "JanusSessionClosed",
    "drop_message",
    "plugin_data",
]
