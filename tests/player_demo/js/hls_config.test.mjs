// The player learns that a stream is LL-HLS from its playlist (issue 24.2), never from a
// side file: the text of a media playlist the worker's origin writes says so, a
// multivariant playlist (the PlaybackGrant's first answer) or a plain live one does not.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { CATCH_UP, catchUpRate, isLowLatencyPlaylist } from '../../../player_demo/hls-config.js';

const LL = `#EXTM3U
#EXT-X-VERSION:10
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6,HOLD-BACK=6
#EXT-X-PART-INF:PART-TARGET=0.2
#EXT-X-MEDIA-SEQUENCE:3
#EXT-X-PART:DURATION=0.192,URI="part-000003-0.ts?session=x",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-000003-1.ts?session=x"
`;

describe('isLowLatencyPlaylist', () => {
  it('says yes for the worker origin media playlist', () => {
    assert.equal(isLowLatencyPlaylist(LL), true);
    assert.equal(isLowLatencyPlaylist(LL.replace(/^#EXT-X-PART-INF.*\n/m, '')), true);
  });
  it('says no for a multivariant or a plain live playlist', () => {
    const master = '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=160000,CODECS="mp4a.40.2"\nindex.m3u8?session=x\n';
    assert.equal(isLowLatencyPlaylist(master), false);
    const plain = '#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg-000001.ts\n';
    assert.equal(isLowLatencyPlaylist(plain), false);
    assert.equal(isLowLatencyPlaylist(null), false);
  });
  it('is not fooled by the tag name inside a URI', () => {
    assert.equal(isLowLatencyPlaylist('#EXTM3U\n#EXTINF:2,\nEXT-X-PART-INF.ts\n'), false);
  });
});

// The catch-up (issue 27.4): hls.js' own only acts with more than 1 s buffered ahead, so
// a player that started 0.3-0.5 s late stayed late; ours plays 1.2x until it is back
// within a few ms of the target, and never with too little buffered to do it safely.
describe('catchUpRate', () => {
  const at = (over) => ({ latency: 0.6, target: 0.6, ahead: 0.5, partTarget: 0.2, rate: 1, ...over });
  it('speeds up when well behind the target with enough buffered', () => {
    assert.equal(catchUpRate(at({ latency: 1.0, ahead: 0.8 })), CATCH_UP.rate);
  });
  it('keeps the speed until back near the target, then plays at 1', () => {
    assert.equal(catchUpRate(at({ latency: 0.68, rate: CATCH_UP.rate })), CATCH_UP.rate);
    assert.equal(catchUpRate(at({ latency: 0.62, rate: CATCH_UP.rate })), 1);
    assert.equal(catchUpRate(at({ latency: 0.68, rate: 1 })), 1);
  });
  it('never speeds up with less than 1.5 parts buffered ahead', () => {
    assert.equal(catchUpRate(at({ latency: 1.0, ahead: 0.25 })), 1);
    assert.equal(catchUpRate(at({ latency: 1.0, ahead: 0.25, rate: CATCH_UP.rate })), 1);
    assert.equal(catchUpRate(at({ latency: 2.0, ahead: 0.6, partTarget: 0.5 })), 1);
    assert.equal(catchUpRate(at({ latency: 2.0, ahead: 0.8, partTarget: 0.5 })), CATCH_UP.rate);
  });
  it('does nothing without a latency or a target', () => {
    assert.equal(catchUpRate(at({ latency: 0 })), 1);
    assert.equal(catchUpRate(at({ target: null })), 1);
  });
});
