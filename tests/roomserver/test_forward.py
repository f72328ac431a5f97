"""The room relay forwards encoded Opus (aiortc to aiortc on loopback, real codecs).

publisher --(Opus or PCMU)--> relay receiver  ==tap==> PacketFanout
                                                        |  ForwardedTrack (av.Packet)
subscriber <----------(Opus, packetized only)---- relay sender
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamTrack

from mixer_ext.roomserver.forward import ForwardedTrack, PacketFanout, tap_receiver
from mixer_ext.sim.tracks import ToneTrack
from tests.support.room_util import record, spectrum_peak

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

TONE_HZ = 660.0


async def connect(a: RTCPeerConnection, b: RTCPeerConnection) -> None:
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)


def pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


@contextlib.asynccontextmanager
async def relay(
    codec: str,
) -> AsyncIterator[tuple[PacketFanout, MediaStreamTrack, MediaStreamTrack]]:
    """A publisher sending a tone with ``codec``, relayed to one subscriber; yields
    (fanout, the relay's own receive track, the subscriber's received track)."""
    publisher, relay_in, relay_out, subscriber = pc(), pc(), pc(), pc()
    try:
        transceiver = publisher.addTransceiver(ToneTrack(TONE_HZ), direction="sendonly")
        caps = RTCRtpSender.getCapabilities("audio").codecs
        transceiver.setCodecPreferences([c for c in caps if c.mimeType == f"audio/{codec}"])
        received: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        fanouts: list[PacketFanout] = []

        @relay_in.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            receiver = next(
                t.receiver for t in relay_in.getTransceivers() if t.receiver.track is track
            )
            fanouts.append(PacketFanout(receiver, "test"))
            received.set_result(track)

        await connect(publisher, relay_in)
        relay_track = await asyncio.wait_for(received, 10)
        fanout = fanouts[0]
        relay_out.addTransceiver(fanout.subscribe(), direction="sendonly")
        heard: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        subscriber.on("track", lambda t: heard.done() or heard.set_result(t))
        await connect(relay_out, subscriber)
        yield fanout, relay_track, await asyncio.wait_for(heard, 10)
    finally:
        for c in (publisher, relay_in, relay_out, subscriber):
            await c.close()


@pytest.mark.parametrize("codec", ["opus", "PCMU"])
async def test_subscriber_hears_the_publisher_without_the_relay_decoding(codec: str) -> None:
    async with relay(codec) as (fanout, relay_track, heard):
        samples = await record(heard, 2.5)
        peak, rms = spectrum_peak(samples[len(samples) // 3 :])
        assert abs(peak - TONE_HZ) < 8, f"heard {peak:.1f} Hz through the relay"
        assert rms > 0.05
        assert fanout.frames > 80, fanout.frames
        # nothing reached the relay's decoder: its own track never got a frame
        assert relay_track._queue.qsize() == 0  # type: ignore[attr-defined]
        if codec == "opus":
            assert fanout.transcoded == 0
        else:
            assert fanout.transcoded > 80, "PCMU must be transcoded once to Opus"


async def test_muted_publisher_forwards_nothing_and_resumes() -> None:
    async with relay("opus") as (fanout, _, heard):
        await record(heard, 0.5)
        fanout.enabled = False
        await asyncio.sleep(0.3)  # drain what was in flight
        with contextlib.suppress(TimeoutError):
            while True:
                await asyncio.wait_for(heard.recv(), 0.3)
        before = fanout.frames
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(heard.recv(), 1.0)
        assert fanout.frames > before + 30  # the publisher kept sending; nothing went on
        fanout.enabled = True
        samples = await record(heard, 1.5)
        peak, _ = spectrum_peak(samples[len(samples) // 3 :])
        assert abs(peak - TONE_HZ) < 8


async def test_slow_subscriber_drops_the_oldest() -> None:
    class _Stub:
        def __init__(self) -> None:
            import queue

            self._RTCRtpReceiver__decoder_queue: queue.Queue[object] = queue.Queue()

    fanout = PacketFanout(_Stub(), "stub")  # type: ignore[arg-type]
    track = fanout.subscribe()
    opus = type("Codec", (), {"mimeType": "audio/opus"})()
    for n in range(25):
        fanout._on_frame(opus, type("F", (), {"data": bytes([n]), "timestamp": n * 960})())
    assert isinstance(track, ForwardedTrack) and track.dropped == 15
    first = await track.recv()
    assert bytes(first) == bytes([15]) and first.pts == 15 * 960
    await fanout.stop()
    with pytest.raises(Exception):  # noqa: B017 - MediaStreamError once the queue drains
        for _ in range(20):
            await track.recv()


def test_tap_refuses_a_receiver_without_the_queue() -> None:
    """If aiortc renames its decoder queue, forwarding must fail loudly, not decode silently."""
    with pytest.raises(RuntimeError, match="needs updating"):
        tap_receiver(object(), lambda c, f: None, lambda: None)  # type: ignore[arg-type]
