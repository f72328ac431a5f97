// Which stream the page plays. Pure (no fetch, no DOM): tested by node --test.
//
// 1. `?src=<url>` in the page address wins (absolute, or relative to the page).
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

/**
 * @param {string} pageUrl   location.href
 * @param {{status: 'ok', data: any} | {status: 'missing'} | {status: 'invalid', reason: string}} config
 * @returns {{src: string, from: 'query'|'config'} | {error: string}}
 */
export function chooseSource(pageUrl, config) {
  const query = new URL(pageUrl).searchParams.get('src');
  if (query !== null && query.trim() !== '') {
    const r = resolve(query.trim(), pageUrl, '?src');
    return r.error ? r : { src: r.src, from: 'query' };
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
