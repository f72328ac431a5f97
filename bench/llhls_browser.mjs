// Glass-to-ear driver: plays an HLS stream with the vendored hls.js in headless Chromium,
// taps the media element with Web Audio and reports every click onset it hears, as
// epoch milliseconds of the moment the sample is estimated to leave the output device
// (AudioContext.getOutputTimestamp, so output latency is inside the figure).
// usage: node llhls_browser.mjs '{"url":..., "src":..., "lowLatency": bool, "playMs": n}'
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
  await page.goto(spec.url);
  await page.evaluate(({ src, lowLatency }) => {
    const media = document.getElementById('media');
    const st = (window.__st = { onsets: [], stalls: 0, playing: false, latency: [], clock: [] });
    const hls = (window.__hls = new Hls({
      lowLatencyMode: lowLatency,
      liveSyncOnStallIncrease: 0,
      enableID3MetadataCues: false,
      ...(lowLatency ? { liveSyncDuration: 0.6, liveMaxLatencyDuration: 1.6, maxLiveSyncPlaybackRate: 1.2 } : {}),
    }));
    hls.on(Hls.Events.ERROR, (_e, d) => { if (d.details === 'bufferStalledError' && st.playing) st.stalls++; });
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
        if (Math.abs(x[i]) > 0.1 && quiet > 0.3 * ctx.sampleRate) {
          // the output buffer plays at playbackTime; the processor delays its input by N
          const t = e.playbackTime + i / ctx.sampleRate;
          const ts = ctx.getOutputTimestamp();
          const epoch = performance.timeOrigin + ts.performanceTime + (t - ts.contextTime) * 1000;
          st.onsets.push(epoch);
          quiet = 0;
        } else if (Math.abs(x[i]) > 0.1) {
          quiet = 0;
        } else {
          quiet++;
        }
      }
    };
    srcNode.connect(proc).connect(ctx.destination);
    setInterval(() => {
      if (hls.latency) st.latency.push(hls.latency);
      const ts = ctx.getOutputTimestamp();
      st.clock.push([ts.contextTime, ts.performanceTime]);
    }, 500);
    hls.loadSource(src);
    hls.attachMedia(media);
    ctx.resume();
    media.play();
  }, { src: spec.src, lowLatency: spec.lowLatency });
  await new Promise((r) => setTimeout(r, spec.playMs));
  out = { ...(await page.evaluate(() => window.__st)), problem: null };
} catch (e) {
  out.problem = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
