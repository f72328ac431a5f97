// Opens the product's player page in Debian's headless Chromium and reports, as one JSON
// line on stdout, what a listener would notice while it plays: stalls, live latency,
// whether parts were loaded, whether the stream ended. The page's own hls.js instance is
// watched through its `mixer:hls` event, so the configuration under test is the
// player's (player_demo/hls-config.js). It asserts nothing itself
// (tests/browser/test_llhls.py does).
//
// usage: node llhls_check.mjs '{"url": player page URL (with ?lowLatency=0|1),
//                               "playMs": n, "untilEnded": bool, "latencyMs": n}'
// latencyMs: Chromium's own network emulation (DevTools Network.emulateNetworkConditions)
// adds that much latency to every request of the page: a listener far from the origin.
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
const report = { samples: [], pageErrors: [] };
try {
  const page = await browser.newPage();
  if (spec.latencyMs) {
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false, latency: spec.latencyMs, downloadThroughput: -1, uploadThroughput: -1,
    });
  }
  page.on('pageerror', (e) => report.pageErrors.push(String(e)));
  // Before any page script: watch the hls.js instance the player creates.
  await page.addInitScript(() => {
    const state = (window.__state = {
      engine: 'none', parts: 0, frags: 0, stalls: 0, stallAt: [], playingAt: null,
      playing: false, ended: false, errors: [],
    });
    document.addEventListener('mixer:hls', (event) => {
      const hls = (window.__hls = event.detail.hls);
      const Hls = window.Hls;
      const media = document.getElementById('media');
      state.engine = 'hlsjs';
      hls.on(Hls.Events.FRAG_LOADED, (_e, d) => { if (d.part) state.parts++; else state.frags++; });
      // the first seconds, event by event (what a stall report needs to say why)
      state.log = [];
      const note = (what) => {
        const now = performance.now() / 1000;
        if (now < 8) state.log.push(`${now.toFixed(3)} ${what}`);
      };
      hls.on(Hls.Events.LEVEL_UPDATED, (_e, d) => note(`playlist msn ${d.details.endSN} parts ${d.details.partList ? d.details.partList.length : 0} edge ${d.details.edge.toFixed(3)}`));
      hls.on(Hls.Events.FRAG_BUFFERED, (_e, d) => {
        const st = (d.part || d.frag).stats;
        const b = media.buffered;
        note(`buffered sn ${d.frag.sn} part ${d.part ? d.part.index : '-'} load ${(st.loading.start / 1000).toFixed(3)}-${(st.loading.end / 1000).toFixed(3)} ct ${media.currentTime.toFixed(3)} end ${b.length ? b.end(b.length - 1).toFixed(3) : '-'}`);
      });
      media.addEventListener('playing', () => note(`playing ct ${media.currentTime.toFixed(3)}`));
      media.addEventListener('waiting', () => note(`waiting ct ${media.currentTime.toFixed(3)}`));
      media.addEventListener('seeking', () => note(`seeking to ${media.currentTime.toFixed(3)}`));
      hls.on(Hls.Events.ERROR, (_e, d) => {
        if (d.details === 'bufferStalledError' && state.playing) {
          state.stalls++;
          const b = media.buffered;
          state.stallAt.push({
            t: performance.now() / 1000, ct: media.currentTime,
            bufferEnd: b.length ? b.end(b.length - 1) : null, latency: hls.latency,
          });
        }
        state.errors.push(`${d.type}/${d.details}/${d.fatal}`);
        note(`error ${d.details}`);
      });
      media.addEventListener('playing', () => {
        if (!state.playing) state.playingAt = performance.now() / 1000;
        state.playing = true;
      });
      media.addEventListener('ended', () => { state.ended = true; });
    });
  });
  await page.goto(spec.url);
  const t0 = Date.now();
  while (Date.now() - t0 < spec.playMs) {
    await new Promise((r) => setTimeout(r, 250));
    const s = await page.evaluate(() => {
      const h = window.__hls, m = document.getElementById('media');
      return { ...window.__state, errors: undefined, stallAt: undefined, log: undefined,
               latency: h ? h.latency : null, ct: m.currentTime, paused: m.paused,
               pageState: document.getElementById('player').dataset.state };
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
