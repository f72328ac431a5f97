// Which stream the page plays. Pure (no fetch, no DOM): tested by node --test.
//
// 1. `?src=<url>` in the page address wins (absolute, or relative to the page);
//    or `?token=<JWT>`: a Twilio-style player access token (what the old Player SDK
//    took), whose `grants.player` holds a PlaybackGrant; it plays the grant's
//    `playbackUrl`. Like the SDK, the page decodes the token without verifying it:
//    the server checks the playback URL's own signed token.
// 2. else `src` of config.json, which the worker's HTTP endpoint serves beside
//    the page: {"src": "/hls/<name>/index.m3u8", "metadataWs": "/ws/metadata"}.
// 3. else nothing to play: the page says how to give it a stream.

const ALLOWED_SCHEMES = new Set(['http:', 'https:']);

export const NO_SOURCE_MESSAGE =
  'No stream to play: open this page with ?src=<URL of an HLS playlist> ' +
  '(for example ?src=/hls/main/index.m3u8), or serve a config.json beside it.';

function resolve(raw, pageUrl, where) {
  let url;
  try {
    url = new URL(raw, pageUrl);
  } catch {
    return { error: `${where} is not a URL: ${JSON.stringify(raw)}` };
  }
  if (!ALLOWED_SCHEMES.has(url.protocol)) {
    return { error: `${where} must be an http(s) URL, not ${url.protocol}` };
  }
  return { src: url.href };
}

const REQUEST_CREDENTIALS = new Set(['omit', 'same-origin', 'include']);

function base64UrlJson(part) {
  const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
  const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
  const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

/**
 * The PlaybackGrant in a player access token (a JWT with `grants.player`), checked
 * as the Player SDK's grant.js does.  `label` names the token in the messages.
 * @returns {{playbackUrl: string, playerStreamerSid: string, requestCredentials: any} | {error: string}}
 */
export function grantFromToken(token, label = '?token') {
  const parts = String(token).trim().split('.');
  if (parts.length !== 3) return { error: `${label} is not a JWT (three dot-separated parts)` };
  let payload;
  try {
    payload = base64UrlJson(parts[1]);
  } catch {
    return { error: `${label}: the JWT payload is not base64url JSON` };
  }
  const grant = payload && payload.grants && payload.grants.player;
  if (!grant || typeof grant !== 'object') {
    return { error: `${label} has no grants.player (is it a player access token?)` };
  }
  if (typeof grant.playbackUrl !== 'string' || !grant.playbackUrl) {
    return { error: `${label}: grants.player has no playbackUrl` };
  }
  if (typeof grant.playerStreamerSid !== 'string' || !grant.playerStreamerSid) {
    return { error: `${label}: grants.player has no playerStreamerSid` };
  }
  const rc = grant.requestCredentials;
  if (rc !== undefined && rc !== null && !REQUEST_CREDENTIALS.has(rc)) {
    return { error: `${label}: grants.player.requestCredentials ${JSON.stringify(rc)} is not omit, same-origin or include` };
  }
  return grant;
}

/**
 * @param {string} pageUrl   location.href
 * @param {{status: 'ok', data: any} | {status: 'missing'} | {status: 'invalid', reason: string}} config
 * @returns {{src: string, from: 'query'|'token'|'config'} | {error: string}}
 */
export function chooseSource(pageUrl, config) {
  const params = new URL(pageUrl).searchParams;
  const query = params.get('src');
  if (query !== null && query.trim() !== '') {
    const r = resolve(query.trim(), pageUrl, '?src');
    return r.error ? r : { src: r.src, from: 'query' };
  }
  const token = params.get('token');
  if (token !== null && token.trim() !== '') {
    const grant = grantFromToken(token);
    if (grant.error) return grant;
    const r = resolve(grant.playbackUrl, pageUrl, 'grants.player.playbackUrl');
    return r.error ? r : { src: r.src, from: 'token' };
  }
  if (config.status === 'invalid') {
    return { error: `config.json: ${config.reason}. ${NO_SOURCE_MESSAGE}` };
  }
  if (config.status === 'ok') {
    const src = config.data && config.data.src;
    if (typeof src !== 'string' || src.trim() === '') {
      return { error: `config.json has no "src" string. ${NO_SOURCE_MESSAGE}` };
    }
    // Relative to the page, which config.json sits beside.
    const r = resolve(src.trim(), pageUrl, 'config.json "src"');
    return r.error ? r : { src: r.src, from: 'config' };
  }
  return { error: NO_SOURCE_MESSAGE };
}
