// Glass-to-ear driver: opens the product's player page in Debian's headless Chromium
// (the page's own hls.js and tuning, watched through its `mixer:hls` event), taps the
// page's media element with Web Audio and reports every click onset it hears, as epoch
// milliseconds of the moment the sample is estimated to leave the output device
// (AudioContext.getOutputTimestamp, so output latency is inside the figure).
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
      hls.on(window.Hls.Events.ERROR, (_e, d) => {
        if (d.details === 'bufferStalledError' && st.playing) st.stalls++;
      });
      setInterval(() => { if (hls.latency) st.latency.push(hls.latency); }, 500);
    });
    document.addEventListener('DOMContentLoaded', () => {
      const media = document.getElementById('media');
      media.addEventListener('playing', () => { st.playing = true; });
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
    });
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
