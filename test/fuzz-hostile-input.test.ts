import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connect } from 'node:net';
import fc from 'fast-check';
import { api, startTestApp, type TestContext } from './helpers/app';
import { snapshotDatabase, type Snapshot } from './helpers/db-snapshot';
import { describeHostile, hostileFor, type HostileRequest } from './helpers/hostile';
import { pool } from './helpers/load';
import { loadRoutes, type ApiRoute } from './helpers/openapi-routes';

/** Requests per property run, sent concurrently (bounded concurrency on 2 cores). */
const BATCH = 10;
const RUNS = 1_050;

const PARSER_CATEGORIES = new Set([
  'malformed-json',
  'invalid-utf8',
  'bad-charset',
  'invalid-utf8-path',
  'too-large',
  'non-object-json',
]);
const LEAKS = [
  /\bat [^\n]+\.(ts|js):\d+/, // stack frames
  /\b(select|insert|update|delete)\b[^\n]{0,80}\b(from|into|set|where)\b/i,
  /syntax error|relation "|column "|violates .* constraint|duplicate key|node_modules|knex|pg_catalog/i,
];

interface Outcome {
  status: number | 'network' | 'timeout';
  contentType: string;
  text: string;
  headers: Headers | null;
}

async function send(baseUrl: string, r: HostileRequest): Promise<Outcome> {
  try {
    const res = await fetch(baseUrl + r.path, {
      method: r.method,
      headers: r.headers,
      body: r.body as unknown as string | undefined,
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    return { status: res.status, contentType: res.headers.get('content-type') ?? '', text, headers: res.headers };
  } catch (e) {
    const name = (e as { name?: string }).name;
    return {
      status: name === 'TimeoutError' ? 'timeout' : 'network',
      contentType: '',
      text: String((e as Error).cause ?? e),
      headers: null,
    };
  }
}

/** Why a response to a hostile request is wrong, or null when it is a proper refusal. */
function verdict(r: HostileRequest, o: Outcome): string | null {
  if (typeof o.status !== 'number') return `${o.status}: ${o.text}`;
  if (o.status >= 500) return `5xx: ${o.status} ${o.text}`;
  // The caller is authenticated before the body is read: without credentials the answer is 401, not 413.
  const credentialed = Object.keys(r.headers ?? {}).some((h) => /^(authorization|x-api-key|cookie)$/i.test(h));
  if (r.category === 'too-large' && o.status !== (credentialed || r.route.auth === 'none' ? 413 : 401))
    return `oversized body answered ${o.status}, not ${credentialed || r.route.auth === 'none' ? 413 : 401}`;
  if (o.headers?.get('x-injected') || /pwned/.test(o.headers?.get('set-cookie') ?? ''))
    return 'a header was injected into the response';
  if (o.status < 400) {
    if (r.route.auth === 'none' && r.method === 'GET') return null;
    return `hostile input accepted with ${o.status}: ${o.text.slice(0, 200)}`;
  }
  // 429: the per-IP limit on /auth refuses before authentication, which is also a refusal.
  if (r.route.auth === 'session' && !PARSER_CATEGORIES.has(r.category) && o.status !== 401 && o.status !== 429)
    return `console route without a session answered ${o.status}, not 401`;
  if (!/^application\/problem\+json/.test(o.contentType))
    return `error is ${o.contentType || 'no content type'}, not problem+json: ${o.text.slice(0, 200)}`;
  let p: any;
  try {
    p = JSON.parse(o.text);
  } catch {
    return `problem body is not JSON: ${o.text.slice(0, 200)}`;
  }
  for (const k of ['type', 'title', 'detail', 'request_id'])
    if (typeof p[k] !== 'string' || p[k] === '') return `problem lacks ${k}: ${o.text.slice(0, 200)}`;
  if (p.status !== o.status) return `problem status ${p.status} ≠ HTTP ${o.status}`;
  if (p.request_id !== o.headers?.get('x-request-id')) return 'problem request_id differs from X-Request-Id';
  for (const leak of LEAKS)
    if (leak.test(p.detail) || leak.test(JSON.stringify(p.errors ?? [])))
      return `internals leak in the problem: ${p.detail}`;
  return null;
}

describe('hostile input against every route of the OpenAPI document', () => {
  let t: TestContext;
  let routes: ApiRoute[];
  let doc: any;
  let keys: { secret: string; admin: string };
  let projectId: string;
  let before_: Snapshot;
  const stats = { sent: 0, byCategory: new Map<string, number>(), byStatus: new Map<string, number>(), routes: 0 };

  before(async () => {
    t = await startTestApp();
    const creds = await t.project('fuzz');
    keys = creds.keys;
    projectId = creds.project_id;
    const sk = keys.secret;
    assert.equal(
      (
        await api(t.url, 'POST', '/v1/threads', {
          key: sk,
          user: 'fz-user',
          body: { id: 'fz-thread', type: 'group', members: ['fz-other'] },
        })
      ).status,
      201,
    );
    assert.equal(
      (
        await api(t.url, 'POST', '/v1/threads/fz-thread/messages', {
          key: sk,
          user: 'fz-user',
          body: { id: 'fz-msg', body: { text: 'hi' } },
        })
      ).status,
      201,
    );
    assert.equal(
      (await api(t.url, 'PUT', '/v1/threads/fz-thread/messages/fz-msg/reactions/like', { key: sk, user: 'fz-user' }))
        .status,
      200,
    );
    // Warm the key caches (first use stamps last_used_at, which the snapshot ignores anyway).
    await api(t.url, 'GET', '/v1/threads', { key: sk, user: 'fz-user' });
    await api(t.url, 'GET', '/v1/admin/stats', { key: keys.admin });
    ({ doc, routes } = await loadRoutes(t.url));
    before_ = await snapshotDatabase(t.db);
  });
  after(() => t.stop());

  const ctx = () => ({
    doc,
    pathValues: {
      thread_id: 'fz-thread',
      message_id: 'fz-msg',
      user_id: 'fz-user',
      reaction: 'like',
      project_id: projectId,
      key_id: 'key_fz',
    } as Record<string, string>,
    authFor: (route: ApiRoute): Record<string, string> =>
      route.auth !== 'apiKey'
        ? {}
        : route.path.startsWith('/v1/admin')
          ? { authorization: `Bearer ${keys.admin}` }
          : { authorization: `Bearer ${keys.secret}`, 'x-user-id': 'fz-user' },
  });

  async function run(requests: HostileRequest[], concurrency: number) {
    const outcomes = await pool(requests.length, concurrency, (i) => send(t.url, requests[i]));
    const failures: string[] = [];
    requests.forEach((r, i) => {
      stats.sent++;
      stats.byCategory.set(r.category, (stats.byCategory.get(r.category) ?? 0) + 1);
      stats.byStatus.set(String(outcomes[i].status), (stats.byStatus.get(String(outcomes[i].status)) ?? 0) + 1);
      const why = verdict(r, outcomes[i]);
      if (why) failures.push(`${why}\n    ← ${describeHostile(r)}`);
    });
    return failures;
  }

  test('every route answers hostile requests with a 4xx problem+json (≥ 10,000 requests, property-based)', async () => {
    const fuzzable = routes.filter((r) => !r.streaming || r.method === 'GET');
    stats.routes = fuzzable.length;
    assert.ok(fuzzable.length >= 10, `the OpenAPI document lists the routes (${fuzzable.length})`);
    const c = ctx();
    const requestArb = fc.constantFrom(...fuzzable).chain((route) => hostileFor(route, c));
    await fc.assert(
      fc.asyncProperty(fc.array(requestArb, { minLength: BATCH, maxLength: BATCH }), async (batch) => {
        const failures = await run(batch, BATCH);
        assert.deepEqual(failures, []);
      }),
      { numRuns: RUNS, endOnFailure: true },
    );
    assert.ok(stats.sent >= 10_000, `sent ${stats.sent} requests`);
  });

  test('bodies over MAX_REQUEST_BYTES are refused with 413 problem+json on every body route', async () => {
    const big = Buffer.alloc(t.config.MAX_REQUEST_BYTES + 1024, 0x20);
    big.write('{"a":"', 0);
    big.write('"}', big.length - 2);
    const c = ctx();
    const requests: HostileRequest[] = routes
      .filter((r) => r.body && !r.streaming)
      .map((route) => ({
        route,
        category: 'too-large',
        method: route.method,
        path: route.path.replace(/\{([^}]+)\}/g, (_, n: string) => encodeURIComponent(c.pathValues[n] ?? 'x1')),
        headers: { ...c.authFor(route), 'content-type': 'application/json' },
        body: big,
      }));
    const failures = await run(requests, 2);
    assert.deepEqual(failures, []);
  });

  test('malformed HTTP framing (control characters and bare LF in headers, bad header names) gets 400 and the server keeps serving', async () => {
    const port = Number(new URL(t.url).port);
    const raw = (text: string) =>
      new Promise<string>((resolve) => {
        let out = '';
        const socket = connect(port, '127.0.0.1', () => socket.write(text));
        socket.on('data', (c: Buffer) => (out += c.toString('latin1')));
        socket.on('error', () => undefined);
        socket.on('close', () => resolve(out));
        setTimeout(() => socket.destroy(), 5_000).unref();
      });
    const auth = `Authorization: Bearer ${keys.secret}\r\n`;
    const cases = fc.sample(
      fc.oneof(
        fc
          .constantFrom('\x00', '\x01', '\x1b', '\x7f', '\r', '\n')
          .map(
            (c) => `POST /v1/threads HTTP/1.1\r\nHost: x\r\n${auth}X-User-ID: a${c}b\r\nContent-Length: 2\r\n\r\n{}`,
          ),
        fc
          .constantFrom('Bad Header', '(x)', 'X-\x00', 'X\ty')
          .map((h) => `GET /v1/threads HTTP/1.1\r\nHost: x\r\n${auth}${h}: 1\r\n\r\n`),
        fc.constant(`GET /v1/threads HTTP/1.1\nHost: x\n${auth.replace('\r', '')}\n`),
        fc.constant(
          `POST /v1/threads HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
        ),
        fc.constant(`GET /v1/threads\x00 HTTP/1.1\r\nHost: x\r\n\r\n`),
      ),
      { numRuns: 60 },
    );
    for (const c of cases) {
      const out = await raw(c);
      stats.sent++;
      stats.byCategory.set('http-framing', (stats.byCategory.get('http-framing') ?? 0) + 1);
      const status = /^HTTP\/1\.1 (\d{3})/.exec(out)?.[1] ?? 'none';
      stats.byStatus.set(status, (stats.byStatus.get(status) ?? 0) + 1);
      assert.equal(status, '400', `${JSON.stringify(c)} → ${JSON.stringify(out.slice(0, 200))}`);
    }
    assert.equal((await api(t.url, 'GET', '/v1/threads', { key: keys.secret, user: 'fz-user' })).status, 200);
  });

  test('nothing a refused request sent was written (row counts and checksums of every table unchanged)', async () => {
    const after_ = await snapshotDatabase(t.db);
    assert.deepEqual(after_, before_);
    const tables = Object.keys(after_).length;
    const rows = Object.values(after_).reduce((n, x) => n + x.rows, 0);
    const cats = [...stats.byCategory]
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    const statuses = [...stats.byStatus]
      .sort()
      .map(([k, v]) => `${k}×${v}`)
      .join(' ');
    process.stdout.write(
      `# fuzz hostile-input: ${stats.sent} hostile requests over ${stats.routes} routes, 0 5xx, every non-public request refused; statuses ${statuses}; ` +
        `categories: ${cats}; snapshot of ${tables} tables (${rows} rows) unchanged\n`,
    );
  });
});
