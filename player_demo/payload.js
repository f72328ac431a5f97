// The timed-metadata payload, as a player receives it. Pure: no DOM, no I/O,
// so node's test runner checks it exactly (tests/player_demo/js/payload.test.mjs).
//
// Payload (compact JSON, one every 500 ms of stream time):
//   {"s":23,"p":{"alice":{"v":300},"bob":{"v":-1}}}
// s: sequence number, +1 per payload for the whole run.
// v: the participant's peak absolute sample value 0..32767 over the window,
//    -1 when the participant has no enabled audio track (muted).
// In HLS it travels as an ID3v2.4 tag with one TXXX frame (UTF-8, empty
// description, value = the JSON), stamped with the end of the window it
// describes (as a level meter shows the last 500 ms); hls.js and Safari
// surface that frame as a cue on a "metadata" text track whose startTime is
// that moment.

export const MUTED = -1;
export const MAX_LEVEL = 32767;
/** Refuse anything larger: 50 participants fit in a few kB. */
export const MAX_PAYLOAD_CHARS = 65536;
/** One payload describes this much audio, up to its pts (and is shown for as long after). */
export const PAYLOAD_SECONDS = 0.5;
/** Bottom of the meter scale, dBFS; anything quieter shows as empty. */
export const METER_FLOOR_DB = -60;

export class PayloadError extends Error {
  constructor(message) {
    super(message);
    this.name = 'PayloadError';
  }
}

/**
 * Parse and validate one payload's JSON text.
 * Returns {s, levels} with levels a Map identity -> v in the payload's order.
 * Throws PayloadError with a one-line reason (same rules as the Python
 * MetadataPayload.from_json: integer s >= 0, object p, integer v in
 * -1 or 0..32767 for every participant).
 */
export function parsePayload(text) {
  if (typeof text !== 'string') throw new PayloadError('payload is not text');
  if (text.length > MAX_PAYLOAD_CHARS) {
    throw new PayloadError(`payload is too large (${text.length} chars)`);
  }
  let data;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new PayloadError(`payload is not JSON: ${err.message}`);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new PayloadError('payload is not a JSON object');
  }
  if (!Number.isSafeInteger(data.s) || data.s < 0) {
    throw new PayloadError("payload has no integer 's' >= 0");
  }
  const p = data.p;
  if (p === null || typeof p !== 'object' || Array.isArray(p)) {
    throw new PayloadError("payload has no object 'p'");
  }
  const levels = new Map();
  for (const [identity, entry] of Object.entries(p)) {
    if (entry === null || typeof entry !== 'object' || !Number.isInteger(entry.v)) {
      throw new PayloadError(`participant ${JSON.stringify(identity)} has no integer 'v'`);
    }
    const v = entry.v;
    if (v !== MUTED && (v < 0 || v > MAX_LEVEL)) {
      throw new PayloadError(`level of ${JSON.stringify(identity)} out of range: ${v}`);
    }
    levels.set(identity, v);
  }
  return { s: data.s, levels };
}

function syncsafe(bytes, at) {
  let n = 0;
  for (let i = 0; i < 4; i++) {
    const b = bytes[at + i];
    if (b & 0x80) throw new PayloadError('ID3 size is not syncsafe');
    n = (n << 7) | b;
  }
  return n;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Every TXXX frame of an ID3v2.3/2.4 tag as {description, value}.
 * For players that hand over raw tag bytes (older WebKit DataCue.data).
 */
export function parseId3Txxx(input) {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  if (bytes.length < 10 || bytes[0] !== 0x49 || bytes[1] !== 0x44 || bytes[2] !== 0x33) {
    throw new PayloadError('not an ID3v2 tag');
  }
  const major = bytes[3];
  if (major !== 3 && major !== 4) throw new PayloadError(`unsupported ID3v2.${major}`);
  const end = 10 + syncsafe(bytes, 6);
  if (bytes.length < end) throw new PayloadError('ID3 tag is truncated');
  const out = [];
  let pos = 10;
  while (pos + 10 <= end) {
    if (bytes[pos] === 0) break; // padding
    const id = String.fromCharCode(...bytes.subarray(pos, pos + 4));
    const size =
      major === 4
        ? syncsafe(bytes, pos + 4)
        : ((bytes[pos + 4] << 24) | (bytes[pos + 5] << 16) | (bytes[pos + 6] << 8) | bytes[pos + 7]) >>> 0;
    const body = bytes.subarray(pos + 10, pos + 10 + size);
    if (body.length !== size) throw new PayloadError('ID3 frame is truncated');
    if (id === 'TXXX' && size > 0) {
      if (body[0] !== 3) throw new PayloadError(`TXXX text encoding ${body[0]} is not UTF-8`);
      const zero = body.indexOf(0, 1);
      const descEnd = zero < 0 ? body.length : zero;
      let valueEnd = body.length;
      while (valueEnd > descEnd + 1 && body[valueEnd - 1] === 0) valueEnd--;
      try {
        out.push({
          description: utf8.decode(body.subarray(1, descEnd)),
          value: zero < 0 ? '' : utf8.decode(body.subarray(descEnd + 1, valueEnd)),
        });
      } catch {
        throw new PayloadError('TXXX frame is not valid UTF-8');
      }
    }
    pos += 10 + size;
  }
  return out;
}

/**
 * The payload texts a metadata cue carries, whatever put it there:
 * - hls.js (enableID3MetadataCues) and Safari: cue.value = {key: 'TXXX', info, data}
 * - older WebKit DataCue: cue.data = the raw ID3 tag (ArrayBuffer)
 * - hls.js where a cue refuses the `value` field: cue.text = JSON of {key, info, data}
 * Only TXXX frames with an empty description are ours. Other frames (PRIV
 * timestamps, date ranges) give []. Throws PayloadError on a broken ID3 tag.
 */
export function payloadTextsFromCue(cue) {
  const value = cue && cue.value;
  if (value && typeof value === 'object' && 'key' in value) {
    return value.key === 'TXXX' && !value.info && typeof value.data === 'string' ? [value.data] : [];
  }
  if (cue && cue.data instanceof ArrayBuffer) {
    return parseId3Txxx(cue.data)
      .filter((f) => f.description === '')
      .map((f) => f.value);
  }
  if (cue && typeof cue.text === 'string' && cue.text.startsWith('{')) {
    let frame;
    try {
      frame = JSON.parse(cue.text);
    } catch {
      return [];
    }
    if (frame && frame.key === 'TXXX' && !frame.info && typeof frame.data === 'string') {
      return [frame.data];
    }
  }
  return [];
}

/**
 * Decides which payloads get shown. A payload whose s is lower than the last
 * one shown is discarded (a late cue, a seek back); a repeat of the last s is
 * dropped quietly; a malformed one is dropped with a console warning. Call
 * reset() when playback starts over (Retry, a new source, a seek).
 */
export class PayloadSequencer {
  constructor({ warn = (msg) => console.warn(msg) } = {}) {
    this.warn = warn;
    this.reset();
  }

  reset() {
    this.lastSeq = -1;
    this.counts = { shown: 0, outOfOrder: 0, duplicate: 0, malformed: 0 };
  }

  /** Returns the parsed payload to show, or null when it must not be shown. */
  accept(text) {
    let payload;
    try {
      payload = parsePayload(text);
    } catch (err) {
      if (!(err instanceof PayloadError)) throw err;
      this.counts.malformed++;
      this.warn(`[mixer-player] malformed payload dropped: ${err.message}`);
      return null;
    }
    if (payload.s === this.lastSeq) {
      this.counts.duplicate++;
      return null;
    }
    if (payload.s < this.lastSeq) {
      this.counts.outOfOrder++;
      this.warn(`[mixer-player] out-of-order payload dropped: s=${payload.s} after s=${this.lastSeq}`);
      return null;
    }
    this.lastSeq = payload.s;
    this.counts.shown++;
    return payload;
  }
}

/** A level 0..32767 in dBFS (-Infinity for 0); null for muted. */
export function levelToDbfs(v) {
  if (v === MUTED) return null;
  return v <= 0 ? -Infinity : 20 * Math.log10(v / MAX_LEVEL);
}

/** How full a meter is, 0..1, on a dB scale from METER_FLOOR_DB to 0 dBFS; 0 for muted. */
export function meterFraction(v) {
  const db = levelToDbfs(v);
  if (db === null || db <= METER_FLOOR_DB) return 0;
  return Math.min(1, 1 - db / METER_FLOOR_DB);
}

/** Human text for a level: "muted", "silent" or "-12 dBFS". */
export function levelText(v) {
  const db = levelToDbfs(v);
  if (db === null) return 'muted';
  if (db <= METER_FLOOR_DB) return 'silent';
  return `${Math.round(db)} dBFS`;
}

/**
 * Who joined and who left between the identities on screen and a payload:
 * {joined: [...], left: [...]}, in the payload's order for joined.
 */
export function rosterChanges(shownIdentities, levels) {
  const shown = new Set(shownIdentities);
  const joined = [...levels.keys()].filter((id) => !shown.has(id));
  const left = [...shown].filter((id) => !levels.has(id));
  return { joined, left };
}
