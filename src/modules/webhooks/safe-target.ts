import { lookup } from 'node:dns/promises';
import http from 'node:http';
import https from 'node:https';
import ipaddr from 'ipaddr.js';
import { unprocessable } from '../../lib/errors';

export interface TargetPolicy {
  /** http:// URLs are accepted (everywhere but production, or when the operator allows it). */
  allowHttp: boolean;
  /** Loopback, private, link-local … addresses are accepted (operator flag; tests' loopback receivers). */
  allowPrivate: boolean;
}

export class TargetRefused extends Error {}

/**
 * Only globally routable unicast addresses are targets: loopback, RFC 1918, link-local (and
 * with it 169.254.169.254, the cloud metadata address), unique-local, CGNAT, multicast,
 * reserved and documentation ranges are all refused. IPv4-mapped IPv6 is judged as IPv4.
 */
export function isPublicAddress(address: string): boolean {
  if (!ipaddr.isValid(address)) return false;
  let parsed = ipaddr.parse(address);
  if (parsed.kind() === 'ipv6' && (parsed as ipaddr.IPv6).isIPv4MappedAddress())
    parsed = (parsed as ipaddr.IPv6).toIPv4Address();
  return parsed.range() === 'unicast';
}

const bare = (host: string) => (host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host);

/** The syntactic checks: scheme, no credentials, no fragment, a host. Throws a 422 that says what to fix. */
export function checkEndpointUrl(raw: string, policy: TargetPolicy): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw unprocessable('url must be an absolute URL such as https://api.example.com/webhooks.');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw unprocessable(`url must use https:// (got ${url.protocol.replace(/:$/, '')}).`);
  if (url.protocol === 'http:' && !policy.allowHttp)
    throw unprocessable('url must use https:// (this server does not allow plain http webhook targets).');
  if (url.username || url.password) throw unprocessable('url must not contain credentials (user:password@).');
  if (url.hash) throw unprocessable('url must not contain a fragment (#…).');
  if (!url.hostname) throw unprocessable('url must name a host.');
  return url;
}

/**
 * Resolves the URL's host and checks every address it resolves to. The caller connects to the
 * returned address (never resolving again), so a name cannot pass this check and then point
 * somewhere else when connecting (DNS rebinding).
 */
export async function resolveTarget(url: URL, policy: TargetPolicy): Promise<{ address: string; family: 4 | 6 }> {
  const host = bare(url.hostname);
  let addresses: Array<{ address: string; family: number }>;
  if (ipaddr.isValid(host)) {
    addresses = [{ address: host, family: ipaddr.parse(host).kind() === 'ipv6' ? 6 : 4 }];
  } else {
    try {
      addresses = await lookup(host, { all: true, verbatim: true });
    } catch {
      throw new TargetRefused(`${host} does not resolve`);
    }
  }
  if (addresses.length === 0) throw new TargetRefused(`${host} does not resolve`);
  if (!policy.allowPrivate) {
    const bad = addresses.find((a) => !isPublicAddress(a.address));
    if (bad) throw new TargetRefused(`${host} resolves to ${bad.address}, a loopback, private or reserved address`);
  }
  return { address: addresses[0].address, family: addresses[0].family === 6 ? 6 : 4 };
}

/** At registration: the URL's syntax and where it resolves now (422 either way). */
export async function assertSafeEndpoint(raw: string, policy: TargetPolicy): Promise<URL> {
  const url = checkEndpointUrl(raw, policy);
  try {
    await resolveTarget(url, policy);
  } catch (e) {
    if (e instanceof TargetRefused)
      throw unprocessable(`url is not an allowed webhook target: ${e.message}. Use a public address.`);
    throw e;
  }
  return url;
}

export interface PostResult {
  status: number;
  retryAfter: string | undefined;
  body: string;
}

const agents = {
  http: new http.Agent({ keepAlive: true, maxSockets: 64 }),
  https: new https.Agent({ keepAlive: true, maxSockets: 64 }),
};

/**
 * POSTs to `address` (already checked) with the URL's Host and TLS server name. No redirect is
 * followed (a 3xx is just a failed attempt); at most `maxResponseBytes` of the answer are read;
 * the whole exchange is bounded by `timeoutMs`.
 */
export function postTo(
  url: URL,
  address: string,
  opts: {
    headers: Record<string, string>;
    body: string;
    timeoutMs: number;
    maxResponseBytes: number;
    signal?: AbortSignal;
  },
): Promise<PostResult> {
  const secure = url.protocol === 'https:';
  const host = bare(url.hostname);
  return new Promise<PostResult>((resolve, reject) => {
    const req = (secure ? https : http).request({
      method: 'POST',
      hostname: address,
      port: url.port || (secure ? 443 : 80),
      path: url.pathname + url.search,
      agent: secure ? agents.https : agents.http,
      servername: secure && !ipaddr.isValid(host) ? host : undefined,
      headers: {
        ...opts.headers,
        host: url.host,
        'content-type': 'application/json',
        'content-length': String(Buffer.byteLength(opts.body)),
        'user-agent': 'ProgressDB-Webhooks/1.0',
      },
      signal: opts.signal,
    });
    const timer = setTimeout(() => req.destroy(new Error(`timed out after ${opts.timeoutMs} ms`)), opts.timeoutMs);
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const finish = () => {
        clearTimeout(timer);
        const retryAfter = res.headers['retry-after'];
        resolve({
          status: res.statusCode ?? 0,
          retryAfter: Array.isArray(retryAfter) ? retryAfter[0] : retryAfter,
          body: Buffer.concat(chunks).toString('utf8'),
        });
      };
      res.on('data', (chunk: Buffer) => {
        if (size >= opts.maxResponseBytes) return;
        chunks.push(chunk.subarray(0, opts.maxResponseBytes - size));
        size += chunk.length;
        // Enough read: stop the transfer rather than drain an endless body.
        if (size >= opts.maxResponseBytes) {
          res.destroy();
          finish();
        }
      });
      res.on('end', finish);
      res.on('error', () => finish());
    });
    req.end(opts.body);
  });
}
