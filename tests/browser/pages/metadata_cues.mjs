// Opens tests/browser/pages/metadata_cues.html in Debian's headless Chromium for spec.playMs and
// prints one JSON line: the page's cue report and the live latency every 250 ms. It asserts
// nothing itself (tests/browser/test_metadata_cues.py does).
//
// usage: node metadata_cues.mjs '{"url": page URL with ?src=..., "playMs": n}'
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
const out = { samples: [], pageErrors: [] };
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => out.pageErrors.push(String(e)));
  await page.goto(spec.url);
  const t0 = Date.now();
  while (Date.now() - t0 < spec.playMs) {
    await new Promise((r) => setTimeout(r, 250));
    const s = await page.evaluate(() => {
      const m = document.getElementById('media');
      return { ct: m.currentTime, paused: m.paused, latency: window.hls ? window.hls.latency : null };
    });
    s.t = (Date.now() - t0) / 1000;
    out.samples.push(s);
  }
  out.report = await page.evaluate(() => window.__report);
} catch (e) {
  out.problem = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
