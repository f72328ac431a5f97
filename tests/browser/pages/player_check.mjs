// Drives the demo player in Debian's headless Chromium (npm playwright-core)
// the way a person would, and reports what it saw as one JSON line on stdout.
// It asserts nothing itself: tests/support/player_util.py reads the report and the
// pytest tests assert on it, so the same driver works against the fixture
// stream and against a real worker run.
//
// usage: node player_check.mjs '<json spec>'
//   spec = {
//     url: page URL,
//     scenario: "play" | "retry" | "nosource",
//               (retry: error, Retry, play to the end, then Play again)
//     identities: [...],        // play: wait until these all have meters
//     screenshot: path | null,  // play: taken once they do, while live
//     autoplay: bool,           // allow autoplay without a gesture
//     timeoutMs: number         // for the whole scenario
//   }
import { chromium } from 'playwright-core';

const spec = JSON.parse(process.argv[2]);
const deadline = Date.now() + (spec.timeoutMs ?? 60000);
const SAMPLE_MS = 200;

const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
if (spec.autoplay) FLAGS.push('--autoplay-policy=no-user-gesture-required');

const report = {
  scenario: spec.scenario,
  samples: [], // {t, state, ct, latency, endlist, seq}
  states: [], // distinct states in order
  shown: [], // mixer:payload events: {s, levels, mediaTime, cueStart}
  seeks: [], // currentTime after each seek of the media element
  console: [], // warnings and errors from the page
  pageErrors: [],
  meters: null, // the meters when all identities were first on screen (plus 1 s)
  pressedPlay: false,
  pressedRetry: false,
  retryHadFocus: null,
  problem: null,
  // hls.js (when it plays): its events around the end, {t, ev, ct, ...}, the last 400
  hlsTrace: [],
  // hls.js at the end: media duration/buffered/currentTime, the playlist's end (edge)
  hlsFinal: null,
  timedOut: null,
  engine: null,
  screenshot: null,
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const t0 = Date.now();

async function sample(page) {
  const s = await page.evaluate(() => {
    const root = document.getElementById('player');
    const media = document.getElementById('media');
    const meters = [...document.querySelectorAll('#people .person')].map((li) => {
      const m = li.querySelector('[role=meter]');
      return {
        identity: li.dataset.identity,
        label: document.getElementById(m.getAttribute('aria-labelledby'))?.textContent ?? null,
        muted: li.dataset.muted === 'true',
        valuenow: Number(m.getAttribute('aria-valuenow')),
        valuemin: Number(m.getAttribute('aria-valuemin')),
        valuemax: Number(m.getAttribute('aria-valuemax')),
        valuetext: m.getAttribute('aria-valuetext'),
        shownText: li.querySelector('.value')?.textContent ?? '',
      };
    });
    const problem = document.getElementById('problem');
    return {
      state: root.dataset.state,
      stateText: document.getElementById('state').textContent,
      engine: root.dataset.engine ?? null,
      ct: media.currentTime,
      buffered: media.buffered.length ? media.buffered.start(0) : null,
      latency: root.dataset.latency ? Number(root.dataset.latency) : null,
      target: root.dataset.targetLatency ? Number(root.dataset.targetLatency) : null,
      latencyText: document.getElementById('latency').textContent,
      endlist: root.dataset.endlist === 'true',
      seq: root.dataset.seq === undefined ? null : Number(root.dataset.seq),
      problem: problem.hidden ? null : document.getElementById('problem-text').textContent,
      meters,
    };
  });
  s.t = (Date.now() - t0) / 1000;
  const last = report.states[report.states.length - 1];
  if (s.state !== last) report.states.push(s.state);
  if (s.problem) report.problem = s.problem;
  if (s.engine) report.engine = s.engine;
  const { meters, ...rest } = s;
  report.samples.push(rest);
  return s;
}

/** Sample until `done(sample)` is true; false if the deadline came first. */
async function until(page, what, done) {
  while (Date.now() < deadline) {
    const s = await sample(page);
    if (done(s)) return s;
    await sleep(SAMPLE_MS);
  }
  report.timedOut = what;
  return null;
}

async function pressByKeyboard(page, selector) {
  // Tab-reachable, operated with the keyboard: focus it, then Enter.
  await page.focus(selector);
  await page.keyboard.press('Enter');
}

async function startPlaying(page) {
  const s = await until(page, 'the page to be ready to play', (x) =>
    ['blocked', 'live', 'playing', 'ended', 'error'].includes(x.state),
  );
  if (s && s.state === 'blocked') {
    report.pressedPlay = true;
    await pressByKeyboard(page, '#play');
  }
  return until(page, 'playback to start', (x) => ['live', 'playing', 'ended', 'error'].includes(x.state));
}

async function playScenario(page) {
  const started = await startPlaying(page);
  if (!started || started.state === 'error') return;
  const want = new Set(spec.identities ?? []);
  const seen = await until(page, `meters for ${[...want].join(', ')}`, (x) => {
    const have = new Set(x.meters.map((m) => m.identity));
    return [...want].every((id) => have.has(id)) || x.state === 'ended' || x.state === 'error';
  });
  if (!seen) return;
  await sleep(1000);
  const s = await sample(page);
  report.meters = s.meters;
  report.meterState = s.state;
  if (spec.screenshot) {
    await page.screenshot({ path: spec.screenshot, fullPage: true });
    report.screenshot = spec.screenshot;
  }
  await until(page, 'the ended state', (x) => x.state === 'ended' || x.state === 'error');
}

async function retryScenario(page) {
  const failed = await until(page, 'the error state', (x) => x.state === 'error');
  if (!failed) return;
  report.errorText = failed.problem;
  report.retryHadFocus = await page.evaluate(() => document.activeElement?.id === 'retry');
  report.pressedRetry = true;
  await pressByKeyboard(page, '#retry');
  const started = await startPlaying(page);
  if (!started || started.state === 'error') return;
  const ended = await until(page, 'the ended state', (x) => x.state === 'ended' || x.state === 'error');
  if (!ended || ended.state === 'error') return;
  // Play it again from the top: the meters must follow the replay.
  report.replayFrom = report.samples.length;
  await pressByKeyboard(page, '#play');
  await until(page, 'the replay to pass 2 s', (x) => x.state !== 'ended' && x.ct > 2.0);
}

async function noSourceScenario(page) {
  await until(page, 'the no-source state', (x) => x.state === 'nosource');
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: FLAGS,
});
try {
  const context = await browser.newContext({ viewport: { width: 900, height: 520 } });
  const page = await context.newPage();
  // no meter transitions: the screenshot shows exactly the levels of the moment
  await page.emulateMedia({ reducedMotion: 'reduce' });
  page.on('console', (msg) => {
    if (msg.type() === 'warning' || msg.type() === 'error') {
      report.console.push({ type: msg.type(), text: msg.text() });
    }
  });
  page.on('pageerror', (err) => report.pageErrors.push(String(err)));
  // Every payload the page shows, with the playhead at that moment.
  // And every seek (hls.js jumps to its live target when it falls too far behind):
  // the audio skipped there is never heard, so its payloads are rightly not shown.
  await page.addInitScript(() => {
    window.__shown = [];
    window.__seeks = [];
    window.__hlsTrace = [];
    document.addEventListener('mixer:payload', (e) => window.__shown.push(e.detail));
    // hls.js' own view of the stream's end (what it loaded, appended, and whether it
    // called endOfStream), for diagnosing a run that does not reach Ended.
    document.addEventListener('mixer:hls', (e) => {
      const hls = e.detail.hls;
      const E = window.Hls.Events;
      const media = () => document.getElementById('media');
      const ranges = () => {
        const b = media().buffered;
        const out = [];
        for (let i = 0; i < b.length; i++) out.push([+b.start(i).toFixed(4), +b.end(i).toFixed(4)]);
        return out;
      };
      const log = (ev, extra) => {
        const tr = window.__hlsTrace;
        tr.push({ t: +(performance.now() / 1000).toFixed(3), ev, ct: +media().currentTime.toFixed(4), ...extra });
        if (tr.length > 400) tr.splice(0, tr.length - 400);
      };
      hls.on(E.FRAG_LOADED, (_ev, d) =>
        log('FRAG_LOADED', {
          sn: d.frag.sn,
          part: d.part ? d.part.index : null,
          start: +(d.part ?? d.frag).start.toFixed(4),
          dur: +(d.part ?? d.frag).duration.toFixed(5),
        }),
      );
      hls.on(E.BUFFER_APPENDED, (_ev, d) =>
        log('BUFFER_APPENDED', { sn: d.frag?.sn, part: d.part ? d.part.index : null, buffered: ranges() }),
      );
      hls.on(E.BUFFER_EOS, () => log('BUFFER_EOS', { buffered: ranges(), duration: media().duration }));
      const partsInfo = (det) =>
        (det?.partList ?? []).slice(-3).map((p) => `${p.fragment.sn}.${p.index}@${p.start.toFixed(3)}:${p.loaded ? 'L' : '-'}`);
      hls.on(E.LEVEL_UPDATED, (_ev, d) => {
        if (!d.details.live) {
          log('LEVEL_UPDATED_ENDED', { edge: d.details.edge, parts: partsInfo(d.details) });
        }
      });
      hls.on(E.ERROR, (_ev, d) => log('ERROR', { details: d.details, fatal: d.fatal }));
      document.addEventListener('DOMContentLoaded', () => {
        for (const type of ['ended', 'waiting', 'stalled', 'durationchange']) {
          media().addEventListener(type, () => log(type, { duration: media().duration, buffered: ranges() }));
        }
      });
      window.__hlsFinal = () => {
        const details = hls.levels?.[0]?.details;
        const frags = details ? details.fragments.slice(-3) : [];
        return {
          duration: media().duration,
          ct: media().currentTime,
          ended: media().ended,
          readyState: media().readyState,
          buffered: ranges(),
          live: details?.live,
          totalduration: details?.totalduration,
          edge: details?.edge,
          fragments: frags.map((f) => ({ sn: f.sn, start: +f.start.toFixed(4), duration: +f.duration.toFixed(5) })),
          partList: (details?.partList ?? []).slice(-4).map((p) => ({
            sn: p.fragment.sn, index: p.index, start: +p.start.toFixed(4), duration: +p.duration.toFixed(5),
          })),
          mediaSourceState: hls.bufferController?.mediaSource?.readyState ?? null,
        };
      };
    });
    document.addEventListener('DOMContentLoaded', () => {
      const media = document.getElementById('media');
      media.addEventListener('seeked', () => window.__seeks.push(media.currentTime));
    });
  });
  await page.goto(spec.url, { waitUntil: 'load' });
  const scenarios = { play: playScenario, retry: retryScenario, nosource: noSourceScenario };
  await scenarios[spec.scenario](page);
  await sample(page);
  report.shown = await page.evaluate(() => window.__shown);
  report.seeks = await page.evaluate(() => window.__seeks);
  report.hlsTrace = await page.evaluate(() => window.__hlsTrace);
  report.hlsFinal = await page.evaluate(() => (window.__hlsFinal ? window.__hlsFinal() : null));
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report) + '\n');
