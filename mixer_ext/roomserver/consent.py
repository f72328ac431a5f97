"""ICE consent freshness as RFC 7675 times it, for the room server's peer connections.

aioice (0.13, under aiortc 1.16) checks consent every 5 s with **one** STUN request that gets
**0.5 s** for its answer (``retransmissions=0``: RETRY_RTO), and closes the connection after six
such checks in a row without one.  A response that arrives after 0.5 s counts as none.  So a
peer whose answers take longer than half a second for 30 s loses its session, though it is
alive and consenting: a phone on a congested uplink (bufferbloat RTTs of a second and more),
a browser on a throttled CPU, or the room server itself when the machine starves it.  The last
is what ``bench/churn.py`` measured (see ``docs/howto/migrate-speaker-app.md``): with the
process behind, every socket's queue holds a second or more of packets, each consent answer
waits its turn there and is read 1-5 s after it came, every check "fails", and after 30 s
both sides closed healthy connections (server: "Consent to send expired", 53405 to the client;
the client's own aioice did the same with the server's late answers).

RFC 7675 section 5.1 asks less: consent expires when no authenticated response to a request
sent **in the last 30 s** has arrived; requests go out every 5 s (randomised 0.8-1.2x).
``keep_consent(pc)`` replaces aioice's task on each of ``pc``'s ICE connections by one that
does that: every interval it starts a check (a STUN transaction that aioice retransmits at
0.5, 1.5 and 3.5 s and waits for until 7.5 s, so a late or once-lost answer still counts;
checks overlap, one never delays the next), and it closes the connection (as aioice would:
``close()``, which aiortc turns into connectionState ``closed`` and the front-ends into a
departure) only when ``EXPIRY`` seconds passed since the last answer.  A peer that is really
gone still leaves after 30 s, as before.

aioice internals used (aioice 0.x as aiortc 1.16 pins it; ``tests/test_aiortc_private_api.py``
fails if they change): ``RTCIceTransport._connection``; ``Connection._nominated``,
``_query_consent_task``, ``build_request``, ``remote_password``; ``CandidatePair.protocol``
and ``StunProtocol.request``.  ``icerestart.py`` restarts this task after an ICE restart.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from aioice import stun
from aiortc import RTCPeerConnection

from mixer_ext.tasks import stop_tasks

log = logging.getLogger(__name__)

#: seconds between consent checks, randomised 0.8-1.2x (RFC 7675 section 5.1)
INTERVAL = 5.0
#: seconds without an authenticated answer after which consent has expired (RFC 7675)
EXPIRY = 30.0
#: STUN retransmissions of one check: sent at 0, 0.5, 1.5, 3.5 s, answered until 7.5 s
RETRANSMISSIONS = 3
#: the task name that marks a connection as already ours
TASK_NAME = "ice-consent-rfc7675"


def ice_connections(pc: RTCPeerConnection) -> list[Any]:
    """The aioice ``Connection`` of each of ``pc``'s ICE transports (one when bundled)."""
    seen: list[Any] = []
    for transceiver in pc.getTransceivers():
        transport = transceiver.receiver.transport
        conn = getattr(transport.transport, "_connection", None) if transport else None
        if conn is not None and conn not in seen:
            seen.append(conn)
    return seen


def keep_consent(pc: RTCPeerConnection) -> None:
    """Check consent on ``pc``'s ICE connections as RFC 7675 times it (idempotent).

    Call it once media is up (connectionState ``connected``): aioice's own task, started by
    ``connect()``, is cancelled (and awaited by the new one); the new task belongs to the
    connection like the old one (aioice's ``close()`` cancels and awaits it).
    """
    for conn in ice_connections(pc):
        old = conn._query_consent_task
        if old is not None and old.get_name() == TASK_NAME and not old.done():
            continue
        if old is None and not conn._nominated:
            continue  # not connected yet (or closed): aioice starts its own once connected
        conn._query_consent_task = asyncio.get_running_loop().create_task(
            freshness(conn, replaced=old), name=TASK_NAME
        )


async def freshness(conn: Any, replaced: asyncio.Task[None] | None = None) -> None:
    """Consent checks on ``conn`` until it closes or consent expires (then it closes it)."""
    if replaced is not None:
        await stop_tasks([replaced], 1.0, log)
    loop = asyncio.get_running_loop()
    last_answer = loop.time()
    checks: set[asyncio.Task[None]] = set()

    async def check(pair: Any) -> None:
        nonlocal last_answer
        request = conn.build_request(pair, nominate=False)
        try:
            await pair.protocol.request(
                request,
                pair.remote_addr,
                integrity_key=conn.remote_password.encode("utf8"),
                retransmissions=RETRANSMISSIONS,
            )
        except stun.TransactionError:
            return  # no answer (yet): only EXPIRY without any answer ends consent
        except ConnectionError:
            return  # the socket closed under it: the connection is closing anyway
        last_answer = loop.time()

    try:
        while True:
            await asyncio.sleep(INTERVAL * (0.8 + 0.4 * random.random()))
            if loop.time() - last_answer > EXPIRY:
                log.info("ICE consent expired: no answer for %.0f s", loop.time() - last_answer)
                conn._query_consent_task = None  # close() must not await this task
                await stop_tasks(checks, 1.0, log)
                await conn.close()
                return
            for pair in list(conn._nominated.values()):
                task = loop.create_task(check(pair), name="ice-consent-check")
                checks.add(task)
                task.add_done_callback(checks.discard)
    finally:
        await stop_tasks(checks, 1.0, log)
