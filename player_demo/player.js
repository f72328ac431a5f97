// The demo player: plays an HLS stream of the mix and shows who is talking,
// in sync with what the listener hears.
//
// Playback is the Live Player SDK-compatible module (live-player.js): its Player
// plays the stream in this page's <audio id=media> (hls.js with the project's LL-HLS
// tuning, learnt from the playlist; Safari's own HLS where that is the better engine)
// and fires `timedMetadataReceived` when the playhead reaches each payload's audio
// (a cue on a hidden metadata track, fired on its `enter`), not when its part is
// downloaded.  This page keeps the UI: the source (?src, ?token, config.json), the
// meters, the states, Retry, and the autoplay gesture.
//
// Copying this into an app: use live-player.js's Player (see the README's "Listener
// apps"), keep payload.js as it is for the payload rules; or listen for the
// `mixer:payload` event this page dispatches (detail: {s, levels, mediaTime, cueStart})
// and draw your own UI.

import { MAX_LEVEL, MUTED, PayloadSequencer, levelText, meterFraction, rosterChanges } from './payload.js';
import { Player as LivePlayer, chooseEngine } from './live-player.js';
import { chooseSource } from './source.js';

const LATENCY_REFRESH_MS = 500;

/** hls.js error details, in words a user can act on. */
const HLS_ERROR_WORDS = {
  manifestLoadError: 'could not load the playlist',
  manifestLoadTimeOut: 'the playlist did not load in time',
  manifestParsingError: 'the playlist is not valid HLS',
  manifestIncompatibleCodecsError: 'this browser cannot decode the stream',
  levelLoadError: 'could not reload the playlist',
  levelLoadTimeOut: 'the playlist did not reload in time',
  levelEmptyError: 'the playlist has no segments',
  fragLoadError: 'could not load a segment',
  fragLoadTimeOut: 'a segment did not load in time',
  fragParsingError: 'a segment is not valid MPEG-TS',
  bufferAppendError: 'the browser could not decode the stream',
  bufferIncompatibleCodecsError: 'this browser cannot decode the stream',
};

const MEDIA_ERROR_WORDS = {
  1: 'playback was aborted',
  2: 'a network error stopped the stream',
  3: 'the browser could not decode the stream',
  4: 'the stream could not be loaded (missing, or a format this browser cannot play)',
};

function hlsErrorReason(data) {
  const words = HLS_ERROR_WORDS[data.details] || 'playback failed';
  const code = data.response && data.response.code;
  const extra = [data.details];
  if (code) extra.push(`HTTP ${code}`);
  else if (data.error && data.error.message) extra.push(data.error.message);
  return `${words} (${extra.join(', ')})`;
}

async function loadConfig() {
  let response;
  try {
    response = await fetch('config.json', { cache: 'no-store' });
  } catch {
    return { status: 'missing' };
  }
  if (!response.ok) return { status: 'missing' };
  try {
    return { status: 'ok', data: await response.json() };
  } catch {
    return { status: 'invalid', reason: 'not valid JSON' };
  }
}

class Meters {
  /** One <li> per identity in the latest payload, in the order they appeared. */
  constructor(list, empty, count) {
    this.list = list;
    this.empty = empty;
    this.count = count;
    this.rows = new Map();
    this.made = 0; // for unique element ids
  }

  clear() {
    for (const row of this.rows.values()) row.li.remove();
    this.rows.clear();
    this.refreshCount();
  }

  show(levels) {
    const { joined, left } = rosterChanges(this.rows.keys(), levels);
    for (const id of left) {
      this.rows.get(id).li.remove();
      this.rows.delete(id);
    }
    for (const id of joined) this.rows.set(id, this.addRow(id));
    for (const [id, v] of levels) this.update(this.rows.get(id), v);
    this.refreshCount();
  }

  addRow(identity) {
    const li = document.createElement('li');
    li.className = 'person';
    li.dataset.identity = identity;
    const name = document.createElement('span');
    name.className = 'name';
    name.id = `person-${++this.made}`;
    name.textContent = identity; // text only: identities come from the network
    const meter = document.createElement('div');
    meter.className = 'meter';
    meter.setAttribute('role', 'meter');
    meter.setAttribute('aria-labelledby', name.id);
    meter.setAttribute('aria-valuemin', '0');
    meter.setAttribute('aria-valuemax', String(MAX_LEVEL));
    const cover = document.createElement('div');
    cover.className = 'cover';
    meter.append(cover);
    const value = document.createElement('span');
    value.className = 'value';
    li.append(name, meter, value);
    this.list.append(li);
    return { li, meter, value };
  }

  update(row, v) {
    const muted = v === MUTED;
    row.li.dataset.muted = String(muted);
    row.meter.setAttribute('aria-valuenow', String(muted ? 0 : v));
    row.meter.setAttribute('aria-valuetext', levelText(v));
    row.meter.style.setProperty('--level', meterFraction(v).toFixed(3));
    row.value.textContent = levelText(v);
  }

  refreshCount() {
    const n = this.rows.size;
    this.empty.hidden = n > 0;
    this.count.textContent = n ? `(${n})` : '';
  }
}

class Player {
  constructor(root) {
    this.root = root;
    this.media = root.querySelector('#media');
    this.el = {
      state: root.querySelector('#state'),
      latency: root.querySelector('#latency'),
      source: root.querySelector('#source'),
      problem: root.querySelector('#problem'),
      problemText: root.querySelector('#problem-text'),
      retry: root.querySelector('#retry'),
      gesture: root.querySelector('#gesture'),
      play: root.querySelector('#play'),
      mute: root.querySelector('#mute'),
      volume: root.querySelector('#volume'),
      emptyNote: root.querySelector('#people-empty'),
    };
    this.meters = new Meters(
      root.querySelector('#people'),
      this.el.emptyNote,
      root.querySelector('#people-count'),
    );
    this.sequencer = new PayloadSequencer();
    this.hls = null; // the LivePlayer's hls.js (null with native HLS)
    this.player = null; // the LivePlayer once connected
    this.abort = null; // disconnects the LivePlayer of the current attempt
    this.src = null;
    this.token = null;
    this.engine = null;
    this.attempt = 0;
    this.resetFlags();
    this.bindControls();
    this.bindMedia();
    setInterval(() => this.refreshLatency(), LATENCY_REFRESH_MS);
  }

  resetFlags() {
    this.fatal = null; // reason string once playback cannot go on
    this.noSource = false;
    this.blocked = false; // autoplay refused: waiting for a gesture
    this.isLive = null; // playlist without ENDLIST when first loaded
    this.endlist = false; // a live playlist got its ENDLIST
    this.waiting = true;
    this.hlsReason = null; // hls.js' words for the fatal error, when it was hls.js'
  }

  async start() {
    const requestedEngine = new URL(location.href).searchParams.get('engine');
    this.requestedEngine = requestedEngine;
    const config = await loadConfig();
    const choice = chooseSource(location.href, config);
    // LL-HLS tuning: learnt from the playlist itself (hls-config.js createHls), whoever
    // serves this page; ?lowLatency=1 forces it from the start, ?lowLatency=0 plays
    // whole segments as a player without LL-HLS would.
    const llParam = new URL(location.href).searchParams.get('lowLatency');
    this.lowLatency = llParam === null ? 'auto' : llParam !== '0';
    // ?targetLatency=1.5: seconds behind live instead of the stream's PART-HOLD-BACK (a
    // listener far from the origin, docs/howto/far-listeners.md)
    const target = new URL(location.href).searchParams.get('targetLatency');
    this.targetLatency = target === null ? null : Number(target);
    if (choice.error) {
      this.noSource = true;
      this.el.source.textContent = 'none';
      this.showProblem(choice.error, { retry: false });
      this.render();
      return;
    }
    this.src = choice.src;
    this.token = choice.from === 'token' ? new URL(location.href).searchParams.get('token') : null;
    this.el.source.textContent = this.src;
    this.load();
  }

  /** (Re)start from nothing: used for the first load and by Retry. */
  load() {
    this.teardown();
    this.resetFlags();
    this.attempt += 1;
    this.sequencer.reset();
    this.meters.clear();
    this.hideProblem();
    this.engine = chooseEngine(this.requestedEngine || undefined);
    this.root.dataset.engine = this.engine || 'none';
    if (this.engine === null) {
      const why =
        this.requestedEngine === 'native'
          ? 'this browser has no native HLS'
          : 'this browser can play neither HLS nor Media Source Extensions';
      this.fail(why);
      return;
    }
    this.open(this.attempt);
    this.render();
  }

  teardown() {
    if (this.abort) this.abort.abort(); // disconnects the LivePlayer, even mid-connect
    this.abort = null;
    this.player = null;
    this.hls = null;
  }

  async open(attempt) {
    const abort = new AbortController();
    this.abort = abort;
    const options = {
      element: this.media,
      engine: this.engine,
      lowLatency: this.lowLatency,
      targetLatency: this.targetLatency,
      keepAfterEnd: true, // a finished recording can be played again (Play after Ended)
      signal: abort.signal,
      onHls: (hls) => this.onHls(hls, attempt),
    };
    let player;
    try {
      player = this.token
        ? await LivePlayer.connect(this.token, options)
        : await LivePlayer.fromPlaybackUrl(this.src, options);
    } catch (err) {
      if (attempt === this.attempt && !abort.signal.aborted) this.fail(this.reasonFor(err));
      return;
    }
    if (attempt !== this.attempt) return;
    this.player = player;
    player.on(LivePlayer.Event.TimedMetadataReceived, ({ metadata, time, source }) => {
      // an app's own TimedMetadata (polls, slides, cues) is not a level payload
      if (source === 'mixer') this.onMetadata(metadata, time);
    });
    player.on(LivePlayer.Event.Error, (err) => this.fail(this.reasonFor(err)));
    if (this.engine === 'native') this.tryPlay(); // hls.js' MANIFEST_PARSED does it otherwise
    this.render();
  }

  /** The LivePlayer made its hls.js: our words for its errors, and the playlist's liveness. */
  onHls(hls, attempt) {
    const Hls = hls.constructor;
    this.hls = hls;
    // For apps and tests that want hls.js' own events (stalls, parts loaded):
    // fired before anything loads, so a listener misses none of them.
    this.root.dispatchEvent(new CustomEvent('mixer:hls', { bubbles: true, detail: { hls } }));
    hls.on(Hls.Events.MANIFEST_PARSED, () => this.tryPlay());
    hls.on(Hls.Events.LEVEL_UPDATED, (_event, data) => this.onPlaylist(data.details.live));
    hls.on(Hls.Events.LEVEL_LOADED, (_event, data) => this.onPlaylist(data.details.live));
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (data.fatal && attempt === this.attempt) this.hlsReason = hlsErrorReason(data);
    });
  }

  reasonFor(err) {
    if (this.hlsReason) return this.hlsReason;
    if (err && err.code === 56009) return 'this browser can play neither HLS nor Media Source Extensions';
    return err && err.message ? err.message : String(err);
  }

  onPlaylist(live) {
    if (this.isLive === null) this.isLive = live;
    else if (this.isLive && !live) this.endlist = true;
    this.render();
  }

  bindMedia() {
    const m = this.media;
    const rerender = () => this.render();
    m.addEventListener('playing', () => {
      this.waiting = false;
      this.blocked = false;
      this.render();
    });
    m.addEventListener('waiting', () => {
      this.waiting = true;
      this.render();
    });
    for (const type of ['pause', 'play', 'ended', 'volumechange']) m.addEventListener(type, rerender);
    // A seek moves the listener to other audio: the next cue reached is the
    // truth, whatever its s (the "lower than last shown" rule is for cues
    // arriving late along one playback, not for a jump the listener made).
    m.addEventListener('seeking', () => this.sequencer.reset());
    m.addEventListener('durationchange', () => {
      if (this.engine !== 'native') return;
      // Native HLS: a live playlist has an infinite duration until its ENDLIST.
      const live = m.duration === Infinity;
      if (Number.isNaN(m.duration)) return;
      this.onPlaylist(live);
    });
    m.addEventListener('error', () => {
      if (this.engine !== 'native' || !m.error) return;
      const words = MEDIA_ERROR_WORDS[m.error.code] || 'playback failed';
      this.fail(m.error.message ? `${words} (${m.error.message})` : words);
    });
  }

  bindControls() {
    const { play, mute, volume, retry } = this.el;
    play.addEventListener('click', () => {
      if (this.media.paused || this.media.ended) this.tryPlay();
      else this.media.pause();
    });
    mute.addEventListener('click', () => {
      this.media.muted = !this.media.muted;
    });
    volume.addEventListener('input', () => {
      this.media.volume = Number(volume.value) / 100;
      if (this.media.volume > 0) this.media.muted = false;
    });
    retry.addEventListener('click', () => {
      if (this.src) this.load();
    });
  }

  tryPlay() {
    const p = this.media.play();
    if (!p) return;
    p.then(
      () => {
        this.blocked = false;
        this.render();
      },
      (err) => {
        if (err.name === 'NotAllowedError') {
          this.blocked = true;
          this.render();
          this.el.play.focus();
        } else if (err.name !== 'AbortError') {
          console.warn(`[mixer-player] play() failed: ${err.message}`);
        }
      },
    );
  }

  // ---------------------------------------------------------------- metadata
  /**
   * The LivePlayer says the playhead reached a timed metadata's audio (`time` is its
   * pts on the media timeline): show it if it is the next payload.
   */
  onMetadata(text, time) {
    const payload = this.sequencer.accept(text);
    if (payload) this.showPayload(payload, time);
  }

  showPayload(payload, cueStart) {
    this.meters.show(payload.levels);
    this.root.dataset.seq = String(payload.s);
    this.root.dispatchEvent(
      new CustomEvent('mixer:payload', {
        bubbles: true,
        detail: {
          s: payload.s,
          levels: Object.fromEntries(payload.levels),
          mediaTime: this.media.currentTime,
          cueStart,
        },
      }),
    );
  }

  // ---------------------------------------------------------------- state
  fail(reason) {
    this.fatal = reason;
    console.warn(`[mixer-player] stream error: ${reason}`);
    this.teardown();
    this.showProblem(`Stream error: ${reason}`, { retry: true });
    this.render();
  }

  showProblem(text, { retry }) {
    this.el.problemText.textContent = text;
    this.el.retry.hidden = !retry;
    this.el.problem.hidden = false;
    if (retry) this.el.retry.focus();
  }

  hideProblem() {
    this.el.problem.hidden = true;
    this.el.problemText.textContent = '';
  }

  /** One of: nosource, error, ended, paused, live, playing (not live), loading. */
  currentState() {
    if (this.noSource) return 'nosource';
    if (this.fatal) return 'error';
    if (this.media.ended) return 'ended';
    if (this.media.paused) return this.blocked ? 'blocked' : this.attemptStarted() ? 'paused' : 'loading';
    if (this.waiting) return 'loading';
    return this.isLive ? 'live' : 'playing';
  }

  attemptStarted() {
    return this.media.currentTime > 0 || this.media.readyState >= 2;
  }

  render() {
    const state = this.currentState();
    this.root.dataset.state = state;
    this.root.dataset.endlist = String(this.endlist || this.isLive === false);
    const labels = {
      nosource: 'No stream',
      error: 'Error',
      ended: 'Ended',
      blocked: 'Ready: press Play',
      paused: 'Paused',
      loading: this.attempt > 1 ? `Loading… (attempt ${this.attempt})` : 'Loading…',
      live: 'Live',
      playing: 'Playing a recording',
    };
    let label = labels[state];
    if (state === 'live' && this.endlist) label = 'Live: the broadcast has ended, playing its last seconds';
    this.el.state.textContent = label;
    this.el.gesture.hidden = state !== 'blocked';
    const playing = !this.media.paused && !this.media.ended;
    this.el.play.setAttribute('aria-label', playing ? 'Pause' : 'Play');
    this.el.play.querySelector('.label').textContent = playing ? 'Pause' : 'Play';
    this.el.play.querySelector('.icon').textContent = playing ? '❚❚' : '▶';
    this.el.play.disabled = state === 'nosource' || state === 'error';
    this.el.mute.setAttribute('aria-pressed', String(this.media.muted));
    this.el.mute.textContent = this.media.muted ? 'Unmute' : 'Mute';
    this.refreshLatency();
  }

  /** Seconds between the playhead and the live edge; null when not meaningful. */
  latencySeconds() {
    if (!this.isLive || this.endlist || this.media.paused) return null;
    if (this.hls) {
      const lat = this.hls.latency;
      return Number.isFinite(lat) && lat > 0 ? lat : null;
    }
    const s = this.media.seekable;
    if (s && s.length) return Math.max(0, s.end(s.length - 1) - this.media.currentTime);
    return null;
  }

  refreshLatency() {
    const lat = this.latencySeconds();
    this.root.dataset.latency = lat === null ? '' : lat.toFixed(2);
    // where hls.js aims to be (PART-HOLD-BACK, or targetLatency, + 0.2 s per stall)
    const target = lat !== null && this.hls ? this.hls.targetLatency : null;
    this.root.dataset.targetLatency = Number.isFinite(target) ? target.toFixed(2) : '';
    let text = '';
    if (lat !== null) text = `${lat.toFixed(1)} s behind live`;
    else if (this.endlist) text = 'The broadcast has ended';
    else if (this.isLive === false) text = 'Not live: a finished recording';
    this.el.latency.textContent = text;
  }
}

const root = document.getElementById('player');
const player = new Player(root);
// For apps and tests: the player object, read-only use please.
window.mixerPlayer = player;
player.start();
