// The player learns that a stream is LL-HLS from its playlist (issue 24.2), never from a
// side file: the text of a media playlist the worker's origin writes says so, a
// multivariant playlist (the PlaybackGrant's first answer) or a plain live one does not.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { isLowLatencyPlaylist } from '../../../player_demo/hls-config.js';

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
