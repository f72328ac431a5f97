// The demo player: plays an HLS stream of the mix and shows who is talking,
// in sync with what the listener hears.
//
// How the levels stay in sync: the worker puts each payload in the stream as
// an ID3 tag stamped with the pts of the audio it describes. Each payload
// becomes a cue on a `metadata` text track, with startTime = that pts on the
// media timeline; the browser makes the cue active when playback reaches it
// and fires `cuechange`: that is the moment the meters change. Nothing is
// shown when a segment is downloaded (seconds ahead of the listener).
// - Safari (native HLS) makes those cues itself.
// - With hls.js we make them, from FRAG_PARSING_METADATA samples (raw ID3 +
//   pts), on a track of our own. hls.js's own cue track
//   (enableID3MetadataCues) loses the first segment's cues in Chromium: its
//   <track src="data:,WEBVTT"> finishes loading after they were added and
//   starts over empty.
//
// Copying this into an app: keep payload.js as it is, and take watchTrack() /
// onCueChange() below; or listen for the `mixer:payload` event this page
// dispatches (detail: {s, levels, mediaTime}) and draw your own UI.

import {
  MAX_LEVEL,
  MUTED,
  PAYLOAD_SECONDS,
  PayloadError,
  PayloadSequencer,
  levelText,
  meterFraction,
  parseId3Txxx,
  payloadTextsFromCue,
  rosterChanges,
} from './payload.js';
import { createHls } from './hls-config.js';
import { chooseSource } from './source.js';

const LATENCY_REFRESH_MS = 500;
/** Cues this far behind the playhead are removed (hours of stream, 2 cues a second). */
const CUE_KEEP_SECONDS = 60;
const PRUNE_EVERY_PAYLOADS = 40;
/** hls.js labels an MPEG-TS ID3 sample one or the other (emsg when the TS has a video PID). */
const ID3_SAMPLE_TYPES = new Set(['org.id3', 'https://aomedia.org/emsg/ID3']);
const HLS_MIME = 'application/vnd.apple.mpegurl';

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

/** Use the browser's own HLS only where it also gives ID3 cues (Safari). */
function chooseEngine(media, requested) {
  const hlsjs = typeof window.Hls === 'function' && window.Hls.isSupported();
  const native = media.canPlayType(HLS_MIME) !== '';
  // Safari exposes in-band ID3 as DataCue; other browsers that play HLS
  // natively may not surface the metadata at all, so hls.js goes first there.
  const nativeCues = 'DataCue' in window || 'WebKitDataCue' in window;
  if (requested === 'native') return native ? 'native' : null;
  if (requested === 'hlsjs') return hlsjs ? 'hlsjs' : null;
  if (native && (nativeCues || !hlsjs)) return 'native';
  if (hlsjs) return 'hlsjs';
  return native ? 'native' : null;
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
    this.watched = new WeakSet();
    this.hls = null;
    this.cueTrack = null; // our metadata track when hls.js plays
    this.src = null;
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
    this.mediaRecovered = false;
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
    if (choice.error) {
      this.noSource = true;
      this.el.source.textContent = 'none';
      this.showProblem(choice.error, { retry: false });
      this.render();
      return;
    }
    this.src = choice.src;
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
    this.clearCues();
    this.hideProblem();
    this.engine = chooseEngine(this.media, this.requestedEngine);
    this.root.dataset.engine = this.engine || 'none';
    if (this.engine === null) {
      const why =
        typeof window.Hls !== 'function'
          ? 'hls.js is missing (player_demo/vendor/hls.min.js: run `make setup`) and this browser has no native HLS'
          : 'this browser can play neither HLS nor Media Source Extensions';
      this.fail(why);
      return;
    }
    this.watchTextTracks();
    if (this.engine === 'native') {
      this.media.src = this.src;
      this.media.load();
      this.tryPlay();
    } else {
      this.startHlsJs();
    }
    this.render();
  }

  teardown() {
    if (this.hls) {
      this.hls.destroy();
      this.hls = null;
    }
    if (this.media.getAttribute('src')) {
      this.media.removeAttribute('src');
      this.media.load();
    }
  }

  startHlsJs() {
    const Hls = window.Hls;
    // Our own cues instead of hls.js's (see the top of this file).
    const hls = createHls(Hls, { lowLatency: this.lowLatency });
    this.hls = hls;
    // For apps and tests that want hls.js' own events (stalls, parts loaded):
    // fired before anything loads, so a listener misses none of them.
    this.root.dispatchEvent(new CustomEvent('mixer:hls', { bubbles: true, detail: { hls } }));
    hls.on(Hls.Events.FRAG_PARSING_METADATA, (_event, data) => {
      if (hls === this.hls) this.addCues(data.samples);
    });
    hls.on(Hls.Events.MANIFEST_PARSED, () => this.tryPlay());
    hls.on(Hls.Events.LEVEL_UPDATED, (_event, data) => this.onPlaylist(data.details.live));
    hls.on(Hls.Events.LEVEL_LOADED, (_event, data) => this.onPlaylist(data.details.live));
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (hls !== this.hls || !data.fatal) return; // hls.js recovers from the others
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR && !this.mediaRecovered) {
        this.mediaRecovered = true;
        console.warn(`[mixer-player] media error, recovering once: ${data.details}`);
        hls.recoverMediaError();
        return;
      }
      this.fail(hlsErrorReason(data));
    });
    hls.loadSource(this.src);
    hls.attachMedia(this.media);
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
   * hls.js hands over each ID3 tag of a segment when it parses it (ahead of
   * playback) with its pts in media time; a cue over [pts, pts + 500 ms)
   * lets the browser say when that audio is being heard.
   */
  addCues(samples) {
    if (!this.cueTrack) {
      // addTextTrack, not a <track> element: nothing loads, nothing resets it.
      this.cueTrack = this.media.addTextTrack('metadata', 'mixer-ext payloads');
      this.cueTrack.mode = 'hidden';
      this.watchTrack(this.cueTrack);
    }
    const track = this.cueTrack;
    for (const sample of samples) {
      if (sample.type && !ID3_SAMPLE_TYPES.has(sample.type)) continue;
      let texts;
      try {
        texts = parseId3Txxx(sample.data)
          .filter((f) => f.description === '')
          .map((f) => f.value);
      } catch (err) {
        if (!(err instanceof PayloadError)) throw err;
        console.warn(`[mixer-player] malformed ID3 tag dropped: ${err.message}`);
        continue;
      }
      const id = sample.pts.toFixed(3);
      if (texts.length === 0 || track.cues.getCueById(id)) continue; // a segment parsed twice
      const cue = new VTTCue(sample.pts, sample.pts + PAYLOAD_SECONDS, '');
      cue.id = id;
      cue.value = { key: 'TXXX', info: '', data: texts[0] };
      track.addCue(cue);
    }
  }

  clearCues() {
    const cues = this.cueTrack && this.cueTrack.cues;
    if (!cues) return;
    for (let i = cues.length - 1; i >= 0; i--) this.cueTrack.removeCue(cues[i]);
  }

  pruneCues() {
    const cues = this.cueTrack && this.cueTrack.cues;
    if (!cues) return;
    const before = this.media.currentTime - CUE_KEEP_SECONDS;
    for (let i = cues.length - 1; i >= 0; i--) {
      if (cues[i].endTime < before) this.cueTrack.removeCue(cues[i]);
    }
  }

  watchTextTracks() {
    const tracks = this.media.textTracks;
    if (!this.watched.has(tracks)) {
      this.watched.add(tracks);
      tracks.addEventListener('addtrack', (e) => this.watchTrack(e.track));
    }
    for (const track of tracks) this.watchTrack(track);
  }

  watchTrack(track) {
    if (track.kind !== 'metadata' || this.watched.has(track)) return;
    this.watched.add(track);
    // 'disabled' tracks keep no active cues; 'hidden' ones do, without drawing.
    if (track.mode === 'disabled') track.mode = 'hidden';
    track.addEventListener('cuechange', () => this.onCueChange(track));
  }

  /** The browser says the active cues changed: playback reached a new payload. */
  onCueChange(track) {
    const active = track.activeCues;
    if (!active || active.length === 0) return;
    // The latest payload at or before the playhead is the one being heard.
    let best = null;
    let bestTexts = null;
    for (let i = 0; i < active.length; i++) {
      const cue = active[i];
      let texts;
      try {
        texts = payloadTextsFromCue(cue);
      } catch (err) {
        if (!(err instanceof PayloadError)) throw err;
        console.warn(`[mixer-player] malformed ID3 tag dropped: ${err.message}`);
        continue;
      }
      if (texts.length && (best === null || cue.startTime >= best.startTime)) {
        best = cue;
        bestTexts = texts;
      }
    }
    if (!best) return;
    for (const text of bestTexts) {
      const payload = this.sequencer.accept(text);
      if (payload) this.showPayload(payload, best);
    }
    if (this.sequencer.counts.shown % PRUNE_EVERY_PAYLOADS === 0) this.pruneCues();
  }

  showPayload(payload, cue) {
    this.meters.show(payload.levels);
    this.root.dataset.seq = String(payload.s);
    this.root.dispatchEvent(
      new CustomEvent('mixer:payload', {
        bubbles: true,
        detail: {
          s: payload.s,
          levels: Object.fromEntries(payload.levels),
          mediaTime: this.media.currentTime,
          cueStart: cue.startTime,
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
