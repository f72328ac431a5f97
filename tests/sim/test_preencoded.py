"""Pre-encoded Opus talkers (issue 13.4): a real aiortc receiver hears the tone.

Sender and receiver are two real aiortc peer connections on this machine; the
receiver is stock aiortc (its own jitter buffer and Opus decoder), and the tone
is checked by FFT of what it decoded.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from mixer_ext.sim.preencoded import OpusLoop, PreEncodedOpusTrack, encode_tone
from mixer_ext.testing.spectrum import peak_hz


async def _receive(tracks: list[PreEncodedOpusTrack], seconds: float) -> list[np.ndarray]:
    config = RTCConfiguration(iceServers=[])
    sender, receiver = RTCPeerConnection(config), RTCPeerConnection(config)
    got: list[asyncio.Future[np.ndarray]] = []
    loop = asyncio.get_running_loop()

    async def read(track: object, fut: asyncio.Future[np.ndarray]) -> None:
        chunks: list[np.ndarray] = []
        while sum(len(c) for c in chunks) < seconds * 48_000:
            frame = await track.recv()  # type: ignore[attr-defined]
            chunks.append(frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0])
        fut.set_result(np.concatenate(chunks).astype(np.float64))

    readers: list[asyncio.Task[None]] = []

    @receiver.on("track")
    def on_track(track: object) -> None:
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        got.append(fut)
        readers.append(asyncio.create_task(read(track, fut), name="test-read"))

    try:
        for t in tracks:
            sender.addTrack(t)
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        for _ in range(100):
            if len(got) == len(tracks):
                break
            await asyncio.sleep(0.05)
        return list(await asyncio.wait_for(asyncio.gather(*got), 15))
    finally:
        for r in readers:
            r.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await sender.close()
        await receiver.close()


def test_encode_tone_makes_a_seamless_loop_once() -> None:
    loop = encode_tone(440)
    assert len(loop.payloads) == 5  # 440 Hz * 0.1 s = 44 whole periods
    assert all(len(p) > 3 for p in loop.payloads)
    assert len(loop.silence) <= 3  # a DTX frame, not audio
    with pytest.raises(ValueError, match="frequency"):
        encode_tone(5)


@pytest.mark.slow
def test_two_preencoded_talkers_are_heard_by_a_stock_receiver() -> None:
    tones = (440, 1000)
    loops: list[OpusLoop] = [encode_tone(f, 0.3) for f in tones]
    pcm = asyncio.run(_receive([PreEncodedOpusTrack(lp) for lp in loops], 1.5))
    heard = sorted(peak_hz(x[24_000:]) for x in pcm)
    assert heard == pytest.approx(sorted(tones), abs=3)
    for x in pcm:
        assert 0.2 * 32767 < np.max(np.abs(x[24_000:])) < 0.4 * 32767


def test_a_silent_preencoded_talker_decodes_to_silence() -> None:
    (pcm,) = asyncio.run(
        _receive([PreEncodedOpusTrack(encode_tone(440), silent=True, dtx_every=1)], 1.0)
    )
    assert np.max(np.abs(pcm)) < 50
