// hls.js settings for the worker's LL-HLS (0.192 s parts, PART-HOLD-BACK 0.6 s).
//
// The one copy: the player (player.js) uses it, and so do the browser test
// (tests/test_llhls_browser.py) and the glass-to-ear benchmark
// (bench/glass_to_ear.py), which open the player page itself.  The values were
// chosen with bench/glass_to_ear.py and the stall counts of the browser test; the
// README's "Low latency" paragraph quotes the figures.

export const LOW_LATENCY_CONFIG = Object.freeze({
  // Load parts (EXT-X-PART) and use blocking playlist reload.
  lowLatencyMode: true,
  // hls.js raises its target latency by 1 s after every stall by default, so one
  // hiccup would cost a second for the rest of the session: keep it fixed.
  liveSyncOnStallIncrease: 0,
  // Target LIVE_SYNC_SECONDS behind the live edge instead of 3 segments (the
  // hls.js default, 6 s for 2 s segments).  See LIVE_SYNC_SECONDS below.
  liveSyncDuration: 0.6,
  // Further than 1.6 s behind (after a stall or a background tab): jump back to
  // the target instead of staying late.
  liveMaxLatencyDuration: 1.6,
  // Catch up smoothly by playing at most 20 % fast (inaudible on speech) when
  // between the target and the max latency.
  maxLiveSyncPlaybackRate: 1.2,
});
