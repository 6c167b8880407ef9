import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type TestContext } from './helpers/app';

/** The core data-plane routes the spec names; each must be in the OpenAPI document. */
const CORE_ROUTES = [
  'POST /v1/_sign',
  'POST /v1/threads',
  'GET /v1/threads',
  'GET /v1/threads/{thread_id}',
  'PATCH /v1/threads/{thread_id}',
  'DELETE /v1/threads/{thread_id}',
  'GET /v1/threads/{thread_id}/members',
  'PUT /v1/threads/{thread_id}/members/{user_id}',
  'DELETE /v1/threads/{thread_id}/members/{user_id}',
  'POST /v1/threads/{thread_id}/messages',
  'POST /v1/threads/{thread_id}/messages/batch',
  'GET /v1/threads/{thread_id}/messages',
  'GET /v1/threads/{thread_id}/messages/{message_id}',
  'PATCH /v1/threads/{thread_id}/messages/{message_id}',
  'DELETE /v1/threads/{thread_id}/messages/{message_id}',
  'GET /v1/threads/{thread_id}/messages/{message_id}/versions',
  'PUT /v1/threads/{thread_id}/messages/{message_id}/reactions/{reaction}',
  'DELETE /v1/threads/{thread_id}/messages/{message_id}/reactions/{reaction}',
  'GET /v1/threads/{thread_id}/events',
];

/** Every route Express knows with an absolute /v1 path, as "METHOD /openapi/{template}". */
function expressV1Routes(app: any): string[] {
  const out: string[] = [];
  const walk = (stack: any[]) => {
    for (const layer of stack ?? []) {
      if (layer.route && typeof layer.route.path === 'string') {
        for (const m of Object.keys(layer.route.methods ?? {})) {
          if (m !== '_all' && layer.route.path.startsWith('/v1/'))
            out.push(`${m.toUpperCase()} ${layer.route.path.replace(/:([A-Za-z_]+)/g, '{$1}')}`);
        }
      } else if (layer.handle?.stack) walk(layer.handle.stack);
    }
  };
  walk(app.router?.stack ?? app._router?.stack);
  return out;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('system routes and response plumbing', () => {
  let t: TestContext;
  let p: ProjectCredentials;
  before(async () => {
    t = await startTestApp({ MAX_REQUEST_BYTES: '2048' });
    p = await t.project();
  });
  after(() => t.stop());

  test('/healthz answers 200 and /readyz reports database, migrations and LISTEN ready', async () => {
    const health = await api(t.url, 'GET', '/healthz');
    assert.equal(health.status, 200);
    assert.deepEqual(health.body, { status: 'ok' });
    const ready = await api(t.url, 'GET', '/readyz');
    assert.equal(ready.status, 200, ready.text);
    assert.equal(ready.body.status, 'ready');
    for (const check of ['database', 'migrations', 'listen']) assert.equal(ready.body.checks[check], true, check);
  });

  test('every response carries X-Request-Id: generated when absent, echoed when given, on errors and unknown routes too', async () => {
    const sk = p.keys.secret;
    const requests: Array<[string, string, Parameters<typeof api>[3], number]> = [
      ['GET', '/healthz', {}, 200],
      ['GET', '/v1/threads', { key: sk }, 200],
      ['POST', '/v1/threads', { key: sk, body: { type: 'group' } }, 201],
      ['GET', '/v1/threads', {}, 401],
      ['GET', '/v1/threads/nope', { key: sk }, 404],
      ['GET', '/v1/no-such-route', {}, 404],
      ['GET', '/definitely/not/here', {}, 404],
      ['POST', '/v1/threads', { key: sk, raw: '{oops' }, 400],
      ['POST', '/v1/threads', { key: sk, raw: JSON.stringify({ type: 'group', title: 'x'.repeat(3000) }) }, 413],
      ['POST', '/v1/threads', { key: sk, raw: '<x/>', contentType: 'application/xml' }, 415],
      ['GET', '/v1/threads', { key: p.keys.admin }, 403],
    ];
    for (const [method, path, opts, status] of requests) {
      const generated = await api(t.url, method, path, opts);
      assert.equal(generated.status, status, `${method} ${path}: ${generated.text}`);
      const id = generated.headers.get('x-request-id');
      assert.match(id ?? '', UUID, `${method} ${path} generates an id`);
      if (status >= 400) {
        assert.equal(
          generated.headers.get('content-type'),
          'application/problem+json; charset=utf-8',
          `${method} ${path}`,
        );
        assert.equal(generated.body.request_id, id, `${method} ${path}: the problem names the request`);
      }
      const given = `req-${status}-${Math.random().toString(36).slice(2)}`;
      const echoed = await api(t.url, method, path, {
        ...opts,
        headers: { ...(opts?.headers ?? {}), 'x-request-id': given },
      });
      assert.equal(echoed.headers.get('x-request-id'), given, `${method} ${path} echoes the id`);
      if (status >= 400) assert.equal(echoed.body.request_id, given);
    }
  });

  test('an unusable X-Request-Id (too long, spaces, control characters) is replaced, not echoed', async () => {
    for (const bad of ['x'.repeat(200), 'has spaces', 'semi;colon"quote']) {
      const r = await api(t.url, 'GET', '/healthz', { headers: { 'x-request-id': bad } });
      assert.match(r.headers.get('x-request-id') ?? '', UUID, bad);
    }
  });

  test('GET /openapi.json is a valid OpenAPI 3.1 document listing every route', async () => {
    const r = await api(t.url, 'GET', '/openapi.json');
    assert.equal(r.status, 200);
    const doc = r.body;
    assert.match(doc.openapi, /^3\.1\./);
    const validator = new Validator();
    const result = await validator.validate(doc);
    assert.equal(validator.version, '3.1');
    assert.ok(result.valid, JSON.stringify(result.errors, null, 2)?.slice(0, 4000));

    const documented = new Set<string>();
    for (const [path, ops] of Object.entries<any>(doc.paths))
      for (const m of Object.keys(ops)) documented.add(`${m.toUpperCase()} ${path}`);
    for (const route of CORE_ROUTES) assert.ok(documented.has(route), `${route} is missing from /openapi.json`);
    const served = expressV1Routes(t.app.app);
    assert.ok(served.length >= CORE_ROUTES.length, `found ${served.length} Express routes`);
    const undocumented = served.filter((route) => !documented.has(route));
    assert.deepEqual(undocumented, [], 'every /v1 route Express serves is in the document');

    // Each operation says what it answers, and errors are problem+json.
    for (const [path, ops] of Object.entries<any>(doc.paths)) {
      for (const [method, op] of Object.entries<any>(ops)) {
        assert.ok(op.summary, `${method} ${path} has a summary`);
        assert.ok(
          op.responses?.default?.content?.['application/problem+json'],
          `${method} ${path} documents its errors`,
        );
        const params = (path.match(/\{([^}]+)\}/g) ?? []).map((x) => x.slice(1, -1));
        for (const name of params) {
          assert.ok(
            (op.parameters ?? []).some((pp: any) => pp.in === 'path' && pp.name === name && pp.required),
            `${method} ${path} declares {${name}}`,
          );
        }
      }
    }
    const create = doc.paths['/v1/threads'].post;
    assert.ok(create.requestBody.content['application/json'].schema, 'request bodies come from the zod schemas');
    const append = doc.paths['/v1/threads/{thread_id}/messages'].post;
    assert.ok(append.requestBody.content['text/plain'], 'text/plain appends are documented');
  });

  test('GET /docs serves HTML whose scripts and styles are all local and load', async () => {
    const r = await fetch(`${t.url}/docs`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/html/);
    const html = await r.text();
    const refs = [...html.matchAll(/<(script|link)\b[^>]*?(?:src|href)="([^"]+)"/g)].map((m) => m[2]);
    assert.ok(refs.length >= 2, html);
    for (const ref of refs) {
      assert.ok(!/^(https?:)?\/\//i.test(ref), `${ref} is loaded from another host`);
      const asset = await fetch(new URL(ref, `${t.url}/docs`));
      assert.equal(asset.status, 200, ref);
      assert.ok((await asset.arrayBuffer()).byteLength > 0, ref);
    }
    assert.ok(
      !/https?:\/\/(?!127\.0\.0\.1)[^"'\s]*\.(js|css)/i.test(html),
      'no remote script or stylesheet URL anywhere in the page',
    );
    for (const m of html.matchAll(/<script\b([^>]*)>/g))
      assert.match(m[1], /\bsrc=/, 'no inline scripts (the CSP forbids them)');
    const csp = r.headers.get('content-security-policy') ?? '';
    assert.ok(!/script-src[^;]*https?:/.test(csp), `CSP allows no remote scripts: ${csp}`);
  });
});
