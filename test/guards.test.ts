import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { signUserId } from '../src/modules/keys/key-auth-service';
import { api, startTestApp, type TestContext } from './helpers/app';

describe('origin and IP guards', () => {
  let t: TestContext;
  before(async () => {
    t = await startTestApp();
  });
  after(() => t.stop());

  const publishable = async (settings: object) => {
    const creds = await t.app.projects.createProject({ name: 'guarded', settings });
    const user = 'alice';
    return {
      pk: creds.keys.publishable,
      sk: creds.keys.secret,
      user,
      signature: signUserId(creds.signing_secret, user),
    };
  };

  test('a publishable key is refused from an origin not in allowed_origins, and served from an allowed one', async () => {
    const p = await publishable({ allowed_origins: ['https://app.example.com', 'http://LOCALHOST:3000'] });
    const call = (origin?: string) =>
      api(t.url, 'GET', '/v1/threads', {
        key: p.pk,
        user: p.user,
        signature: p.signature,
        headers: origin ? { origin } : {},
      });

    const allowed = await call('https://app.example.com');
    assert.equal(allowed.status, 200, allowed.text);
    assert.equal(allowed.headers.get('access-control-allow-origin'), 'https://app.example.com');
    assert.match(allowed.headers.get('access-control-expose-headers') ?? '', /RateLimit-Policy/);
    assert.equal((await call('http://localhost:3000')).status, 200, 'settings origins are compared in canonical form');

    for (const origin of [
      'https://evil.example',
      'https://app.example.com.evil.example',
      'http://app.example.com',
      'null',
    ]) {
      const refused = await call(origin);
      assert.equal(refused.status, 403, origin);
      assert.equal(refused.body.type, 'https://progressdb.dev/problems/forbidden');
      assert.match(refused.body.detail, /allowed_origins/);
    }
    assert.equal((await call()).status, 200, 'no Origin: not a browser page, the binding does not apply');
  });

  test('a refused origin changes nothing: the guard runs before the handler', async () => {
    const p = await publishable({ allowed_origins: ['https://app.example.com'] });
    const r = await api(t.url, 'POST', '/v1/threads', {
      key: p.pk,
      user: p.user,
      signature: p.signature,
      headers: { origin: 'https://evil.example' },
      body: { id: 'nope', type: 'group' },
    });
    assert.equal(r.status, 403);
    const { rows } = await t.db.raw(`select count(*)::int as n from threads where id = 'nope'`);
    assert.equal(rows[0].n, 0);
  });

  test('without allowed_origins a publishable key serves no browser origin; "*" serves any', async () => {
    const none = await publishable({});
    const r = await api(t.url, 'GET', '/v1/threads', {
      key: none.pk,
      user: none.user,
      signature: none.signature,
      headers: { origin: 'https://app.example.com' },
    });
    assert.equal(r.status, 403);
    const any = await publishable({ allowed_origins: ['*'] });
    const ok = await api(t.url, 'GET', '/v1/threads', {
      key: any.pk,
      user: any.user,
      signature: any.signature,
      headers: { origin: 'https://whatever.example' },
    });
    assert.equal(ok.status, 200);
  });

  test('secret keys are not bound to origins', async () => {
    const p = await publishable({ allowed_origins: ['https://app.example.com'] });
    const r = await api(t.url, 'GET', '/v1/threads', { key: p.sk, headers: { origin: 'https://elsewhere.example' } });
    assert.equal(r.status, 200);
  });

  test('a CORS preflight (no key) is answered for any origin with the headers the API needs', async () => {
    const res = await fetch(`${t.url}/v1/threads`, {
      method: 'OPTIONS',
      headers: {
        origin: 'https://app.example.com',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization, x-user-id, x-user-signature, content-type',
      },
    });
    assert.equal(res.status, 204);
    assert.equal(res.headers.get('access-control-allow-origin'), 'https://app.example.com');
    assert.match(res.headers.get('access-control-allow-methods') ?? '', /POST/);
    const allowHeaders = (res.headers.get('access-control-allow-headers') ?? '').toLowerCase();
    for (const h of ['authorization', 'x-user-id', 'x-user-signature', 'content-type'])
      assert.ok(allowHeaders.includes(h), h);
    assert.equal(
      res.headers.get('access-control-allow-credentials'),
      null,
      'never credentialed: the API authenticates with headers',
    );
  });

  test('an IP allowlist that excludes the caller refuses every key of the project; one that includes it admits', async () => {
    const outside = await t.app.projects.createProject({
      name: 'ip-out',
      settings: { ip_allowlist: ['10.0.0.0/8', '2001:db8::/32'] },
    });
    for (const key of [outside.keys.secret, outside.keys.publishable]) {
      const r = await api(t.url, 'GET', '/v1/threads', {
        key,
        user: 'alice',
        signature: signUserId(outside.signing_secret, 'alice'),
      });
      assert.equal(r.status, 403);
      assert.match(r.body.detail, /ip_allowlist/);
    }
    const write = await api(t.url, 'POST', '/v1/threads', {
      key: outside.keys.secret,
      body: { id: 'blocked', type: 'group' },
    });
    assert.equal(write.status, 403);

    for (const list of [['127.0.0.0/8'], ['10.0.0.0/8', '127.0.0.1'], ['::1', '127.0.0.1/32']]) {
      const inside = await t.app.projects.createProject({ name: 'ip-in', settings: { ip_allowlist: list } });
      const r = await api(t.url, 'GET', '/v1/threads', { key: inside.keys.secret });
      assert.equal(r.status, 200, `${list.join(',')}: ${r.text}`);
    }
  });

  test("helmet's headers are on every response, refusals included", async () => {
    const p = await publishable({ allowed_origins: ['https://app.example.com'] });
    for (const r of [
      await api(t.url, 'GET', '/healthz'),
      await api(t.url, 'GET', '/v1/threads', {
        key: p.pk,
        user: p.user,
        signature: p.signature,
        headers: { origin: 'https://evil.example' },
      }),
    ]) {
      assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
      assert.ok(r.headers.get('content-security-policy'));
    }
  });
});
