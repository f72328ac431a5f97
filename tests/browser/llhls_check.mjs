// Plays an HLS URL with the vendored hls.js in Debian's headless Chromium and reports,
// as one JSON line on stdout, what a listener would notice: stalls, live latency,
// whether parts were loaded, whether the stream ended. It asserts nothing itself
// (tests/test_llhls_browser.py does).
//
// usage: node llhls_check.mjs '{"url": page URL, "src": playlist URL,
//                               "lowLatency": bool, "playMs": n, "untilEnded": bool}'
import { chromium } from 'playwright-core';

const spec = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
    '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  ],
});
const report = { samples: [], errors: [], pageErrors: [] };
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => report.pageErrors.push(String(e)));
  await page.goto(spec.url);
  await page.evaluate(({ src, lowLatency }) => {
    const media = document.getElementById('media');
    const state = (window.__state = {
      engine: window.Hls && Hls.isSupported() ? 'hlsjs' : 'none',
      parts: 0, frags: 0, stalls: 0, playing: false, ended: false, errors: [],
    });
    const hls = (window.__hls = new Hls({
      lowLatencyMode: lowLatency,
      liveSyncOnStallIncrease: 0,
      ...(lowLatency ? { liveSyncDuration: 0.6, liveMaxLatencyDuration: 1.6, maxLiveSyncPlaybackRate: 1.2 } : {}),
      enableID3MetadataCues: false,
    }));
    hls.on(Hls.Events.FRAG_LOADED, (_e, d) => { if (d.part) state.parts++; else state.frags++; });
    hls.on(Hls.Events.ERROR, (_e, d) => {
      if (d.details === 'bufferStalledError' && state.playing) state.stalls++;
      state.errors.push(`${d.type}/${d.details}/${d.fatal}`);
    });
    media.addEventListener('playing', () => { state.playing = true; });
    media.addEventListener('ended', () => { state.ended = true; });
    hls.loadSource(src);
    hls.attachMedia(media);
    media.play().catch((e) => state.errors.push('play: ' + e));
  }, { src: spec.src, lowLatency: spec.lowLatency });
  const t0 = Date.now();
  while (Date.now() - t0 < spec.playMs) {
    await new Promise((r) => setTimeout(r, 250));
    const s = await page.evaluate(() => {
      const h = window.__hls, m = document.getElementById('media');
      return { ...window.__state, errors: undefined, latency: h.latency,
               target: h.targetLatency, ct: m.currentTime, paused: m.paused };
    });
    s.t = (Date.now() - t0) / 1000;
    report.samples.push(s);
    if (spec.untilEnded && s.ended) break;
  }
  report.final = await page.evaluate(() => window.__state);
} catch (e) {
  report.problem = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
