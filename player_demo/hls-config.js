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
  // Load parts (EXT-X-PART) and use blocking playlist reload.
  lowLatencyMode: true,
  // hls.js raises its target latency by 1 s after every stall by default, so one
  // hiccup would cost a second for the rest of the session: keep it fixed.
  liveSyncOnStallIncrease: 0,
  // Target 0.6 s behind the live edge (PART-HOLD-BACK) instead of 3 segments (the
  // hls.js default, 6 s for 2 s segments).
  liveSyncDuration: 0.6,
  // Further than 1.6 s behind (after a stall or a background tab): jump back to
  // the target instead of staying late.
  liveMaxLatencyDuration: 1.6,
  // Catch up smoothly by playing at most 20 % fast (inaudible on speech) when
  // between the target and the max latency.
  maxLiveSyncPlaybackRate: 1.2,
});

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
function applyLowLatency(hls) {
  const c = LOW_LATENCY_CONFIG;
  hls.config.lowLatencyMode = true;
  hls.config.liveSyncOnStallIncrease = c.liveSyncOnStallIncrease;
  hls.config.liveMaxLatencyDuration = c.liveMaxLatencyDuration;
  hls.config.maxLiveSyncPlaybackRate = c.maxLiveSyncPlaybackRate;
  // hls.js' public setter: sets liveSyncDuration and makes the latency controller use it
  hls.targetLatency = c.liveSyncDuration;
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
 * `hls.lowLatencyTuned` says whether the tuning is on.
 */
export function createHls(Hls, { lowLatency = 'auto', config = {} } = {}) {
  if (lowLatency === false) {
    const hls = new Hls({ ...BASE_CONFIG, ...config, lowLatencyMode: false });
    hls.lowLatencyTuned = false;
    return hls;
  }
  if (lowLatency === true) {
    const hls = new Hls({ ...BASE_CONFIG, ...LOW_LATENCY_CONFIG, ...config });
    hls.lowLatencyTuned = true;
    return hls;
  }
  let hls = null;
  const sniff = (text) => {
    if (hls && !hls.lowLatencyTuned && isLowLatencyPlaylist(text)) {
      applyLowLatency(hls);
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
  return hls;
}
