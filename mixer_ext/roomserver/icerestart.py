"""ICE restarts honoured by aiortc 1.16, for browsers whose media path broke (issue 21.4).

When a browser's network changes (or its UDP is cut), twilio-video.js notices the
inactivity (3 s) and re-offers with ``iceRestart``: new ``a=ice-ufrag``/``a=ice-pwd``
and, after the answer, connectivity checks from its new candidates.  Stock aiortc never
uses them: ``RTCIceTransport.start()`` returns at once when it has started before, and
its aioice ``Connection`` keeps the old credentials, so the browser's new checks are
refused (401, wrong USERNAME) until consent expires and the session ends.

``restart_ice(pc, offer_sdp)`` re-keys the connection in place, before the offer is
applied, as RFC 8445 section 9 asks of an ICE restart: new local credentials (they go
into the answer, which aiortc writes from the connection's own), the offer's remote
ones, and a fresh check list with no remote candidates of the old generation.  What
is *kept* is the point: the same aioice ``Connection``, its sockets, its receive queue
(the DTLS transport's reader task stays blocked on it) and its nominated pair, so the
DTLS association and SRTP keys survive (browsers keep DTLS across an ICE restart) and
media sent during the restart goes to the old path instead of raising
``ConnectionError``, which would end aiortc's sender tasks.  The browser's checks with
the new credentials are answered and triggered back (aioice's ``check_incoming``); the
pair it nominates replaces the old one in ``_nominated``, and the traffic moves.  The
consent freshness task is restarted (``consent.freshness``, RFC 7675 timing), so its
30 s expiry starts again: a path that never comes back still fails then, and the session
ends.

Only the controlled side is supported (the room server is: twilio-video.js offers first,
so it is the controlling agent); a controlling connection, which would have to nominate,
is refused with ``IceRestartError``.

This module is the only place that knows these internals (aiortc 1.16, pinned in
pyproject.toml, and the aioice 0.x it requires): ``RTCIceTransport._connection`` and
``RTCIceGatherer._remote_candidates_end``; aioice ``Connection``'s ``_local_username``,
``_local_password``, ``_check_list``, ``_check_list_done``, ``_check_list_state``,
``_remote_candidates``, ``_remote_candidates_end``, ``_nominated`` and
``_query_consent_task``.  ``tests/test_aiortc_private_api.py`` fails if they change
and restarts a real connection through it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from aioice.utils import random_string
from aiortc import RTCPeerConnection

from mixer_ext.roomserver import consent
from mixer_ext.tasks import stop_tasks

log = logging.getLogger(__name__)

#: seconds the old checks and consent task get to exit once cancelled
TASK_STOP_TIMEOUT = 1.0

_UFRAG = re.compile(r"^a=ice-ufrag:(\S+)\s*$", re.MULTILINE)
_PWD = re.compile(r"^a=ice-pwd:(\S+)\s*$", re.MULTILINE)


class IceRestartError(Exception):
    """The connection cannot be restarted (closed, or the controlling agent)."""


def ice_credentials(sdp: str | None) -> tuple[str, str] | None:
    """The first ``(ufrag, pwd)`` of ``sdp`` (bundled: every m-line has the same)."""
    if not sdp:
        return None
    ufrag, pwd = _UFRAG.search(sdp), _PWD.search(sdp)
    if ufrag is None or pwd is None:
        return None
    return ufrag.group(1), pwd.group(1)


def is_ice_restart(pc: RTCPeerConnection, offer_sdp: str) -> bool:
    """``offer_sdp`` changes the remote ICE credentials that ``pc`` has applied before."""
    current = pc.remoteDescription
    before = ice_credentials(current.sdp if current is not None else None)
    after = ice_credentials(offer_sdp)
    return before is not None and after is not None and before[0] != after[0]


def _ice_transports(pc: RTCPeerConnection) -> list[Any]:
    seen: list[Any] = []
    for transceiver in pc.getTransceivers():
        ice = transceiver.receiver.transport.transport
        if ice not in seen:
            seen.append(ice)
    return seen


async def restart_ice(pc: RTCPeerConnection, offer_sdp: str) -> None:
    """Re-key ``pc``'s ICE connections for the restart that ``offer_sdp`` asks for.

    Call it before ``setRemoteDescription(offer)``; the answer ``createAnswer`` makes
    afterwards carries the new local credentials.  The old checks and consent task are
    cancelled and awaited first; the new consent task belongs to the connection (aioice's
    ``close()`` cancels and awaits it).
    """
    remote = ice_credentials(offer_sdp)
    if remote is None:
        raise IceRestartError("the restart offer has no ICE credentials")
    for ice in _ice_transports(pc):
        if ice.state in ("closed", "failed"):
            raise IceRestartError(f"the ICE transport is {ice.state}")
        conn = ice._connection
        if conn.ice_controlling:
            raise IceRestartError("an ICE restart as the controlling agent is not supported")
        old = [pair.task for pair in conn._check_list] + [conn._query_consent_task]
        conn._query_consent_task = None
        await stop_tasks(old, TASK_STOP_TIMEOUT, log)
        conn._local_username = random_string(4)
        conn._local_password = random_string(22)
        conn.remote_username, conn.remote_password = remote
        conn._remote_candidates = []
        conn._remote_candidates_end = False
        ice.iceGatherer._remote_candidates_end = False
        conn._check_list = []
        conn._check_list_done = False
        conn._check_list_state = asyncio.Queue()
        # _nominated is kept: the old pair carries the media until the new one is nominated
        conn._query_consent_task = asyncio.get_running_loop().create_task(
            consent.freshness(conn), name=consent.TASK_NAME
        )
