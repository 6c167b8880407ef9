import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startTestApp, type TestContext } from './helpers/app';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';

// Headers that differ between any two responses, whichever path served them.
const VARYING = new Set(['date', 'x-request-id', 'keep-alive', 'connection']);

interface Seen {
  status: number;
  headers: Record<string, string>;
  body: string;
}

async function call(base: string, method: string, path: string, headers: Record<string, string>, body?: string) {
  const res = await fetch(base + path, { method, headers, body });
  const out: Seen = { status: res.status, headers: {}, body: await res.text() };
  res.headers.forEach((v, k) => {
    if (!VARYING.has(k)) out.headers[k] = v;
  });
  // Each request spends one unit of the same bucket.
  if (out.headers.ratelimit) out.headers.ratelimit = out.headers.ratelimit.replace(/r=\d+/, 'r=…');
  // Problem bodies carry the request id (and so their ETag differs too).
  if (out.body.includes('"request_id":')) {
    out.body = out.body.replace(/"request_id":"[^"]*"/, '"request_id":"…"');
    delete out.headers.etag;
  }
  return out;
}

describe('declared /v1 routes served in front of express answer exactly as through express', () => {
  let t: TestContext;
  let creds: ProjectCredentials;
  // The same app, entered with a final callback: app.handle then always takes express's router.
  let viaExpress: Server;
  let expressUrl: string;
  let routerPasses = 0;
  const sign = (user: string) => createHmac('sha256', creds.signing_secret).update(user).digest('hex');

  before(async () => {
    t = await startTestApp({ RATE_LIMIT_ENABLED: 'true' });
    creds = await t.project();
    const app = t.app.app as unknown as {
      handle(req: unknown, res: unknown, cb?: () => void): void;
      router: { handle(...args: unknown[]): void };
    };
    const routerHandle = app.router.handle.bind(app.router);
    app.router.handle = (...args: unknown[]) => {
      routerPasses++;
      routerHandle(...args);
    };
    viaExpress = createServer((req, res) => app.handle(req, res, () => res.end()));
    viaExpress.listen(0, '127.0.0.1');
    await new Promise<void>((resolve) => viaExpress.once('listening', () => resolve()));
    expressUrl = `http://127.0.0.1:${(viaExpress.address() as AddressInfo).port}`;
    const res = await fetch(`${t.url}/v1/threads/same/messages/batch`, {
      method: 'POST',
      headers: { authorization: `Bearer ${creds.keys.secret}`, 'content-type': 'application/json', 'x-user-id': 'a' },
      body: JSON.stringify({
        messages: [
          { body: { text: 'one' }, author: 'a' },
          { body: { text: 'two' }, author: 'a' },
        ],
      }),
    });
    assert.equal(res.status, 201, await res.text());
  });

  after(async () => {
    viaExpress.closeAllConnections();
    await new Promise<void>((resolve) => viaExpress.close(() => resolve()));
    await t.stop();
  });

  /** The same request on both paths: same status, headers and body; and whether express's router served the direct one. */
  async function same(method: string, path: string, headers: Record<string, string> = {}, body?: string) {
    const before = routerPasses;
    const direct = await call(t.url, method, path, headers, body);
    const routed = routerPasses - before;
    const express = await call(expressUrl, method, path, headers, body);
    assert.deepEqual(direct, express, `${method} ${path}`);
    return { direct, routed };
  }

  const sk = () => ({ authorization: `Bearer ${creds.keys.secret}` });

  test('a cached page read, with and without Origin and X-Request-Id: same headers, no router walk', async () => {
    await same('GET', '/v1/threads/same/messages?limit=50', sk());
    const { direct, routed } = await same('GET', '/v1/threads/same/messages?limit=50', {
      ...sk(),
      origin: 'https://app.example',
    });
    assert.equal(routed, 0, 'served without express router');
    assert.equal(direct.status, 200);
    assert.equal(direct.headers['access-control-allow-origin'], 'https://app.example');
    assert.equal(direct.headers.vary, 'Origin');
    assert.ok(direct.headers['access-control-expose-headers']?.includes('ETag'));
    assert.ok(direct.headers['content-security-policy']);
    assert.ok(direct.headers.etag);
    assert.ok(direct.headers.ratelimit, 'rate limit headers when the limiter is on');
    const echoed = await fetch(`${t.url}/v1/threads/same/messages`, { headers: { ...sk(), 'x-request-id': 'mine-1' } });
    assert.equal(echoed.headers.get('x-request-id'), 'mine-1');
  });

  test('If-None-Match with the current ETag answers 304 without a body; HEAD answers the headers of GET', async () => {
    const first = await fetch(`${t.url}/v1/threads/same/messages?limit=50`, { headers: sk() });
    const etag = first.headers.get('etag')!;
    // fetch adds Cache-Control: no-cache to a conditional request (which is never fresh) unless one is given.
    const { direct } = await same('GET', '/v1/threads/same/messages?limit=50', {
      ...sk(),
      'if-none-match': etag,
      'cache-control': 'max-age=0',
    });
    assert.equal(direct.status, 304);
    assert.equal(direct.body, '');
    const head = await same('HEAD', '/v1/threads/same/messages?limit=50', sk());
    assert.equal(head.routed, 0);
    assert.equal(head.direct.status, 200);
    assert.equal(head.direct.body, '');
    assert.equal(head.direct.headers['content-length'], first.headers.get('content-length'));
    assert.equal(head.direct.headers.etag, etag);
  });

  test("express's matching: any case, a trailing slash, percent-decoded params; a malformed escape is a 400", async () => {
    const upper = await same('GET', '/V1/Threads/same/MESSAGES/?limit=50', sk());
    assert.equal(upper.direct.status, 200);
    const encoded = await same('GET', '/v1/threads/s%61me/messages', sk());
    assert.equal(encoded.direct.status, 200);
    assert.equal(JSON.parse(encoded.direct.body).data.length, 2);
    const bad = await same('GET', '/v1/threads/%E0%A4%A/messages', sk());
    assert.equal(bad.direct.status, 400);
    assert.equal(bad.direct.headers['content-type'], 'application/problem+json; charset=utf-8');
  });

  test('errors go through the same error middleware: no key, a bad signature, an unknown thread, a bad query', async () => {
    assert.equal((await same('GET', '/v1/threads/same/messages')).direct.status, 401);
    const pk = { authorization: `Bearer ${creds.keys.publishable}`, 'x-user-id': 'a', 'x-user-signature': sign('b') };
    assert.equal((await same('GET', '/v1/threads/same/messages', pk)).direct.status, 401);
    assert.equal((await same('GET', '/v1/threads/nope/messages', sk())).direct.status, 404);
    assert.equal((await same('GET', '/v1/threads/same/messages?limit=abc', sk())).direct.status, 400);
  });

  test('writes, preflights, unmatched paths and methods no route declares answer as before', async () => {
    const append = await fetch(`${t.url}/v1/threads/same/messages`, {
      method: 'POST',
      headers: { ...sk(), 'content-type': 'application/json' },
      body: JSON.stringify({ body: { text: 'three' }, author: 'a' }),
    });
    assert.equal(append.status, 201);
    assert.ok(append.headers.get('x-request-id'));
    assert.equal(append.headers.get('vary'), 'Origin');
    const preflight = await same('OPTIONS', '/v1/threads/same/messages', {
      origin: 'https://app.example',
      'access-control-request-method': 'POST',
    });
    assert.equal(preflight.direct.status, 204);
    assert.equal((await same('GET', '/v1/nothing-here', sk())).direct.status, 404);
    assert.equal((await same('PATCH', '/v1/threads/same/messages', sk())).direct.status, 404);
    assert.equal((await same('GET', '/healthz')).direct.status, 200);
  });
});
