"""The player's test kit: a real HLS stream, a real web server, a real browser.

* ``write_hls`` writes an HLS stream the way a worker does: MPEG-TS segments
  with AAC and a ``timed_id3`` stream carrying ``id3_txxx(payload.to_json())``
  every 500 ms, stamped with the pts of the audio window it describes, in a
  live playlist that gets ``#EXT-X-ENDLIST`` when the stream ends. Paced, it
  runs in real time after a pre-roll, so a player sees a live stream grow.
* ``PlayerServer`` serves the page, ``config.json`` and the HLS on
  127.0.0.1 with aiohttp, laid out as the worker's HTTP endpoint lays them out
  (``/``, ``/config.json``, ``/hls/<name>/index.m3u8``).
* ``drive_player`` runs ``tests/browser/pages/player_check.mjs`` (Debian chromium via
  npm playwright-core) against any page URL and returns what it saw;
  ``check_played_live_stream`` and ``check_meters_in_sync`` assert on it.
  Point them at a real worker's endpoint to check a real run the same way::

      report = await drive_player(worker_url, identities=["t1", "t2", "t3"], screenshot=png)
      check_played_live_stream(report, identities={"t1": False, "t2": False, "t3": True})
      check_meters_in_sync(report)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiohttp import web

from mixer_ext.core.frames import PAYLOAD_SAMPLES, PAYLOAD_SECONDS, SAMPLE_RATE
from mixer_ext.core.payload import MUTED, MetadataPayload
from mixer_ext.outputs.carriers import id3_txxx
from tests.support.browser import page_script
from tests.support.env import ROOT, free_port

PLAYER_DIR = ROOT / "player_demo"
ID3_TIME_BASE = Fraction(1, 90_000)


@dataclass(frozen=True)
class Voice:
    """A fake talker: a tone whose loudness changes every 500 ms window.

    ``gains`` cycle over the windows (0..1 of ``peak``); ``None`` = muted for
    the whole stream (the payload says ``-1`` and the voice adds nothing).
    """

    freq_hz: float
    gains: tuple[float, ...] | None
    peak: int = 9000

    @property
    def muted(self) -> bool:
        return self.gains is None

    def window(self, index: int, start: int) -> np.ndarray:
        """int16 mono samples of window ``index`` starting at sample ``start``."""
        if self.gains is None:
            return np.zeros(PAYLOAD_SAMPLES, dtype=np.int16)
        gain = self.gains[index % len(self.gains)]
        t = (np.arange(PAYLOAD_SAMPLES) + start) / SAMPLE_RATE
        return np.round(np.sin(2 * np.pi * self.freq_hz * t) * self.peak * gain).astype(np.int16)


#: three talkers, carol muted: what the screenshot shows
THREE_TALKERS: Mapping[str, Voice] = {
    "alice": Voice(440.0, (0.9, 0.6, 1.0, 0.25, 0.8, 0.05, 0.7, 0.95)),
    "bob": Voice(660.0, (0.1, 0.35, 0.02, 0.5, 0.2, 0.4, 0.0, 0.3)),
    "carol": Voice(550.0, None),
}


@dataclass
class HlsRun:
    """What ``write_hls`` wrote: every payload, in order."""

    directory: Path
    payloads: list[MetadataPayload] = field(default_factory=list)
    error: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def playlist(self) -> Path:
        return self.directory / "index.m3u8"


def write_hls(
    run: HlsRun,
    voices: Mapping[str, Voice],
    *,
    seconds: float,
    segment_seconds: float = 2.0,
    preroll_seconds: float = 0.0,
    paced: bool = True,
    list_size: int = 6,
    rewrite: Mapping[int, str] | None = None,
) -> None:
    """Write ``seconds`` of the mix of ``voices`` as HLS into ``run.directory``.

    The first ``preroll_seconds`` are written at once (a stream that was
    already running); the rest in real time when ``paced``. ``rewrite`` maps
    a window index to the text its ID3 tag carries instead of the payload
    (to send malformed or out-of-order payloads). Blocking: run it
    in a thread. Errors land in ``run.error``; ``run.finished`` is set last.
    """
    try:
        run.directory.mkdir(parents=True, exist_ok=True)
        options = {
            "hls_time": str(segment_seconds),
            "hls_list_size": str(list_size),
            "hls_segment_type": "mpegts",
            # playlist and segments appear atomically (written as .tmp, renamed)
            "hls_flags": "temp_file+independent_segments",
        }
        container = av.open(
            str(run.playlist),
            "w",
            format="hls",
            options=options,
            # a sparse data stream must not hold audio back in the interleaver
            container_options={"max_interleave_delta": "0"},
        )
        try:
            audio = container.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
            audio.bit_rate = 96_000
            data = container.add_data_stream("timed_id3")
            windows = round(seconds * SAMPLE_RATE / PAYLOAD_SAMPLES)
            t_start = time.monotonic()
            for index in range(windows):
                start = index * PAYLOAD_SAMPLES
                ahead = start / SAMPLE_RATE - preroll_seconds
                if paced and ahead > 0:
                    time.sleep(max(0.0, t_start + ahead - time.monotonic()))
                tracks = {name: v.window(index, start) for name, v in voices.items()}
                levels = {
                    name: MUTED if voices[name].muted else int(np.max(np.abs(x.astype(np.int32))))
                    for name, x in tracks.items()
                }
                payload = MetadataPayload(seq=index, levels=levels, pts=start)
                run.payloads.append(payload)
                text = (rewrite or {}).get(index, payload.to_json())
                tag = av.Packet(id3_txxx(text))
                tag.stream = data
                tag.time_base = ID3_TIME_BASE
                tag.pts = tag.dts = start * 90_000 // SAMPLE_RATE
                container.mux(tag)
                mix = np.clip(sum(x.astype(np.int32) for x in tracks.values()), -32767, 32767)
                stereo = np.repeat(mix.astype(np.int16), 2).reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
                frame.sample_rate = SAMPLE_RATE
                frame.pts = start
                frame.time_base = Fraction(1, SAMPLE_RATE)
                container.mux(audio.encode(frame))
            container.mux(audio.encode(None))
        finally:
            container.close()  # writes the last segment and #EXT-X-ENDLIST
    except BaseException as exc:
        run.error = exc
    finally:
        run.finished.set()


def start_hls_thread(run: HlsRun, voices: Mapping[str, Voice], **kwargs: Any) -> threading.Thread:
    """``write_hls`` in a daemon thread (encode + mux stay off the event loop)."""
    thread = threading.Thread(
        target=write_hls, args=(run, voices), kwargs=kwargs, name="hls-writer", daemon=True
    )
    thread.start()
    return thread


class PlayerServer:
    """The page, its config.json and HLS directories over HTTP on 127.0.0.1.

    ``hls_root/<name>/index.m3u8`` is served at ``/hls/<name>/index.m3u8``.
    ``fail_first`` maps a URL path to how many requests get a 404 before the
    file is served (a stream that does not exist yet when the page opens).
    """

    def __init__(
        self,
        hls_root: Path,
        *,
        config: Mapping[str, Any] | None = None,
        fail_first: Mapping[str, int] | None = None,
    ) -> None:
        self.hls_root = hls_root
        self.config = config
        self.fail_first = dict(fail_first or {})
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        left = self.fail_first.get(request.path, 0)
        if left > 0:
            self.fail_first[request.path] = left - 1
            raise web.HTTPNotFound(text="no such stream (yet)")
        response = await handler(request)
        if request.path.endswith(".m3u8"):
            response.headers["Cache-Control"] = "no-cache"  # a live playlist changes
        return response

    async def _index(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(PLAYER_DIR / "index.html")

    async def _config(self, _request: web.Request) -> web.Response:
        if self.config is None:
            raise web.HTTPNotFound()
        return web.json_response(self.config)

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/", self._index)
        app.router.add_get("/config.json", self._config)
        app.router.add_static("/hls", self.hls_root)
        app.router.add_static("/", PLAYER_DIR)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@dataclass(frozen=True)
class PlayerReport:
    """What the browser saw (see tests/browser/pages/player_check.mjs)."""

    raw: dict[str, Any]
    stderr: str

    @property
    def states(self) -> list[str]:
        return list(self.raw["states"])

    @property
    def samples(self) -> list[dict[str, Any]]:
        return list(self.raw["samples"])

    @property
    def shown(self) -> list[dict[str, Any]]:
        return list(self.raw["shown"])

    @property
    def meters(self) -> dict[str, dict[str, Any]]:
        return {m["identity"]: m for m in self.raw["meters"] or []}

    def summary(self) -> str:
        """Short text for assertion messages."""
        last = self.samples[-1] if self.samples else {}
        return (
            f"states={self.states} timed_out={self.raw['timedOut']!r} "
            f"problem={self.raw['problem']!r} last={last} console={self.raw['console'][:5]} "
            f"page_errors={self.raw['pageErrors']} stderr={self.stderr[-500:]!r}"
        )


async def drive_player(
    page_url: str,
    *,
    scenario: str = "play",
    identities: Sequence[str] = (),
    screenshot: Path | None = None,
    autoplay: bool = False,
    budget_s: float = 60.0,
) -> PlayerReport:
    """Open ``page_url`` in headless Chromium and run ``scenario`` on it.

    ``play``: start playback (pressing Play with the keyboard if autoplay is
    refused), wait for meters of every identity in ``identities``, take the
    screenshot, then wait for the ended state. ``retry``: wait for the error
    state, press Retry with the keyboard, then play to the end. ``nosource``:
    wait for the page to say it has nothing to play. Returns the report; the
    caller asserts. ``budget_s`` bounds the whole scenario. Requires node,
    node_modules and /usr/bin/chromium.
    """
    spec = {
        "url": page_url,
        "scenario": scenario,
        "identities": list(identities),
        "screenshot": str(screenshot) if screenshot else None,
        "autoplay": autoplay,
        "timeoutMs": int(budget_s * 1000),
    }
    proc = await asyncio.create_subprocess_exec(
        *page_script("player_check.mjs"),
        json.dumps(spec),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_PATH": str(ROOT / "node_modules")},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), budget_s + 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"player driver did not finish within {budget_s + 30:.0f} s") from None
    stderr = err.decode(errors="replace")
    if proc.returncode != 0:
        raise AssertionError(f"player driver failed (exit {proc.returncode}): {stderr[-2000:]}")
    lines = out.decode().strip().splitlines()
    if not lines:
        raise AssertionError(f"player driver printed no report: {stderr[-2000:]}")
    return PlayerReport(raw=json.loads(lines[-1]), stderr=stderr)


def check_played_live_stream(
    report: PlayerReport,
    *,
    identities: dict[str, bool],
    expect_live: bool = True,
    min_played_s: float = 4.0,
) -> None:
    """The assertions a person would make; ``identities`` maps identity -> muted.

    Reusable for a real worker run: pass the talkers' identities.
    """
    why = report.summary()
    assert report.raw["timedOut"] is None, why
    assert report.raw["pageErrors"] == [], why
    assert report.raw["engine"] == "hlsjs", why
    # loading first, then live (or playing), and it reaches the ended state
    assert report.states[0] in ("loading", "blocked"), why
    assert ("live" if expect_live else "playing") in report.states, why
    assert report.states[-1] == "ended", why
    assert "error" not in report.states, why
    # the audio played: currentTime advanced, by seconds
    times = [s["ct"] for s in report.samples]
    assert max(times) - min(times) >= min_played_s, why
    # how far behind live was shown while live
    latencies = [s["latency"] for s in report.samples if s["state"] == "live" and s["latency"]]
    assert latencies, f"no latency shown while live: {why}"
    assert all(0 < x < 30 for x in latencies), latencies
    # the meters: one per talker, labelled, muted one muted
    meters = report.meters
    assert set(meters) == set(identities), f"meters {sorted(meters)}: {why}"
    for identity, muted in identities.items():
        m = meters[identity]
        assert m["label"] == identity, m
        assert (m["valuemin"], m["valuemax"]) == (0, 32767), m
        assert m["muted"] is muted, m
        if muted:
            assert m["valuetext"] == "muted" and "muted" in m["shownText"], m
        else:
            assert m["valuetext"] != "muted", m
    # no malformed or out-of-order payload warnings from a clean stream
    warnings = [c["text"] for c in report.raw["console"] if "[mixer-player]" in c["text"]]
    assert warnings == [], warnings


def check_ended_at_the_streams_end(report: PlayerReport) -> None:
    """hls.js played a live LL-HLS stream that ended (ENDLIST) to its very end, once.

    What went wrong before the writer paced its end (``hls/writer.py``): after
    ENDLIST hls.js 1.7.4 reloaded a part it had already appended and its AAC remuxer
    put it after the buffer (0.19 s heard twice, the media 0.19 s longer than the
    playlist), or it never loaded the last part (never Ended).  So: hls.js called
    endOfStream, loaded no part twice once the playlist had ended, the media is as
    long as the playlist (within two AAC frames: the last frame is whole in the TS),
    and the playhead reached the end.
    """
    why = report.summary()
    trace = report.raw.get("hlsTrace") or []
    final = report.raw.get("hlsFinal")
    assert final is not None and trace, f"no hls.js trace: {why}"
    events = [e["ev"] for e in trace]
    assert "LEVEL_UPDATED_ENDED" in events, f"hls.js never saw ENDLIST: {why}"
    assert "BUFFER_EOS" in events, f"hls.js never ended the stream: {final}"
    ended_at = events.index("LEVEL_UPDATED_ENDED")
    before = {(e["sn"], e["part"]) for e in trace[:ended_at] if e["ev"] == "FRAG_LOADED"}
    again = [
        (e["sn"], e["part"])
        for e in trace[ended_at:]
        if e["ev"] == "FRAG_LOADED" and (e["sn"], e["part"]) in before
    ]
    assert again == [], f"hls.js loaded (sn, part) {again} again after ENDLIST: {final}"
    assert abs(final["duration"] - final["edge"]) < 2 * 1024 / SAMPLE_RATE, final
    assert final["ended"] and final["ct"] >= final["duration"] - 0.05, final


def check_meters_in_sync(report: PlayerReport) -> None:
    """Each payload is shown when the playhead reaches the audio it describes.

    Payload s describes stream time s * 0.5 s (+ a constant offset of the media
    timeline). Shown at playback time, currentTime - 0.5 * s is the same for
    every payload up to the browser's cue-update granularity (~0.25 s). Shown
    at download time, a whole 2 s segment's payloads would appear at once and
    that difference would spread over 1.5 s or more.
    """
    shown = report.shown
    assert len(shown) >= 8, f"only {len(shown)} payloads shown: {report.summary()}"
    seqs = [p["s"] for p in shown]
    # every payload of the audio played is shown, once, in order: none lost.  A gap is
    # only allowed where the playhead jumped over that audio (a seek: hls.js going back
    # to its live target after falling behind), since that audio was never heard.
    seeks = report.raw.get("seeks") or []
    for a, b in itertools.pairwise(shown):
        assert b["s"] > a["s"], seqs
        if b["s"] != a["s"] + 1:
            jumped = any(a["cueStart"] < t <= b["cueStart"] + PAYLOAD_SECONDS for t in seeks)
            assert jumped, f"payloads {a['s']}..{b['s']} skipped without a seek: {seqs}, {seeks}"

    # from where playback started (the cues of the first segment too)
    first_ct = min(s["ct"] for s in report.samples if s["ct"] > 0)
    assert shown[0]["mediaTime"] <= first_ct + PAYLOAD_SECONDS + 0.3, (shown[0], first_ct)
    offsets = [p["mediaTime"] - PAYLOAD_SECONDS * p["s"] for p in shown]
    spread = max(offsets) - min(offsets)
    assert spread < 0.6, f"payloads not in step with playback: offsets {offsets}"
    # and each was shown while its own cue was the one playing
    for p in shown:
        assert p["cueStart"] - 0.05 <= p["mediaTime"] <= p["cueStart"] + PAYLOAD_SECONDS + 0.35, p
