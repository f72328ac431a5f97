// The player page takes a Twilio-style player access token (?token=JWT) as the old
// Player SDK did: grants.player holds the PlaybackGrant, checked as the SDK's grant.js.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { chooseSource, grantFromToken } from '../../../player_demo/source.js';

const PAGE = 'http://127.0.0.1:8080/';
const SID = 'VJ' + 'c'.repeat(32);
// Minted by the official twilio 9.0.2 Python library:
//   AccessToken('AC'+'a'*32, 'SK'+'b'*32, SECRET, identity='alice', ttl=3600)
//   .add_grant(PlaybackGrant(grant={playbackUrl, playerStreamerSid, requestCredentials: None}))
const TWILIO_TOKEN =
  'eyJhbGciOiJIUzI1NiIsImN0eSI6InR3aWxpby1mcGE7dj0xIiwidHlwIjoiSldUIn0.eyJqdGkiOiJTS2JiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiLTE3OTYxNjYxNDAiLCJncmFudHMiOnsicGxheWVyIjp7InBsYXliYWNrVXJsIjoiaHR0cDovLzEyNy4wLjAuMTo4MDgwL2hscy9WSmNjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjL2luZGV4Lm0zdTg_dG9rZW49YWJjIiwicGxheWVyU3RyZWFtZXJTaWQiOiJWSmNjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjIiwicmVxdWVzdENyZWRlbnRpYWxzIjpudWxsfSwiaWRlbnRpdHkiOiJhbGljZSJ9LCJpc3MiOiJTS2JiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiIiwiZXhwIjoxNzk2MTY5NzQwLCJuYmYiOjE3OTYxNjYxNDAsInN1YiI6IkFDYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWEifQ.478kDImu2iU3LXIDtcvuTEmnaW4IqXPXcLt1M7obsOE';

function jwt(payload) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc(payload)}.sig`;
}

describe('player access token', () => {
  it('plays the grant of a token the twilio library minted', () => {
    const r = chooseSource(PAGE + '?token=' + encodeURIComponent(TWILIO_TOKEN), { status: 'missing' });
    assert.deepEqual(r, { src: `http://127.0.0.1:8080/hls/${SID}/index.m3u8?token=abc`, from: 'token' });
    assert.equal(grantFromToken(TWILIO_TOKEN).playerStreamerSid, SID);
  });

  it('?src wins over ?token', () => {
    const r = chooseSource(PAGE + '?src=/hls/a/index.m3u8&token=' + TWILIO_TOKEN, { status: 'missing' });
    assert.equal(r.from, 'query');
  });

  it('refuses what grant.js refuses, with a reason', () => {
    assert.match(grantFromToken('abc').error, /not a JWT/);
    assert.match(grantFromToken('a.%%%.c').error, /base64url JSON/);
    assert.match(grantFromToken(jwt({ grants: { video: {} } })).error, /no grants\.player/);
    assert.match(grantFromToken(jwt({ grants: { player: { playerStreamerSid: SID } } })).error, /no playbackUrl/);
    assert.match(grantFromToken(jwt({ grants: { player: { playbackUrl: 'http://x/a.m3u8' } } })).error, /no playerStreamerSid/);
    const bad = { playbackUrl: 'http://x/a.m3u8', playerStreamerSid: SID, requestCredentials: 'all' };
    assert.match(grantFromToken(jwt({ grants: { player: bad } })).error, /requestCredentials/);
    const js = { playbackUrl: 'javascript:alert(1)', playerStreamerSid: SID };
    assert.match(chooseSource(PAGE + '?token=' + jwt({ grants: { player: js } }), { status: 'missing' }).error, /http\(s\)/);
  });
});
