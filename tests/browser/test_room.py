"""A real Chromium joins through the speaker page with a fake microphone; Python hears it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mixer_ext.connectors.base import ParticipantLeft, TrackEnabledChanged, TrackSubscribed
from tests.support.browser import page_script
from tests.support.room_util import (
    client,
    next_event,
    record,
    room_server,
    spectrum_peak,
    token,
    write_tone_wav,
)

pytestmark = pytest.mark.timeout(120)

TONE_HZ = 600.0


@pytest.mark.parametrize("open_mode", [False, True], ids=["pasted-token", "open-mode"])
async def test_chromium_speaker_page_is_heard(
    tmp_path: Path, artifacts_dir: Path, open_mode: bool
) -> None:
    """Pasted token on a default server; in open mode, an empty token field (server hands one)."""
    wav = tmp_path / "mic.wav"
    write_tone_wav(wav, TONE_HZ, 2.0, rate=48_000)  # 1200 whole cycles: seamless loop

    async with room_server(open_mode=open_mode) as server:
        listener = client(server, "web", "listener")
        await listener.connect()
        events = listener.events()
        page = f"http://127.0.0.1:{server.port}/"
        proc = await asyncio.create_subprocess_exec(
            *page_script("speaker_page.mjs"),
            page,
            "web",
            "browser",
            "" if open_mode else token("web", "browser"),
            str(wav),
            "5000",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            sub = await next_event(events, TrackSubscribed, identity="browser", within=45)
            samples = await record(sub.track, 2.5)
            peak, rms = spectrum_peak(samples[len(samples) // 3 :])
            assert abs(peak - TONE_HZ) < 8, f"heard {peak:.1f} Hz from the browser"
            assert rms > 0.02, f"browser tone too quiet (rms {rms:.4f})"
            muted = await next_event(events, TrackEnabledChanged, identity="browser", within=20)
            assert muted.enabled is False
            left = await next_event(events, ParticipantLeft, identity="browser", within=20)
            assert left.reason == "left"
            rc = await asyncio.wait_for(proc.wait(), 30)
            out = (await proc.stdout.read()).decode() if proc.stdout else ""
            err = (await proc.stderr.read()).decode() if proc.stderr else ""
            (artifacts_dir / f"speaker_page-{'open' if open_mode else 'token'}.log").write_text(
                out + err
            )
            assert rc == 0, err
            assert out.split() == ["JOINED", "MUTED", "LEFT"]
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await listener.disconnect()
