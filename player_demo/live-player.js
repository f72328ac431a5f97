// A Live Player SDK-compatible web player: the public surface of Twilio's
// `@twilio/live-player-sdk` 1.0.x for JavaScript (its typedoc and README), on hls.js
// with this project's LL-HLS tuning, so a listener app changes its import and keeps
// its code:
//
//   import { Player } from '/player/live-player.js';        // was '@twilio/live-player-sdk'
//   <script src="/player/vendor/twilio-live-player.min.js">  // was twilio-live-player.min.js
//   const { Player } = Twilio.Live;
//   const player = await Player.connect(accessToken, { playerWasmAssetsPath });
//   player.on(Player.Event.StateChanged, (state) => ...);
//   player.on(Player.Event.TimedMetadataReceived, ({ metadata, time }) => ...);
//   player.play();
//
// What it does as the SDK did:
// - `Player.connect(token)` decodes the access token without verifying it (the server
//   checks the playback URL's own signed token) and reads
//   `grants.player.{playbackUrl, playerStreamerSid, requestCredentials}`; a token
//   without a usable grant rejects with `AccessTokenInvalidError` (code 20101).  The
//   promise settles once the playback URL answered (a refused grant rejects with
//   `PlaybackAuthorizationError` 56001, a stream that is gone with
//   `PlaybackStreamNotAvailableError` 56007, any other failure with its 560xx error).
// - States `connecting` (inside connect) -> `idle` (connected, loading; also after
//   pause()) -> `ready` (enough media to play) -> `playing` <-> `buffering`, and
//   `ended` when the stream ended (`#EXT-X-ENDLIST` played to its end), after a fatal
//   error (the `error` event first), or after disconnect().
// - `timedMetadataReceived` with `{metadata, time}`: `metadata` the text of each ID3
//   TXXX frame in the stream (the mixer's level payloads and an app's own
//   TimedMetadata; this project adds `source`: 'mixer' or 'app'), `time` the media
//   time it belongs to; delivered when the playhead
//   reaches it, i.e. when its audio is heard, not when its part is downloaded: each
//   one is a cue on a hidden metadata text track and fires on the cue's `enter`
//   (which the browser raises even for a cue shorter than its update interval).
// - `volumeChanged`, `durationChanged` (Infinity while live, the length once ended),
//   `stateChanged`, `error` (a `Player.Error.*` instance with `code`), `rebuffering`.
// - `play()` before `ready` is kept and honoured once the media can play.  When the
//   browser's autoplay policy refuses audible playback, the player mutes itself and
//   plays (volumeChanged tells the app to show an unmute button), as the SDK's README
//   describes.
// Not provided (no meaning for an audio-only LL-HLS mix, or no source to follow):
// qualities beyond the one rendition, seekTo, telemetry, stats, wasm assets
// (`playerWasmAssetsPath` is accepted and ignored).
//
// One module of ~700 lines because it is one concept: the SDK's Player (state machine,
// events, errors, timed metadata) over one hls.js or Safari's HLS.

import Hls from './vendor/hls.min.mjs';
import { createHls } from './hls-config.js';
import { PayloadError, parseId3Txxx } from './payload.js';
import { grantFromToken } from './source.js';

export const VERSION = '1.0.2-mixer-ext';

/** hls.js labels an MPEG-TS ID3 sample one or the other (emsg when the TS has a video PID). */
const ID3_SAMPLE_TYPES = new Set(['org.id3', 'https://aomedia.org/emsg/ID3']);
/** A cue spans this much media time (the mixer's payload window). */
const CUE_SECONDS = 0.5;
/** Cues further than this behind the playhead are removed (a stream runs for hours). */
const CUE_KEEP_SECONDS = 60;

const State = Object.freeze({
  Buffering: 'buffering',
  Connecting: 'connecting',
  Ended: 'ended',
  Idle: 'idle',
  Playing: 'playing',
  Ready: 'ready',
});

const Event = Object.freeze({
  DurationChanged: 'durationChanged',
  Error: 'error',
  QualityChanged: 'qualityChanged',
  Rebuffering: 'rebuffering',
  SeekCompleted: 'seekCompleted',
  StateChanged: 'stateChanged',
  TimedMetadataReceived: 'timedMetadataReceived',
  VideoSizeChanged: 'videoSizeChanged',
  VolumeChanged: 'volumeChanged',
});

const LogLevel = Object.freeze({ Debug: 'debug', Info: 'info', Warn: 'warn', Error: 'error', Off: 'off' });
const LOG_ORDER = ['debug', 'info', 'warn', 'error', 'off'];

/** console output at `level` when Player.setLogLevel allows it (default: warn). */
function log(level, ...args) {
  if (LOG_ORDER.indexOf(level) < LOG_ORDER.indexOf(Player._logLevel)) return;
  (console[level] || console.log)(...args);
}

// ------------------------------------------------------------------------- errors
/** The SDK's error codes (Player.Error.ErrorCode) and their explanations. */
const ErrorCode = Object.freeze({
  ACCESS_TOKEN_INVALID: 20101,
  PLAYBACK_MEDIA: 56000,
  PLAYBACK_AUTHORIZATION: 56001,
  PLAYBACK_INVALID_DATA: 56002,
  PLAYBACK_INVALID_PARAMETER: 56003,
  PLAYBACK_INVALID_STATE: 56004,
  PLAYBACK_NETWORK: 56005,
  PLAYBACK_NETWORK_IO: 56006,
  PLAYBACK_STREAM_NOT_AVAILABLE: 56007,
  PLAYBACK_TOO_MANY_STREAMING_REQUESTS: 56008,
  PLAYBACK_NOT_SUPPORTED: 56009,
  PLAYBACK_NO_SOURCE: 56010,
  PLAYBACK_TIMEOUT: 56011,
});

class TwilioError extends Error {
  constructor(code, explanation, message) {
    super(message ? `${explanation}: ${message}` : explanation);
    this.name = 'TwilioError';
    this.code = code;
    this.explanation = explanation;
  }
}

function errorClass(name, code, explanation) {
  const cls = class extends TwilioError {
    constructor(message) {
      super(code, explanation, message);
      this.name = name;
    }
  };
  Object.defineProperty(cls, 'name', { value: name });
  return cls;
}

const PlayerError = Object.freeze({
  ErrorCode,
  TwilioError,
  AccessTokenInvalidError: errorClass('AccessTokenInvalidError', 20101, 'Twilio was unable to validate your Access Token'),
  PlaybackMediaError: errorClass('PlaybackMediaError', 56000, 'An error occurred playing back media content'),
  PlaybackAuthorizationError: errorClass('PlaybackAuthorizationError', 56001, 'A network resource is not authorized'),
  PlaybackInvalidDataError: errorClass('PlaybackInvalidDataError', 56002, 'Data or input is invalid'),
  PlaybackInvalidParameterError: errorClass('PlaybackInvalidParameterError', 56003, 'A method parameter is invalid'),
  PlaybackInvalidStateError: errorClass('PlaybackInvalidStateError', 56004, 'The Player or an internal object is in an invalid state'),
  PlaybackNetworkError: errorClass('PlaybackNetworkError', 56005, 'A network error occurred'),
  PlaybackNetworkIOError: errorClass('PlaybackNetworkIOError', 56006, 'A network I/O error occurred'),
  PlaybackStreamNotAvailableError: errorClass('PlaybackStreamNotAvailableError', 56007, 'The stream is not available'),
  PlaybackTooManyStreamingRequestsError: errorClass('PlaybackTooManyStreamingRequestsError', 56008, 'The current-viewers limit was reached'),
  PlaybackNotSupportedError: errorClass('PlaybackNotSupportedError', 56009, 'A method or feature is not supported'),
  PlaybackNoSourceError: errorClass('PlaybackNoSourceError', 56010, 'There is no source for the Player to play'),
  PlaybackTimeoutError: errorClass('PlaybackTimeoutError', 56011, 'The Player timed out performing an operation'),
});

/** An hls.js fatal error as the SDK's error. */
export function errorFromHls(data) {
  const status = data.response && data.response.code;
  const what = `${data.details}${status ? `, HTTP ${status}` : ''}`;
  if (status === 401 || status === 403) return new PlayerError.PlaybackAuthorizationError(what);
  if (status === 404 || status === 410) return new PlayerError.PlaybackStreamNotAvailableError(what);
  if (status === 429) return new PlayerError.PlaybackTooManyStreamingRequestsError(what);
  if (/TimeOut$/.test(data.details || '')) return new PlayerError.PlaybackTimeoutError(what);
  if (data.type === 'networkError') return new PlayerError.PlaybackNetworkError(what);
  if (/Parsing|Empty/.test(data.details || '')) return new PlayerError.PlaybackInvalidDataError(what);
  if (/Incompatible/.test(data.details || '')) return new PlayerError.PlaybackNotSupportedError(what);
  return new PlayerError.PlaybackMediaError(what);
}

// ------------------------------------------------------------------------- events
/** The part of Node's EventEmitter the SDK's Player inherits that apps use. */
class Emitter {
  constructor() {
    this._listeners = new Map();
  }

  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, []);
    this._listeners.get(name).push(fn);
    return this;
  }

  addListener(name, fn) {
    return this.on(name, fn);
  }

  once(name, fn) {
    const wrapper = (...args) => {
      this.off(name, wrapper);
      fn.apply(this, args);
    };
    wrapper.listener = fn;
    return this.on(name, wrapper);
  }

  off(name, fn) {
    const list = this._listeners.get(name);
    if (!list) return this;
    const i = list.findIndex((f) => f === fn || f.listener === fn);
    if (i >= 0) list.splice(i, 1);
    return this;
  }

  removeListener(name, fn) {
    return this.off(name, fn);
  }

  removeAllListeners(name) {
    if (name === undefined) this._listeners.clear();
    else this._listeners.delete(name);
    return this;
  }

  listenerCount(name) {
    return (this._listeners.get(name) || []).length;
  }

  listeners(name) {
    return (this._listeners.get(name) || []).map((f) => f.listener || f);
  }

  emit(name, ...args) {
    const list = [...(this._listeners.get(name) || [])];
    for (const fn of list) {
      try {
        fn.apply(this, args);
      } catch (err) {
        // one app handler that throws must not stop the player or the other handlers
        log('error', `[live-player] a '${name}' listener threw:`, err);
      }
    }
    return list.length > 0;
  }
}

// ------------------------------------------------------------------------- player
const HLS_MIME = 'application/vnd.apple.mpegurl';

function hlsJsSupported() {
  return typeof Hls === 'function' && Hls.isSupported();
}

/** 'hlsjs', 'native' or null: hls.js first, Safari's own HLS where hls.js cannot run. */
export function chooseEngine(requested) {
  if (requested === 'hlsjs') return hlsJsSupported() ? 'hlsjs' : null;
  if (requested === 'native') return nativeHlsSupported(true) ? 'native' : null;
  // Safari: its own HLS surfaces the ID3 cues (DataCue); elsewhere hls.js goes first
  if (nativeHlsSupported() || (nativeHlsSupported(true) && !hlsJsSupported())) return 'native';
  if (hlsJsSupported()) return 'hlsjs';
  return null;
}

function nativeHlsSupported(anyNative = false) {
  if (typeof document === 'undefined') return false;
  const probe = document.createElement('video');
  const native = probe.canPlayType(HLS_MIME) !== '';
  // Safari exposes in-band ID3 as DataCue; a browser that plays HLS natively without it
  // would lose the timed metadata, so hls.js goes first there.
  return native && (anyNative || 'DataCue' in window || 'WebKitDataCue' in window);
}

/**
 * Every TXXX frame of an ID3 tag as {text, source}: the mixer's payloads (empty
 * description: source 'mixer') and an app's own TimedMetadata (description 'app').
 */
function id3Texts(bytes) {
  return parseId3Txxx(bytes).map((f) => ({ text: f.value, source: f.description || 'mixer' }));
}

export class Player extends Emitter {
  /**
   * Connect to the live stream of a player access token (its `player` grant).
   * @param {string} accessToken
   * @param {object} [options] the SDK's (`playerWasmAssetsPath`, accepted and unused) and this
   *   project's: `lowLatency` ('auto' | true | false, see hls-config.js), `targetLatency`
   *   (seconds behind live instead of the stream's PART-HOLD-BACK: 1.5 for a listener far
   *   from the origin, docs/howto/far-listeners.md), `onHls` (called
   *   with the hls.js instance before it loads), `element` (play in this media element),
   *   `engine` ('hlsjs' | 'native'), `keepAfterEnd` (a finished stream can be played
   *   again), `signal` (an AbortSignal that disconnects).
   * @returns {Promise<Player>}
   */
  static async connect(accessToken, options = {}) {
    const grant = grantFromToken(accessToken, 'accessToken');
    if (grant.error) throw new PlayerError.AccessTokenInvalidError(grant.error);
    let url;
    try {
      url = new URL(grant.playbackUrl, typeof location === 'undefined' ? undefined : location.href);
    } catch {
      throw new PlayerError.AccessTokenInvalidError('grants.player.playbackUrl is not a URL');
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new PlayerError.AccessTokenInvalidError(`grants.player.playbackUrl must be http(s), not ${url.protocol}`);
    }
    return Player._open(url.href, grant, options);
  }

  /**
   * This project's addition, for pages that hold a playlist URL rather than a token (the
   * worker's own page): the same Player on `playbackUrl`.
   */
  static async fromPlaybackUrl(playbackUrl, options = {}) {
    return Player._open(playbackUrl, { playbackUrl, playerStreamerSid: null, requestCredentials: null }, options);
  }

  static async _open(src, grant, options) {
    const engine = chooseEngine(options.engine);
    if (engine === null) throw new PlayerError.PlaybackNotSupportedError('no MSE and no native HLS with metadata');
    const t = options.targetLatency;
    if (t !== undefined && t !== null && !(Number.isFinite(t) && t > 0 && t <= 30)) {
      throw new RangeError(`options.targetLatency must be seconds in (0, 30], not ${t}`);
    }
    const player = new Player(src, grant, { ...options, engine });
    // this project's option: an AbortSignal that disconnects the player (also while connecting)
    if (options.signal) {
      if (options.signal.aborted) player.disconnect();
      else options.signal.addEventListener('abort', () => player.disconnect(), { once: true });
    }
    await player._connected;
    return player;
  }

  /** Whether this browser can play the stream (hls.js on MSE, or Safari's HLS). */
  static get isSupported() {
    return hlsJsSupported() || nativeHlsSupported();
  }

  /** One of Player.LogLevel: what the player writes to the console (default 'warn'). */
  static setLogLevel(level) {
    if (!LOG_ORDER.includes(level)) {
      throw new PlayerError.PlaybackInvalidParameterError(`log level must be one of ${LOG_ORDER.join(', ')}`);
    }
    Player._logLevel = level;
  }

  /** @private use Player.connect() */
  constructor(src, grant, options = {}) {
    super();
    this._src = src;
    this._grant = grant;
    this._options = options;
    this._state = State.Connecting;
    this._wantPlay = false;
    this._live = null; // playlist without ENDLIST when first loaded
    this._endlist = false;
    this._duration = NaN;
    this._hls = null;
    this._media = null;
    this._track = null;
    this._seen = new Set(); // cue keys already made (a part parsed twice)
    this._mediaListeners = [];
    this._disconnected = false;
    this._connected = new Promise((resolve, reject) => {
      this._resolveConnect = resolve;
      this._rejectConnect = reject;
    });
    let element = options.element;
    if (!element) {
      element = document.createElement('video');
      element.playsInline = true;
      element.preload = 'auto';
    }
    this._start(element);
  }

  // ------------------------------------------------------------------ accessors
  get state() {
    return this._state;
  }

  get playerStreamerSid() {
    return this._grant.playerStreamerSid;
  }

  /** The element playing the stream (the SDK's own, or the one given to attach()). */
  get videoElement() {
    return this._media;
  }

  get duration() {
    return this._duration;
  }

  get isMuted() {
    return this._media ? this._media.muted : false;
  }

  set isMuted(muted) {
    if (this._state === State.Ended || !this._media) return;
    this._media.muted = Boolean(muted);
  }

  get volume() {
    return this._media ? this._media.volume : 1;
  }

  /** Seconds between the playhead and the live edge (null when not live). */
  get liveLatency() {
    if (!this._live || this._endlist) return null;
    if (this._hls) return Number.isFinite(this._hls.latency) ? this._hls.latency : null;
    const s = this._media && this._media.seekable;
    return s && s.length ? Math.max(0, s.end(s.length - 1) - this._media.currentTime) : null;
  }

  get position() {
    return this._media ? this._media.currentTime : 0;
  }

  get availableQualities() {
    return [];
  }

  get quality() {
    return null;
  }

  /** This project's addition: the hls.js instance (null on Safari's native HLS). */
  get hls() {
    return this._hls;
  }

  /** This project's addition: 'hlsjs' or 'native' (Safari's own HLS). */
  get engine() {
    return this._options.engine;
  }

  // ------------------------------------------------------------------ methods
  play() {
    if (this._state === State.Ended) return;
    this._wantPlay = true;
    this._tryPlay();
  }

  pause() {
    if (this._state === State.Ended) return;
    this._wantPlay = false;
    if (this._media) this._media.pause();
    if (this._state !== State.Connecting) this._setState(State.Idle);
  }

  setVolume(volume) {
    if (this._state === State.Ended || !this._media) return;
    const v = Number(volume);
    if (!Number.isFinite(v) || v < 0 || v > 1) {
      throw new PlayerError.PlaybackInvalidParameterError(`volume must be within 0..1, got ${volume}`);
    }
    this._media.volume = v;
  }

  /** Play in the app's own element instead of the Player's. */
  attach(element) {
    if (this._disconnected) return;
    const wasPlaying = this._wantPlay;
    this._bindMedia(element);
    if (this._hls) {
      this._hls.detachMedia();
      this._hls.attachMedia(element);
    } else {
      element.src = this._src;
    }
    if (wasPlaying) this._tryPlay();
  }

  /** Terminal: stops playback and releases the stream. */
  disconnect() {
    if (this._disconnected) return;
    this._disconnected = true;
    this._wantPlay = false;
    if (this._hls) {
      this._hls.destroy();
      this._hls = null;
    }
    if (this._media) {
      this._media.pause();
      if (this._media.getAttribute('src')) {
        this._media.removeAttribute('src');
        this._media.load();
      }
    }
    this._unbindMedia();
    this._dropCues();
    this._rejectConnect(new PlayerError.PlaybackInvalidStateError('disconnected'));
    this._setState(State.Ended);
  }

  // ------------------------------------------------------------------ internals
  _start(element) {
    this._bindMedia(element);
    if (this._options.engine === 'hlsjs') {
      const hls = createHls(Hls, {
        lowLatency: this._options.lowLatency ?? 'auto',
        targetLatency: this._options.targetLatency ?? null,
        config: this._hlsConfig(),
      });
      this._hls = hls;
      if (typeof this._options.onHls === 'function') this._options.onHls(hls);
      hls.on(Hls.Events.MANIFEST_LOADED, () => this._onConnected());
      hls.on(Hls.Events.LEVEL_LOADED, (_e, data) => this._onPlaylist(data.details));
      hls.on(Hls.Events.LEVEL_UPDATED, (_e, data) => this._onPlaylist(data.details));
      hls.on(Hls.Events.FRAG_PARSING_METADATA, (_e, data) => {
        if (hls === this._hls) this._addMetadata(data.samples);
      });
      hls.on(Hls.Events.ERROR, (_e, data) => this._onHlsError(hls, data));
      hls.loadSource(this._src);
      hls.attachMedia(element);
    } else {
      // Safari: its own HLS, in-band ID3 as cues on a metadata text track.
      element.textTracks.addEventListener('addtrack', (e) => this._watchNativeTrack(e.track));
      element.src = this._src;
      element.load();
    }
  }

  _hlsConfig() {
    const rc = this._grant.requestCredentials;
    if (rc !== 'include') return {};
    // the grant asks for cookies on the stream's requests
    return {
      xhrSetup: (xhr) => {
        xhr.withCredentials = true;
      },
      fetchSetup: (context, init) => new Request(context.url, { ...init, credentials: 'include' }),
    };
  }

  _dropCues() {
    const track = this._track;
    if (!track) return;
    const cues = track.cues;
    for (let i = cues ? cues.length - 1 : -1; i >= 0; i--) track.removeCue(cues[i]);
    track.mode = 'disabled';
    this._track = null;
  }

  _bindMedia(element) {
    this._unbindMedia();
    this._dropCues();
    this._media = element;
    this._seen.clear();
    const on = (type, fn) => {
      element.addEventListener(type, fn);
      this._mediaListeners.push([type, fn]);
    };
    on('canplay', () => {
      if (this._state === State.Idle || this._state === State.Connecting) {
        if (this._state === State.Connecting) this._onConnected();
        this._setState(State.Ready);
      }
      if (this._wantPlay) this._tryPlay();
    });
    on('playing', () => this._setState(State.Playing));
    on('waiting', () => {
      if (this._state === State.Playing) {
        this._setState(State.Buffering);
        this.emit(Event.Rebuffering);
      }
    });
    on('ended', () => this._onEnded());
    on('volumechange', () => this.emit(Event.VolumeChanged));
    on('durationchange', () => {
      if (!this._hls && this._media) {
        this._live = this._media.duration === Infinity;
        this._updateDuration();
      }
    });
    on('error', () => {
      if (this._hls || !element.error) return;
      const code = element.error.code;
      const err =
        code === 2
          ? new PlayerError.PlaybackNetworkError(element.error.message)
          : code === 4
            ? new PlayerError.PlaybackNotSupportedError(element.error.message)
            : new PlayerError.PlaybackMediaError(element.error.message);
      this._fail(err);
    });
  }

  _unbindMedia() {
    if (!this._media) return;
    for (const [type, fn] of this._mediaListeners) this._media.removeEventListener(type, fn);
    this._mediaListeners = [];
  }

  _onConnected() {
    if (this._state !== State.Connecting) return;
    this._setState(State.Idle);
    this._resolveConnect(this);
  }

  _onPlaylist(details) {
    if (this._live === null) this._live = details.live;
    else if (this._live && !details.live) this._endlist = true;
    this._updateDuration(details);
  }

  _updateDuration(details) {
    let d;
    if (this._live && !this._endlist) d = Infinity;
    else if (details) d = details.totalduration;
    else d = this._media ? this._media.duration : NaN;
    if (d !== this._duration && !(Number.isNaN(d) && Number.isNaN(this._duration))) {
      this._duration = d;
      this.emit(Event.DurationChanged, d);
    }
  }

  _onHlsError(hls, data) {
    if (hls !== this._hls || !data.fatal) return; // hls.js recovers from the others
    if (data.type === Hls.ErrorTypes.MEDIA_ERROR && !this._mediaRecovered) {
      this._mediaRecovered = true;
      hls.recoverMediaError();
      return;
    }
    this._fail(errorFromHls(data));
  }

  _fail(err) {
    if (this._state === State.Connecting) {
      // connect() rejects with it; nothing was handed to the app yet
      this._disconnected = true;
      if (this._hls) this._hls.destroy();
      this._hls = null;
      this._rejectConnect(err);
      return;
    }
    log('warn', `[live-player] ${err.name} (${err.code}): ${err.message}`);
    this.emit(Event.Error, err);
    this.disconnect();
  }

  _onEnded() {
    if (this._disconnected) return;
    if (this._options.keepAfterEnd) {
      // this project's option for the demo page: Ended, but a finished recording can be
      // played again from the top
      this._setState(State.Ended);
      return;
    }
    // the stream ended and was played to its end: terminal, as in the SDK
    this._wantPlay = false;
    if (this._hls) {
      this._hls.destroy();
      this._hls = null;
    }
    this._disconnected = true;
    this._unbindMedia();
    this._setState(State.Ended);
  }

  _tryPlay() {
    const media = this._media;
    if (!media || this._state === State.Connecting || this._state === State.Ended) return;
    const p = media.play();
    if (!p) return;
    p.catch((err) => {
      if (err.name === 'NotAllowedError' && !media.muted) {
        // the autoplay policy refused sound: play muted; volumeChanged tells the app
        media.muted = true;
        if (this._wantPlay) this._tryPlay();
      } else if (err.name !== 'AbortError') {
        log('warn', `[live-player] play() failed: ${err.message}`);
      }
    });
  }

  _setState(state) {
    if (state === this._state) return;
    this._state = state;
    this.emit(Event.StateChanged, state);
  }

  // ------------------------------------------------------------------ metadata
  _cueTrack() {
    if (!this._track) {
      // addTextTrack, not a <track> element: nothing loads, nothing resets it
      this._track = this._media.addTextTrack('metadata', 'live-player timed metadata');
      this._track.mode = 'hidden';
    }
    return this._track;
  }

  /** hls.js parsed ID3 tags (ahead of playback): one cue each, fired when heard. */
  _addMetadata(samples) {
    const track = this._cueTrack();
    for (const sample of samples) {
      if (sample.type && !ID3_SAMPLE_TYPES.has(sample.type)) continue;
      let texts;
      try {
        texts = id3Texts(sample.data);
      } catch (err) {
        if (!(err instanceof PayloadError)) throw err;
        log('warn', `[live-player] malformed ID3 tag dropped: ${err.message}`);
        continue;
      }
      texts.forEach(({ text, source }, i) => {
        const key = `${sample.pts.toFixed(3)}/${i}/${text}`;
        if (this._seen.has(key)) return; // a part and then its segment parsed
        this._seen.add(key);
        const cue = new VTTCue(sample.pts, sample.pts + CUE_SECONDS, '');
        cue.onenter = () => this._deliver(text, cue.startTime, source);
        track.addCue(cue);
      });
    }
    this._prune();
  }

  /**
   * The SDK's TimedMetadata {metadata, time}, plus this project's `source`: 'mixer' for
   * the mixer's level payloads, 'app' for a backend's POST .../TimedMetadata.
   */
  _deliver(metadata, time, source) {
    if (this._disconnected) return;
    this.emit(Event.TimedMetadataReceived, { metadata, time, source });
  }

  _prune() {
    const cues = this._track && this._track.cues;
    if (!cues || cues.length < 240) return;
    const before = this._media.currentTime - CUE_KEEP_SECONDS;
    for (let i = cues.length - 1; i >= 0; i--) {
      if (cues[i].endTime < before) this._track.removeCue(cues[i]);
    }
    if (this._seen.size > 4096) this._seen.clear();
  }

  _watchNativeTrack(track) {
    if (track.kind !== 'metadata') return;
    track.mode = 'hidden';
    track.addEventListener('cuechange', () => {
      const active = track.activeCues;
      for (let i = 0; active && i < active.length; i++) {
        const cue = active[i];
        if (cue.__delivered) continue;
        cue.__delivered = true;
        const value = cue.value;
        if (value && value.key === 'TXXX' && typeof value.data === 'string') {
          this._deliver(value.data, cue.startTime, value.info || 'mixer');
        }
      }
    });
  }
}

Player.State = State;
Player.Event = Event;
Player.Error = PlayerError;
Player.LogLevel = LogLevel;
Player.version = VERSION;
Player._logLevel = LogLevel.Warn;

// For apps and the tests that read hls.js' constants (Hls.Events) of the page's player.
if (typeof globalThis !== 'undefined' && globalThis.Hls === undefined) globalThis.Hls = Hls;

export default Player;
