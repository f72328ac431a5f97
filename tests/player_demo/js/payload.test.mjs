// Unit tests of the player's pure modules, with node's built-in runner:
//   node --test tests/player_demo/js/
// tests/player_demo/test_payload.py runs them from pytest and hands over, in
// MIXER_PAYLOAD_VECTORS, ID3 tags built by the Python side
// (mixer_ext.outputs.carriers.id3_txxx), so both ends are held to the same bytes.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

import {
  MAX_PAYLOAD_CHARS,
  PayloadError,
  PayloadSequencer,
  levelText,
  meterFraction,
  parseId3Txxx,
  parsePayload,
  payloadTextsFromCue,
  rosterChanges,
} from '../../../player_demo/payload.js';
import { NO_SOURCE_MESSAGE, chooseSource } from '../../../player_demo/source.js';

const PAGE = 'http://127.0.0.1:8080/';

function collectingSequencer() {
  const warnings = [];
  const seq = new PayloadSequencer({ warn: (m) => warnings.push(m) });
  return { seq, warnings };
}

const payload = (s, p) => JSON.stringify({ s, p });

describe('parsePayload', () => {
  it('reads s and the levels in the payload order', () => {
    const got = parsePayload('{"s":23,"p":{"bob":{"v":300},"alice":{"v":-1},"zoë 🎤":{"v":32767}}}');
    assert.equal(got.s, 23);
    assert.deepEqual([...got.levels], [
      ['bob', 300],
      ['alice', -1],
      ['zoë 🎤', 32767],
    ]);
  });

  it('accepts an empty room', () => {
    assert.equal(parsePayload('{"s":0,"p":{}}').levels.size, 0);
  });

  const malformed = {
    'not JSON': ['{"s":1,', /not JSON/],
    'an array': ['[1,2]', /not a JSON object/],
    null: ['null', /not a JSON object/],
    'no s': ['{"p":{}}', /integer 's'/],
    'negative s': ['{"s":-1,"p":{}}', /integer 's'/],
    'fractional s': ['{"s":1.5,"p":{}}', /integer 's'/],
    'string s': ['{"s":"1","p":{}}', /integer 's'/],
    'no p': ['{"s":1}', /object 'p'/],
    'array p': ['{"s":1,"p":[]}', /object 'p'/],
    'entry not an object': ['{"s":1,"p":{"a":5}}', /"a" has no integer 'v'/],
    'no v': ['{"s":1,"p":{"a":{}}}', /"a" has no integer 'v'/],
    'fractional v': ['{"s":1,"p":{"a":{"v":0.5}}}', /"a" has no integer 'v'/],
    'v above 32767': ['{"s":1,"p":{"a":{"v":32768}}}', /out of range: 32768/],
    'v below -1': ['{"s":1,"p":{"a":{"v":-2}}}', /out of range: -2/],
  };
  for (const [what, [text, reason]] of Object.entries(malformed)) {
    it(`refuses ${what}`, () => {
      assert.throws(() => parsePayload(text), (err) => err instanceof PayloadError && reason.test(err.message));
    });
  }

  it('refuses a payload too large to be one', () => {
    const big = `{"s":1,"p":{"${'x'.repeat(MAX_PAYLOAD_CHARS)}":{"v":1}}}`;
    assert.throws(() => parsePayload(big), /too large/);
  });

  it('refuses what is not text', () => {
    assert.throws(() => parsePayload(undefined), /not text/);
  });
});

describe('PayloadSequencer', () => {
  it('shows payloads in order, gaps included', () => {
    const { seq, warnings } = collectingSequencer();
    assert.equal(seq.accept(payload(3, { a: { v: 1 } })).s, 3);
    assert.equal(seq.accept(payload(4, { a: { v: 2 } })).s, 4);
    assert.equal(seq.accept(payload(9, {})).s, 9); // a gap is not an error
    assert.deepEqual(warnings, []);
    assert.equal(seq.counts.shown, 3);
  });

  it('discards a payload whose s is lower than the last shown, with a warning', () => {
    const { seq, warnings } = collectingSequencer();
    seq.accept(payload(10, { a: { v: 1 } }));
    assert.equal(seq.accept(payload(9, { a: { v: 999 } })), null);
    assert.equal(seq.accept(payload(0, {})), null);
    assert.equal(seq.lastSeq, 10);
    assert.equal(seq.counts.outOfOrder, 2);
    assert.equal(warnings.length, 2);
    assert.match(warnings[0], /^\[mixer-player\] out-of-order payload dropped: s=9 after s=10$/);
    // and the next one in order still shows
    assert.equal(seq.accept(payload(11, {})).s, 11);
  });

  it('drops a repeat of the last payload quietly', () => {
    const { seq, warnings } = collectingSequencer();
    seq.accept(payload(5, {}));
    assert.equal(seq.accept(payload(5, {})), null);
    assert.equal(seq.counts.duplicate, 1);
    assert.deepEqual(warnings, []);
  });

  it('drops malformed payloads with a prefixed warning and keeps going', () => {
    const { seq, warnings } = collectingSequencer();
    seq.accept(payload(1, {}));
    assert.equal(seq.accept('{"s":2,"p":{"a":{"v":"loud"}}}'), null);
    assert.equal(seq.accept('garbage'), null);
    assert.equal(seq.counts.malformed, 2);
    assert.equal(warnings.length, 2);
    for (const w of warnings) assert.match(w, /^\[mixer-player\] malformed payload dropped: /);
    // a malformed payload does not move the sequence on
    assert.equal(seq.lastSeq, 1);
    assert.equal(seq.accept(payload(2, {})).s, 2);
  });

  it('starts over after reset (a new load)', () => {
    const { seq } = collectingSequencer();
    seq.accept(payload(50, {}));
    seq.reset();
    assert.equal(seq.accept(payload(0, {})).s, 0);
    assert.equal(seq.counts.shown, 1);
  });

  it('warns on the console by default', (t) => {
    const warn = t.mock.method(console, 'warn', () => {});
    new PayloadSequencer().accept('nope');
    assert.equal(warn.mock.callCount(), 1);
  });
});

function tag(frames, major = 4) {
  const body = Buffer.concat(frames);
  const size = body.length;
  const ss = [(size >> 21) & 0x7f, (size >> 14) & 0x7f, (size >> 7) & 0x7f, size & 0x7f];
  return new Uint8Array(Buffer.concat([Buffer.from([0x49, 0x44, 0x33, major, 0, 0, ...ss]), body]));
}

function frame(id, body, major = 4) {
  const n = body.length;
  const size =
    major === 4 ? [(n >> 21) & 0x7f, (n >> 14) & 0x7f, (n >> 7) & 0x7f, n & 0x7f] : [n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
  return Buffer.concat([Buffer.from(id, 'latin1'), Buffer.from(size), Buffer.from([0, 0]), body]);
}

const txxx = (desc, value, enc = 3) => Buffer.concat([Buffer.from([enc]), Buffer.from(desc), Buffer.from([0]), Buffer.from(value)]);

describe('parseId3Txxx', () => {
  it('reads the TXXX frames of a v2.4 tag, skipping other frames and padding', () => {
    const bytes = tag([frame('PRIV', Buffer.from('x\0y')), frame('TXXX', txxx('', '{"s":1,"p":{}}')), Buffer.alloc(8)]);
    assert.deepEqual(parseId3Txxx(bytes), [{ description: '', value: '{"s":1,"p":{}}' }]);
  });

  it('reads a v2.3 tag (plain frame sizes) and trailing NULs', () => {
    const bytes = tag([frame('TXXX', txxx('d', 'v\0\0'), 3)], 3);
    assert.deepEqual(parseId3Txxx(bytes.buffer), [{ description: 'd', value: 'v' }]);
  });

  it('refuses what is not an ID3v2 tag', () => {
    assert.throws(() => parseId3Txxx(new Uint8Array([1, 2, 3])), /not an ID3v2 tag/);
    assert.throws(() => parseId3Txxx(tag([], 2)), /unsupported ID3v2.2/);
  });

  it('refuses broken sizes and encodings', () => {
    const ok = tag([frame('TXXX', txxx('', 'abc'))]);
    assert.throws(() => parseId3Txxx(ok.subarray(0, ok.length - 2)), /truncated/);
    const notSyncsafe = ok.slice();
    notSyncsafe[9] |= 0x80;
    assert.throws(() => parseId3Txxx(notSyncsafe), /syncsafe/);
    assert.throws(() => parseId3Txxx(tag([frame('TXXX', txxx('', 'abc', 1))])), /encoding 1 is not UTF-8/);
    const badUtf8 = tag([frame('TXXX', Buffer.concat([Buffer.from([3, 0]), Buffer.from([0xff, 0xfe])]))]);
    assert.throws(() => parseId3Txxx(badUtf8), /not valid UTF-8/);
  });

  const vectorsPath = process.env.MIXER_PAYLOAD_VECTORS;
  it('reads the exact tags the Python side writes', { skip: !vectorsPath && 'MIXER_PAYLOAD_VECTORS not set (pytest sets it)' }, () => {
    const vectors = JSON.parse(readFileSync(vectorsPath, 'utf8'));
    assert.ok(vectors.length > 0);
    for (const { id3_hex, json, seq, levels } of vectors) {
      const frames = parseId3Txxx(Buffer.from(id3_hex, 'hex'));
      assert.deepEqual(frames, [{ description: '', value: json }]);
      const parsed = parsePayload(frames[0].value);
      assert.equal(parsed.s, seq);
      assert.deepEqual(Object.fromEntries(parsed.levels), levels);
    }
  });
});

describe('payloadTextsFromCue', () => {
  const json = '{"s":7,"p":{"a":{"v":1}}}';

  it('reads the cues hls.js and Safari make (value = {key, info, data})', () => {
    assert.deepEqual(payloadTextsFromCue({ value: { key: 'TXXX', info: '', data: json } }), [json]);
  });

  it('ignores other frames and TXXX with a description', () => {
    assert.deepEqual(payloadTextsFromCue({ value: { key: 'PRIV', info: 'com.apple.streaming.transportStreamTimestamp', data: new ArrayBuffer(8) } }), []);
    assert.deepEqual(payloadTextsFromCue({ value: { key: 'TXXX', info: 'other', data: json } }), []);
    assert.deepEqual(payloadTextsFromCue({ value: { key: 'X-ASSET-URL', data: 'x' } }), []);
    assert.deepEqual(payloadTextsFromCue({ text: 'hello' }), []);
    assert.deepEqual(payloadTextsFromCue(null), []);
  });

  it('reads raw ID3 bytes (older WebKit DataCue.data)', () => {
    const bytes = tag([frame('TXXX', txxx('', json))]);
    assert.deepEqual(payloadTextsFromCue({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) }), [json]);
  });

  it('reads the JSON text hls.js falls back to when a cue refuses `value`', () => {
    assert.deepEqual(payloadTextsFromCue({ text: JSON.stringify({ type: 'org.id3', key: 'TXXX', info: '', data: json }) }), [json]);
    assert.deepEqual(payloadTextsFromCue({ text: '{broken' }), []);
  });
});

describe('levels on screen', () => {
  it('maps levels to a dB meter', () => {
    assert.equal(meterFraction(32767), 1);
    assert.equal(meterFraction(0), 0);
    assert.equal(meterFraction(-1), 0);
    assert.equal(meterFraction(32), 0); // about -60 dBFS: the floor
    assert.ok(Math.abs(meterFraction(16384) - (1 - 6.02 / 60)) < 0.01);
  });

  it('says what a level is', () => {
    assert.equal(levelText(-1), 'muted');
    assert.equal(levelText(0), 'silent');
    assert.equal(levelText(32767), '0 dBFS');
    assert.equal(levelText(3277), '-20 dBFS');
  });

  it('tells who joined and who left', () => {
    const levels = new Map([
      ['b', 1],
      ['c', -1],
    ]);
    assert.deepEqual(rosterChanges(['a', 'b'], levels), { joined: ['c'], left: ['a'] });
    assert.deepEqual(rosterChanges([], levels), { joined: ['b', 'c'], left: [] });
  });
});

describe('chooseSource', () => {
  const config = { status: 'ok', data: { src: '/hls/main/index.m3u8', metadataWs: '/ws/metadata' } };

  it('plays config.json src by default, relative to the page', () => {
    assert.deepEqual(chooseSource(PAGE, config), { src: 'http://127.0.0.1:8080/hls/main/index.m3u8', from: 'config' });
  });

  it('lets ?src= win over config.json', () => {
    const page = `${PAGE}?src=${encodeURIComponent('https://cdn.example/live/x.m3u8')}`;
    assert.deepEqual(chooseSource(page, config), { src: 'https://cdn.example/live/x.m3u8', from: 'query' });
    assert.equal(chooseSource(`${PAGE}player/?src=../hls/a.m3u8`, { status: 'missing' }).src, `${PAGE}hls/a.m3u8`);
  });

  it('asks for ?src= when there is no config.json', () => {
    assert.deepEqual(chooseSource(PAGE, { status: 'missing' }), { error: NO_SOURCE_MESSAGE });
    assert.deepEqual(chooseSource(`${PAGE}?src=`, { status: 'missing' }), { error: NO_SOURCE_MESSAGE });
    assert.match(NO_SOURCE_MESSAGE, /\?src=/);
  });

  it('names what is wrong with a bad config.json or src', () => {
    assert.match(chooseSource(PAGE, { status: 'invalid', reason: 'not valid JSON' }).error, /^config\.json: not valid JSON/);
    assert.match(chooseSource(PAGE, { status: 'ok', data: { src: 5 } }).error, /no "src" string/);
    assert.match(chooseSource(PAGE, { status: 'ok', data: null }).error, /no "src" string/);
    assert.match(chooseSource(`${PAGE}?src=javascript:alert(1)`, config).error, /must be an http\(s\) URL, not javascript:/);
    assert.match(chooseSource(`${PAGE}?src=${encodeURIComponent('http://[::1')}`, config).error, /is not a URL/);
  });
});
