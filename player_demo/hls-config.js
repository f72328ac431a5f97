// hls.js settings for the worker's LL-HLS (0.192 s parts, PART-HOLD-BACK 0.6 s), and the
// one place that makes an hls.js instance for a player of this project.
//
// The one copy: the demo page (player.js) and the Live Player SDK-compatible module
// (live-player.js) make their hls.js here, and so do, through those pages, the browser
// tests (tests/browser/test_llhls.py, tests/browser/test_api_player.py) and the
// glass-to-ear benchmark (bench/glass_to_ear.py).  The values were chosen with
// bench/glass_to_ear.py and the stall counts of the browser test; the README's "Low
// latency" paragraph quotes the figures.
//
// Whether a stream is low-latency is learnt from the playlist itself: the first media
// playlist hls.js loads that carries #EXT-X-PART-INF (or a PART-HOLD-BACK in
// #EXT-X-SERVER-CONTROL) switches the tuning on before hls.js parses it, so the start
// position and the live target already use it.  No side file (config.json) is needed:
// a PlaybackGrant's playbackUrl through the API, the API's /player/ page and the worker's
// own page all play LL-HLS tuned (issue 24: the API's page had fallen back to hls.js's
// 3 target durations, 7.5 s behind live, because its config.json was missing).

export const LOW_LATENCY_CONFIG = Object.freeze({
  // Load parts (EXT-X-PART) and use blocking playlist reload.  No liveSyncDuration: the
  // target is the playlist's PART-HOLD-BACK (hls.js' own rule in lowLatencyMode), so the
  // origin's MIXER_HLS_PART_HOLD_BACK decides it for every listener, and a far listener
  // sets `targetLatency` instead (createHls below).
  lowLatencyMode: true,
  // After every stall hls.js raises its target for the rest of the session (at most by
  // one target duration): by 1 s by default, which one hiccup would make cost a second;
  // 0.2 s here, so a player on a starved machine or network backs off in small steps
  // (on this loaded 2-core machine, load 24, a 0.6 s target stalled 4-9 times in 30 s
  // where main's player, sitting ~1 s behind, stalled 0-6 times).
  liveSyncOnStallIncrease: 0.2,
  // hls.js' own catch-up only acts with more than 1 s buffered ahead, which a sub-second
  // target never has: it is off, and keepLatency() below does the catching up.
  maxLiveSyncPlaybackRate: 1,
});

/**
 * The catch-up: play this fast while the playhead is more than CATCH_UP_START behind
 * its target, back to 1 once within CATCH_UP_STOP (speech at 1.2 keeps its pitch:
 * preservesPitch is on by default).  hls.js starts about its target behind the edge
 * plus the time it took to load and append the first part, and without catch-up it
 * stays there (0.84-1.06 s instead of 0.6 s, bench/glass_to_ear.py before issue 27).
 */
export const CATCH_UP = Object.freeze({ rate: 1.2, start: 0.1, stop: 0.03 });
/** Further than this beyond the target (a stall, a background tab): jump to the target. */
export const MAX_LATENCY_MARGIN = 1.0;

/**
 * The playback rate the catch-up wants now.  Pure (tests/player_demo/js/hls_config.test.mjs).
 * `latency`, `target`: seconds behind the live edge (hls.js' `latency`, `targetLatency`);
 * `ahead`: seconds buffered ahead of the playhead; `partTarget`: the playlist's
 * PART-TARGET; `rate`: the current playback rate.  Never faster with less than 1.5
 * parts buffered ahead (a faster playhead would reach the end of the buffer and stall).
 */
export function catchUpRate({ latency, target, ahead, partTarget, rate }) {
  if (!(latency > 0) || !(target > 0)) return 1;
  const minAhead = Math.max(0.25, 1.5 * (partTarget || 0.2));
  if (ahead < minAhead) return 1;
  const excess = latency - target;
  if (excess > CATCH_UP.start) return CATCH_UP.rate;
  if (rate > 1 && excess > CATCH_UP.stop) return rate;
  return 1;
}

/** Seconds buffered ahead of the playhead in `media`. */
function bufferedAhead(media) {
  const t = media.currentTime;
  const b = media.buffered;
  for (let i = 0; i < b.length; i++) {
    if (b.start(i) <= t + 0.05 && t < b.end(i)) return b.end(i) - t;
  }
  return 0;
}

/**
 * Keep a tuned LL-HLS hls.js at its target latency: the catch-up above on every
 * `timeupdate`, and a ceiling (liveMaxLatencyDuration, target + MAX_LATENCY_MARGIN) that
 * makes hls.js jump back to its target when far behind.
 */
function keepLatency(Hls, hls) {
  let media = null;
  const onTime = () => {
    const details = hls.latestLevelDetails;
    if (!media || !hls.lowLatencyTuned || !details || !details.live || media.paused) return;
    const rate = catchUpRate({
      latency: hls.latency,
      target: hls.targetLatency,
      ahead: bufferedAhead(media),
      partTarget: details.partTarget,
      rate: media.playbackRate,
    });
    if (rate !== media.playbackRate) media.playbackRate = rate;
  };
  hls.on(Hls.Events.MEDIA_ATTACHED, (_e, data) => {
    media = data.media;
    media.addEventListener('timeupdate', onTime);
  });
  hls.on(Hls.Events.MEDIA_DETACHING, () => {
    if (media) media.removeEventListener('timeupdate', onTime);
    media = null;
  });
  hls.on(Hls.Events.LEVEL_UPDATED, () => {
    const target = hls.targetLatency;
    if (hls.lowLatencyTuned && target) hls.config.liveMaxLatencyDuration = target + MAX_LATENCY_MARGIN;
  });
}

/** Our own cues from FRAG_PARSING_METADATA instead of hls.js's (see player.js). */
const BASE_CONFIG = Object.freeze({ enableID3MetadataCues: false, enableEmsgMetadataCues: false });

/**
 * True when a playlist's text says the stream is LL-HLS: partial segments
 * (#EXT-X-PART-INF) or a PART-HOLD-BACK.  A multivariant playlist says neither; its
 * media playlist does.  Pure: tested by node --test (tests/player_demo/js/hls_config.test.mjs).
 */
export function isLowLatencyPlaylist(text) {
  if (typeof text !== 'string') return false;
  return /^#EXT-X-PART-INF:/m.test(text) || /^#EXT-X-SERVER-CONTROL:.*PART-HOLD-BACK=/m.test(text);
}

/** Switch a running hls.js to the LL tuning (before it parsed the LL playlist). */
function applyLowLatency(hls, targetLatency) {
  const c = LOW_LATENCY_CONFIG;
  hls.config.lowLatencyMode = true;
  hls.config.liveSyncOnStallIncrease = c.liveSyncOnStallIncrease;
  hls.config.maxLiveSyncPlaybackRate = c.maxLiveSyncPlaybackRate;
  // hls.js' public setter: sets liveSyncDuration and makes the latency controller use it
  if (targetLatency) hls.targetLatency = targetLatency;
}

/**
 * A playlist loader (hls.js' documented `pLoader` hook) that shows every playlist's
 * text to `sniff` before hls.js parses it.
 */
function sniffingLoader(Base, sniff) {
  return class PlaylistSniffer extends Base {
    load(context, config, callbacks) {
      const onSuccess = callbacks.onSuccess;
      const wrapped = {
        ...callbacks,
        onSuccess: (response, stats, ctx, details) => {
          if (typeof response.data === 'string') sniff(response.data);
          onSuccess(response, stats, ctx, details);
        },
      };
      super.load(context, config, wrapped);
    }
  };
}

/**
 * A new hls.js for a live mix.  `lowLatency`: 'auto' (the default) learns it from the
 * playlist; true applies the tuning from the start; false plays whole segments as a
 * player without LL-HLS would (hls.js' own default would still load parts).
 * `targetLatency` (seconds, LL-HLS only): play this far behind the live edge instead of
 * the playlist's PART-HOLD-BACK, e.g. 1.5 for a listener far from the origin
 * (docs/howto/far-listeners.md).  `hls.lowLatencyTuned` says whether the tuning is on.
 */
export function createHls(Hls, { lowLatency = 'auto', config = {}, targetLatency = null } = {}) {
  if (targetLatency !== null && !(Number.isFinite(targetLatency) && targetLatency > 0 && targetLatency <= 30)) {
    throw new RangeError(`targetLatency must be seconds in (0, 30], not ${targetLatency}`);
  }
  if (lowLatency === false) {
    const hls = new Hls({ ...BASE_CONFIG, ...config, lowLatencyMode: false });
    hls.lowLatencyTuned = false;
    return hls;
  }
  if (lowLatency === true) {
    const target = targetLatency ? { liveSyncDuration: targetLatency } : {};
    const hls = new Hls({ ...BASE_CONFIG, ...LOW_LATENCY_CONFIG, ...target, ...config });
    hls.lowLatencyTuned = true;
    keepLatency(Hls, hls);
    return hls;
  }
  let hls = null;
  const sniff = (text) => {
    if (hls && !hls.lowLatencyTuned && isLowLatencyPlaylist(text)) {
      applyLowLatency(hls, targetLatency);
      hls.lowLatencyTuned = true;
    }
  };
  hls = new Hls({
    ...BASE_CONFIG,
    ...config,
    lowLatencyMode: true,
    pLoader: sniffingLoader(Hls.DefaultConfig.loader, sniff),
  });
  hls.lowLatencyTuned = false;
  keepLatency(Hls, hls);
  return hls;
}
