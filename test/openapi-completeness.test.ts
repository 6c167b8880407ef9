import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type ApiResponse, type TestContext } from './helpers/app';

/**
 * What an SDK generator needs from the OpenAPI document beyond its validity (test/system.test.ts):
 * operation ids, every error status with its problem+json body, the headers the service
 * really sends and the request headers it really reads.
 */
describe('OpenAPI completeness', () => {
  let t: TestContext;
  let p: ProjectCredentials;
  let doc: any;
  before(async () => {
    t = await startTestApp({ RATE_LIMIT_READ: '3', RATE_LIMIT_WINDOW_SECONDS: '60' });
    p = await t.project();
    doc = (await api(t.url, 'GET', '/openapi.json')).body;
  });
  after(() => t.stop());

  const operations = () =>
    Object.entries<any>(doc.paths).flatMap(([path, ops]) =>
      Object.entries<any>(ops).map(([method, op]) => ({ path, method, op, name: `${method.toUpperCase()} ${path}` })),
    );
  const headerParams = (op: any) =>
    new Set((op.parameters ?? []).filter((x: any) => x.in === 'header').map((x: any) => x.name));
  const resolveHeader = (h: any) => (h.$ref ? doc.components.headers[h.$ref.split('/').pop()] : h);

  test('every operation has a unique camelCase operationId', () => {
    const seen = new Map<string, string>();
    for (const { name, op } of operations()) {
      assert.match(op.operationId ?? '', /^[a-z][A-Za-z]+$/, `${name} has an operationId`);
      assert.equal(seen.get(op.operationId), undefined, `${op.operationId} is used by ${seen.get(op.operationId)} too`);
      seen.set(op.operationId, name);
    }
    assert.ok(seen.size >= 50, `${seen.size} operations`);
  });

  test('every operation documents its error statuses as problem+json with X-Request-Id', () => {
    for (const { name, path, op } of operations()) {
      const statuses = Object.keys(op.responses);
      const expected = ['400', '429', '503'];
      if ((op.security ?? []).length > 0) expected.push('401', '403');
      if (path.includes('{')) expected.push('404');
      if (op.requestBody) expected.push('413', '415');
      for (const s of expected) assert.ok(statuses.includes(s), `${name} documents ${s}`);
      for (const [status, r] of Object.entries<any>(op.responses)) {
        assert.ok(r.headers?.['X-Request-Id'], `${name} ${status} documents X-Request-Id`);
        if (status === 'default' || Number(status) >= 400) {
          assert.equal(
            r.content?.['application/problem+json']?.schema?.$ref,
            '#/components/schemas/Problem',
            `${name} ${status} is problem+json`,
          );
        }
        if (status === '429' || status === '503') assert.ok(r.headers['Retry-After'], `${name} ${status} Retry-After`);
        if (status !== 'default') assert.ok(r.headers.RateLimit && r.headers['RateLimit-Policy'], `${name} ${status}`);
      }
      assert.ok(headerParams(op).has('X-Request-Id'), `${name} takes X-Request-Id`);
    }
    for (const h of Object.values<any>(doc.components.headers)) assert.ok(h.description && h.schema);
  });

  test('request headers: X-User-ID and X-User-Signature on API-key routes, Idempotency-Key where it is honoured', () => {
    for (const { name, op } of operations()) {
      const apiKey = (op.security ?? []).some((s: any) => 'apiKey' in s);
      const headers = headerParams(op);
      if (apiKey && !name.includes('/v1/admin/'))
        assert.ok(headers.has('X-User-ID') && headers.has('X-User-Signature'), name);
      if (!apiKey) assert.ok(!headers.has('X-User-ID'), `${name} does not read X-User-ID`);
    }
    const idempotent = operations()
      .filter(({ op }) => headerParams(op).has('Idempotency-Key'))
      .map(({ op }) => op.operationId)
      .sort();
    assert.deepEqual(idempotent, ['appendMessage', 'appendMessages', 'createThread']);
    assert.ok(headerParams(doc.paths['/v1/threads/{thread_id}/tail'].get).has('Last-Event-ID'));
  });

  /** The response's status is documented for its operation, with every header it carried that the document names. */
  function assertDocumented(method: string, template: string, r: ApiResponse) {
    const op = doc.paths[template][method.toLowerCase()];
    const documented = op.responses[String(r.status)];
    assert.ok(documented, `${method} ${template} answered ${r.status}, which it does not document: ${r.text}`);
    for (const name of ['X-Request-Id', 'RateLimit', 'RateLimit-Policy', 'Retry-After', 'Idempotent-Replayed']) {
      if (r.headers.get(name) !== null)
        assert.ok(documented.headers?.[name], `${method} ${template} ${r.status} sends ${name} undocumented`);
    }
    return documented;
  }

  test('what the service sends matches the document: statuses, rate-limit headers, Retry-After, Idempotent-Replayed', async () => {
    const sk = p.keys.secret;
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'oa', type: 'group' } });
    const append = (extra: Record<string, unknown>, headers: Record<string, string> = {}) =>
      api(t.url, 'POST', '/v1/threads/oa/messages', {
        key: sk,
        user: 'alice',
        headers,
        body: { body: { text: 'hi' }, ...extra },
      });
    const first = await append({}, { 'idempotency-key': 'k1' });
    assert.equal(first.status, 201);
    assert.ok(first.headers.get('ratelimit'), 'RateLimit is sent');
    assert.ok(first.headers.get('ratelimit-policy'), 'RateLimit-Policy is sent');
    assertDocumented('POST', '/v1/threads/{thread_id}/messages', first);
    const replay = await append({}, { 'idempotency-key': 'k1' });
    assert.equal(replay.headers.get('idempotent-replayed'), 'true');
    assertDocumented('POST', '/v1/threads/{thread_id}/messages', replay);
    const reused = await append({ body: { text: 'other' } }, { 'idempotency-key': 'k1' });
    assertDocumented('POST', '/v1/threads/{thread_id}/messages', reused);
    assert.equal(reused.status, 422);
    const badParent = await append({ reply_to: 'missing' });
    assert.equal(badParent.status, 422);
    assertDocumented('POST', '/v1/threads/{thread_id}/messages', badParent);
    assertDocumented('POST', '/v1/threads/{thread_id}/messages', await append({ body: undefined }));
    assertDocumented('GET', '/v1/threads/{thread_id}', await api(t.url, 'GET', '/v1/threads/nope', { key: sk }));
    assertDocumented('GET', '/v1/threads', await api(t.url, 'GET', '/v1/threads'));
    assertDocumented('GET', '/v1/threads', await api(t.url, 'GET', '/v1/threads', { key: p.keys.admin }));
    // The read limit is 3 a minute: the fourth read is a 429 with Retry-After.
    let limited: ApiResponse | undefined;
    for (let i = 0; i < 5 && !limited; i++) {
      const r = await api(t.url, 'GET', '/v1/threads/oa/messages', { key: sk, user: 'alice' });
      assertDocumented('GET', '/v1/threads/{thread_id}/messages', r);
      if (r.status === 429) limited = r;
    }
    assert.ok(limited, 'the read limit was reached');
    assert.match(limited.headers.get('retry-after') ?? '', /^\d+$/);
    assert.match(limited.headers.get('content-type') ?? '', /^application\/problem\+json/);
    const retryAfter = resolveHeader(
      doc.paths['/v1/threads/{thread_id}/messages'].get.responses['429'].headers['Retry-After'],
    );
    assert.equal(retryAfter.schema.type, 'integer');
  });
});
