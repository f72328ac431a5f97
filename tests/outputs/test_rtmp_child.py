"""Issue 16.13: the RTMP child process gets only the environment it needs.

The child only muxes FLV and talks RTMP: it needs ``PATH``, ``PYTHONPATH``,
locale and time zone, not the worker's credentials.  Today it inherits the
whole environment would put the room secret, the API's auth token and
anything else the pod holds in one more process's ``/proc/<pid>/environ``
(it did, before ``outputs.rtmp.CHILD_ENV_NAMES``).  Real child process; the RTMP URL points at a
closed port, the child is inspected while it retries.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from mixer_ext.context import parse_output
from mixer_ext.encode.fanout import OutputPipeline
from mixer_ext.settings import Settings
from mixer_ext.testing.feed import feed
from tests.support.env import free_port

pytestmark = pytest.mark.slow

SECRETS = {
    "MIXER_ROOM_SECRET": "room-secret-0123456789abcdef0123456789",
    "MIXER_AUTH_TOKEN": "auth-token-0123456789abcdef",
    "MIXER_API_KEYS": "SK0123456789abcdef0123456789abcdef:sekrit",
    "UNRELATED_CLOUD_SECRET": "cloud-0123456789",
}


async def test_the_rtmp_child_does_not_inherit_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    url = f"rtmp://127.0.0.1:{free_port()}/live/key"
    pipeline = OutputPipeline([parse_output(url)], 96, Settings(), rtmp_first_delay=0.2)
    await pipeline.start()
    try:
        output = pipeline.outputs[0]
        deadline = time.monotonic() + 10
        tick = 0
        while getattr(output, "_child", None) is None and time.monotonic() < deadline:
            tick = await feed(pipeline, 0.1, speed=1.0, first_tick=tick)
        child = output._child  # type: ignore[attr-defined]
        assert child is not None, "no RTMP child started"
        raw = await asyncio.to_thread(Path(f"/proc/{child.proc.pid}/environ").read_bytes)
    finally:
        await pipeline.close()
    env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    leaked = sorted(name for name, value in SECRETS.items() if env.get(name) == value)
    assert not leaked, f"the RTMP child holds {leaked}"
    assert "PYTHONPATH" in env
