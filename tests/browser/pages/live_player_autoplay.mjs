// The browser's autoplay policy refuses sound to a page nobody clicked: the Live Player
// SDK-compatible Player then mutes itself and plays, and tells the app (volumeChanged),
// as the SDK's README says.  No flag relaxes the policy here, and the page is only
// watched through its console (playwright's evaluate() would count as a user gesture).
// usage: node live_player_autoplay.mjs '{"url": ..., "timeoutMs": n}'
import { chromium } from 'playwright-core';

const spec = JSON.parse(process.argv[2]);
const lines = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let problem = null;
try {
  const page = await browser.newPage();
  const done = new Promise((resolve) => {
    page.on('console', (msg) => {
      const text = msg.text();
      if (!text.startsWith('[quickstart] ') || text.startsWith('[quickstart] timedMetadataReceived')) return;
      lines.push(text);
      if (text.includes('"state":"playing"')) resolve();
    });
  });
  await page.goto(spec.url, { waitUntil: 'load' });
  await Promise.race([done, new Promise((r) => setTimeout(r, spec.timeoutMs))]);
} catch (e) {
  problem = String(e);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify({ lines, problem }) + '\n');
