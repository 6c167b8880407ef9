import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { generateApiKey } from '../src/modules/keys/api-key';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type TestContext } from './helpers/app';

const sign = (secret: string, user: string) => createHmac('sha256', secret).update(user).digest('hex');

/** Polls until `probe` returns true, for at most `ms` (revocation is bounded at 5 s by the spec). */
async function eventually(probe: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('API keys and signed users', () => {
  let t: TestContext;
  let creds: ProjectCredentials;

  before(async () => {
    t = await startTestApp();
    creds = await t.project();
    await api(t.url, 'POST', '/v1/threads', {
      key: creds.keys.secret,
      body: { id: 'open', type: 'channel', policies: { read: 'public', write: 'public' } },
    });
  });
  after(() => t.stop());

  const assertUnauthorized = (r: { status: number; headers: Headers; body: any }, what: string) => {
    assert.equal(r.status, 401, what);
    assert.equal(r.headers.get('content-type'), 'application/problem+json; charset=utf-8', what);
    assert.equal(r.body.type, 'https://progressdb.dev/problems/unauthorized', what);
    assert.equal(typeof r.body.detail, 'string');
    assert.equal(r.body.request_id, r.headers.get('x-request-id'));
  };

  test('POST /v1/_sign with a secret key returns the hex HMAC-SHA256 of the user id under the signing secret', async () => {
    const r = await api(t.url, 'POST', '/v1/_sign', { key: creds.keys.secret, body: { user_id: 'alice' } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body, { user_id: 'alice', signature: sign(creds.signing_secret, 'alice') });
    assert.match(r.body.signature, /^[0-9a-f]{64}$/);
  });

  test('POST /v1/_sign refuses publishable and admin keys', async () => {
    const pk = await api(t.url, 'POST', '/v1/_sign', {
      key: creds.keys.publishable,
      user: 'a',
      signature: sign(creds.signing_secret, 'a'),
      body: { user_id: 'b' },
    });
    assert.equal(pk.status, 403);
    const ak = await api(t.url, 'POST', '/v1/_sign', { key: creds.keys.admin, body: { user_id: 'b' } });
    assert.equal(ak.status, 403);
  });

  test('a publishable key with the signature from /v1/_sign is accepted, in the Authorization or X-API-Key header', async () => {
    const { body } = await api(t.url, 'POST', '/v1/_sign', { key: creds.keys.secret, body: { user_id: 'bob' } });
    const r = await api(t.url, 'GET', '/v1/threads/open', {
      key: creds.keys.publishable,
      user: 'bob',
      signature: body.signature,
    });
    assert.equal(r.status, 200, r.text);
    const viaHeader = await api(t.url, 'GET', '/v1/threads/open', {
      headers: { 'x-api-key': creds.keys.publishable, 'x-user-id': 'bob', 'x-user-signature': body.signature },
    });
    assert.equal(viaHeader.status, 200);
    const post = await api(t.url, 'POST', '/v1/threads/open/messages', {
      key: creds.keys.publishable,
      user: 'bob',
      signature: body.signature,
      body: { body: 'hi' },
    });
    assert.equal(post.status, 201);
    assert.equal(post.body.author, 'bob');
  });

  test('a publishable key without a valid signature is refused with 401', async () => {
    const pk = creds.keys.publishable;
    const cases: Array<[string, { user?: string; signature?: string }]> = [
      ['no user, no signature', {}],
      ['no signature', { user: 'carol' }],
      ['signature of another user', { user: 'carol', signature: sign(creds.signing_secret, 'mallory') }],
      ['signature under another secret', { user: 'carol', signature: sign('ss_not-the-secret', 'carol') }],
      ['malformed signature', { user: 'carol', signature: 'zz' + sign(creds.signing_secret, 'carol').slice(2) }],
      ['uppercase hex', { user: 'carol', signature: sign(creds.signing_secret, 'carol').toUpperCase() }],
      ['truncated signature', { user: 'carol', signature: sign(creds.signing_secret, 'carol').slice(0, 40) }],
      ['empty signature', { user: 'carol', signature: '' }],
      ['user id with a space', { user: 'car ol', signature: sign(creds.signing_secret, 'car ol') }],
    ];
    for (const [what, opts] of cases) {
      assertUnauthorized(await api(t.url, 'GET', '/v1/threads/open', { key: pk, ...opts }), what);
      assertUnauthorized(
        await api(t.url, 'POST', '/v1/threads/open/messages', { key: pk, ...opts, body: { body: 'forged' } }),
        `${what} (write)`,
      );
    }
    const { rows } = await t.db.raw(
      `select count(*)::int as n from messages where project_id = ? and body = '"forged"'::jsonb`,
      [creds.project_id],
    );
    assert.equal(rows[0].n, 0);
  });

  test('a missing, malformed, unknown or wrong-checksum key is refused with 401', async () => {
    const good = creds.keys.secret;
    const flipped = good.slice(0, 10) + (good[10] === 'a' ? 'b' : 'a') + good.slice(11);
    const cases: Array<[string, Record<string, string>]> = [
      ['no key', {}],
      ['garbage', { authorization: 'Bearer nope' }],
      ['unknown but well-formed key', { authorization: `Bearer ${generateApiKey('secret')}` }],
      ['checksum mismatch', { authorization: `Bearer ${flipped}` }],
      ['empty bearer', { authorization: 'Bearer ' }],
      ['unknown X-API-Key', { 'x-api-key': generateApiKey('publishable') }],
    ];
    for (const [what, headers] of cases) assertUnauthorized(await api(t.url, 'GET', '/v1/threads', { headers }), what);
  });

  test('a revoked key is refused with 401 (within the 5-second bound) while other keys keep working', async () => {
    const p = await t.project('revocation');
    const extra = await t.app.projects.createKey(p.project_id, 'secret', 'to revoke');
    assert.equal((await api(t.url, 'GET', '/v1/threads', { key: extra.key })).status, 200);
    await t.app.projects.revokeKey(p.project_id, extra.id);
    const refused = await eventually(
      async () => (await api(t.url, 'GET', '/v1/threads', { key: extra.key })).status === 401,
      5_000,
    );
    assert.ok(refused, 'the revoked key still worked after 5 s');
    assertUnauthorized(
      await api(t.url, 'POST', '/v1/threads', { key: extra.key, body: { type: 'group' } }),
      'write with revoked key',
    );
    assert.equal((await api(t.url, 'GET', '/v1/threads', { key: p.keys.secret })).status, 200);
  });

  test('after rotating the signing secret, old and new signatures verify during the grace period', async () => {
    const p = await t.project('rotation');
    await api(t.url, 'POST', '/v1/threads', {
      key: p.keys.secret,
      body: { id: 'pub', type: 'channel', policies: { read: 'public' } },
    });
    const read = (signature: string) =>
      api(t.url, 'GET', '/v1/threads/pub', { key: p.keys.publishable, user: 'dora', signature });
    const oldSig = sign(p.signing_secret, 'dora');
    assert.equal((await read(oldSig)).status, 200);
    const rotated = await t.app.projects.rotateSigningSecret(p.project_id);
    assert.notEqual(rotated.signing_secret, p.signing_secret);
    const fresh = await api(t.url, 'POST', '/v1/_sign', { key: p.keys.secret, body: { user_id: 'dora' } });
    assert.equal(
      fresh.body.signature,
      sign(rotated.signing_secret, 'dora'),
      '/v1/_sign signs with the new secret at once',
    );
    assert.equal((await read(fresh.body.signature)).status, 200, 'the new signature verifies at once');
    assert.equal((await read(oldSig)).status, 200, 'the old signature verifies during the grace period');
    assert.equal((await read(sign(p.signing_secret, 'eve'))).status, 401, 'the old secret still binds the user id');
  });

  test('without a grace period, the old signature stops verifying after a rotation', async () => {
    const strict = await startTestApp({ SIGNING_SECRET_GRACE_SECONDS: '0' });
    try {
      const p = await strict.project();
      await api(strict.url, 'POST', '/v1/threads', {
        key: p.keys.secret,
        body: { id: 'pub', type: 'channel', policies: { read: 'public' } },
      });
      const read = (signature: string) =>
        api(strict.url, 'GET', '/v1/threads/pub', { key: p.keys.publishable, user: 'fay', signature });
      assert.equal((await read(sign(p.signing_secret, 'fay'))).status, 200);
      const rotated = await strict.app.projects.rotateSigningSecret(p.project_id);
      assert.equal((await read(sign(rotated.signing_secret, 'fay'))).status, 200);
      const refused = await eventually(async () => (await read(sign(p.signing_secret, 'fay'))).status === 401, 5_000);
      assert.ok(refused, 'the old signature still verified');
    } finally {
      await strict.stop();
    }
  });

  test('admin keys are refused on data routes with 403', async () => {
    const ak = creds.keys.admin;
    for (const [method, path, body] of [
      ['GET', '/v1/threads', undefined],
      ['POST', '/v1/threads', { type: 'group' }],
      ['GET', '/v1/threads/open', undefined],
      ['PATCH', '/v1/threads/open', { title: 'x' }],
      ['DELETE', '/v1/threads/open', undefined],
      ['GET', '/v1/threads/open/members', undefined],
      ['PUT', '/v1/threads/open/members/u', undefined],
      ['POST', '/v1/threads/open/messages', { body: 'x', author: 'a' }],
      ['POST', '/v1/threads/open/messages/batch', { messages: [{ body: 'x', author: 'a' }] }],
      ['GET', '/v1/threads/open/messages', undefined],
      ['GET', '/v1/threads/open/events', undefined],
    ] as const) {
      const r = await api(t.url, method, path, { key: ak, body });
      assert.equal(r.status, 403, `${method} ${path}`);
      assert.equal(r.body.type, 'https://progressdb.dev/problems/forbidden');
    }
    const thread = await api(t.url, 'GET', '/v1/threads/open', { key: creds.keys.secret });
    assert.equal(thread.body.deleted, false);
  });

  test('a secret key may act as any user without a signature', async () => {
    const r = await api(t.url, 'POST', '/v1/threads/open/messages', {
      key: creds.keys.secret,
      user: 'anyone-at-all',
      body: { body: 'as you' },
    });
    assert.equal(r.status, 201);
    assert.equal(r.body.author, 'anyone-at-all');
  });
});
