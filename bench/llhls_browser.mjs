// Glass-to-ear driver: opens a player page in Debian's headless Chromium, taps the
// element that plays (the first media element whose play() is called: the demo page's
// #media, or the Live Player SDK-compatible Player's videoElement) with Web Audio and
// reports every click onset it hears, as epoch milliseconds of the moment the sample is
// estimated to leave the output device (AudioContext.getOutputTimestamp, so output
// latency is inside the figure).  Also: stalls (the element's `waiting` after it first
// played), and the player's own latency figure every 0.5 s (hls.js `latency` on the demo
// page, `player.liveLatency` on an SDK page).
// usage: node llhls_browser.mjs '{"url": player page URL, "playMs": n}'
import { chromium } from 'playwright-core';

const spec = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
    '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows',
  ],
});
let out = { problem: null };
try {
  const page = await browser.newPage();
  await page.addInitScript(() => {
    const st = (window.__st = {
      onsets: [], stalls: 0, playing: false, latency: [], engine: 'none', pageState: [],
    });
    document.addEventListener('mixer:hls', (event) => {
      const hls = event.detail.hls;
      st.engine = 'hlsjs';
      setInterval(() => { if (hls.latency) st.latency.push(hls.latency); }, 500);
    });
    setInterval(() => {
      const p = window.player; // an SDK page's Player
      if (p && p.hls) st.engine = 'hlsjs';
      if (p && p.liveLatency) st.latency.push(p.liveLatency);
    }, 500);
    let tapped = null;
    const tap = (media) => {
      tapped = media;
      media.addEventListener('playing', () => { st.playing = true; });
      media.addEventListener('waiting', () => { if (st.playing) st.stalls++; });
      const ctx = new AudioContext();
      const srcNode = ctx.createMediaElementSource(media);
      const N = 256;
      const proc = ctx.createScriptProcessor(N, 2, 2);
      let quiet = 0;
      proc.onaudioprocess = (e) => {
        const x = e.inputBuffer.getChannelData(0);
        e.outputBuffer.getChannelData(0).set(x);
        e.outputBuffer.getChannelData(1).set(e.inputBuffer.getChannelData(1));
        for (let i = 0; i < x.length; i++) {
          const loud = Math.abs(x[i]) > 0.1;
          if (loud && quiet > 0.3 * ctx.sampleRate) {
            // this output buffer plays at playbackTime (the processor delays its input by N)
            const t = e.playbackTime + i / ctx.sampleRate;
            const ts = ctx.getOutputTimestamp();
            st.onsets.push(performance.timeOrigin + ts.performanceTime + (t - ts.contextTime) * 1000);
          }
          quiet = loud ? 0 : quiet + 1;
        }
      };
      srcNode.connect(proc).connect(ctx.destination);
      ctx.resume();
    };
    const play = HTMLMediaElement.prototype.play;
    HTMLMediaElement.prototype.play = function (...args) {
      if (tapped === null) tap(this);
      return play.apply(this, args);
    };
  });
  await page.goto(spec.url);
  await new Promise((r) => setTimeout(r, spec.playMs));
  out = { ...(await page.evaluate(() => window.__st)), problem: null };
} catch (e) {
  out.problem = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
