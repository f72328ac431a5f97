// Drives a listener app written against the Live Player SDK (player_demo/examples/
// quickstart.html) in Debian's headless Chromium and reports, as one JSON line, the
// events the app received (window.liveEvents) and what the Player said meanwhile.
// It asserts nothing: tests/browser/test_live_player_sdk.py does.
//
// usage: node live_player_check.mjs '<json spec>'
//   spec = {url, timeoutMs, volumeAtMs: when to call player.setVolume(0.5) (or null)}
// Autoplay is allowed (playwright's evaluate() counts as a user gesture anyway).
import { chromium } from 'playwright-core';

const spec = JSON.parse(process.argv[2]);
const deadline = Date.now() + (spec.timeoutMs ?? 60000);
const t0 = Date.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const report = { events: [], samples: [], invalidToken: null, console: [], pageErrors: [], timedOut: false, problem: null };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required'],
});
try {
  const page = await browser.newPage();
  page.on('console', (msg) => {
    if (msg.type() === 'warning' || msg.type() === 'error') report.console.push(msg.text());
  });
  page.on('pageerror', (err) => report.pageErrors.push(String(err)));
  await page.goto(spec.url, { waitUntil: 'load' });
  // what an app sees when it passes something that is not a player access token
  report.invalidToken = await page.evaluate(async () => {
    const { Player } = Twilio.Live;
    try {
      await Player.connect('not-a-token');
      return { resolved: true };
    } catch (e) {
      return {
        name: e.name, code: e.code, message: e.message,
        isInstance: e instanceof Player.Error.AccessTokenInvalidError,
        isTwilioError: e instanceof Player.Error.TwilioError,
        isSupported: Player.isSupported,
      };
    }
  });
  let volumeSet = false;
  while (Date.now() < deadline) {
    const s = await page.evaluate(() => {
      const p = window.player;
      const ended = (window.liveEvents || []).some((e) => e.type === 'stateChanged' && e.detail.state === 'ended');
      const failed = (window.liveEvents || []).some((e) => e.type === 'connectFailed');
      return p
        ? { state: p.state, position: p.position, liveLatency: p.liveLatency, muted: p.isMuted, volume: p.volume, ended, failed }
        : { state: null, ended, failed };
    });
    s.t = (Date.now() - t0) / 1000;
    report.samples.push(s);
    if (spec.volumeAtMs != null && !volumeSet && s.state === 'playing' && Date.now() - t0 > spec.volumeAtMs) {
      volumeSet = true;
      await page.evaluate(() => window.player.setVolume(0.5));
    }
    if (s.ended || s.failed) break;
    await sleep(250);
  }
  report.timedOut = Date.now() >= deadline;
  await sleep(300);
  report.events = await page.evaluate(() => window.liveEvents);
} catch (e) {
  report.problem = String(e);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report) + '\n');
