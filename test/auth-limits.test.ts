import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { generateApiKey } from '../src/modules/keys/api-key';
import { signUserId } from '../src/modules/keys/key-auth-service';
import { api, startTestApp, type TestContext } from './helpers/app';

/** A distinct client address per test (the app trusts its loopback proxy's X-Forwarded-For). */
const from = (ip: string) => ({ 'x-forwarded-for': ip });

describe('failed authentication is limited per client IP and cheap', () => {
  let t: TestContext;
  before(async () => {
    t = await startTestApp({ RATE_LIMIT_AUTH_FAILURES: '3', RATE_LIMIT_WINDOW_SECONDS: '60' });
  });
  after(() => t.stop());

  test('unknown keys are refused 401, then 429 with Retry-After once the auth bucket is used up', async () => {
    const responses = [];
    for (let i = 0; i < 5; i++)
      responses.push(
        await api(t.url, 'GET', '/v1/threads', { key: generateApiKey('secret'), headers: from('198.51.100.10') }),
      );
    assert.deepEqual(
      responses.map((r) => r.status),
      [401, 401, 401, 429, 429],
    );
    const last = responses[4];
    assert.match(last.headers.get('content-type') ?? '', /application\/problem\+json/);
    assert.equal(last.body.type, 'https://progressdb.dev/problems/quota-exceeded');
    assert.ok(Number(last.headers.get('retry-after')) >= 1);
    const other = await api(t.url, 'GET', '/v1/threads', {
      key: generateApiKey('secret'),
      headers: from('198.51.100.11'),
    });
    assert.equal(other.status, 401, 'another address has its own bucket');
    const good = await api(t.url, 'GET', '/v1/threads', {
      key: (await t.project()).keys.secret,
      headers: from('198.51.100.10'),
    });
    assert.equal(good.status, 200, 'a valid key from the same address still works');
  });

  test('an unknown key costs one database lookup, not one per attempt (negative cache)', async () => {
    const key = generateApiKey('secret');
    const before = t.app.keyAuth.lookups();
    for (let i = 0; i < 3; i++)
      assert.equal(
        (await api(t.url, 'GET', '/v1/threads', { key, headers: from(`198.51.100.${20 + i}`) })).status,
        401,
      );
    assert.equal(t.app.keyAuth.lookups() - before, 1);
  });

  test('wrong signatures on a valid publishable key do not bypass the key cache, and count as failures', async () => {
    const creds = await t.project();
    const pk = creds.keys.publishable;
    const ok = await api(t.url, 'GET', '/v1/threads', {
      key: pk,
      user: 'ana',
      signature: signUserId(creds.signing_secret, 'ana'),
      headers: from('198.51.100.30'),
    });
    assert.equal(ok.status, 200, ok.text);
    const before = t.app.keyAuth.lookups();
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++)
      statuses.push(
        (
          await api(t.url, 'GET', '/v1/threads', {
            key: pk,
            user: 'ana',
            signature: 'f'.repeat(64),
            headers: from('198.51.100.31'),
          })
        ).status,
      );
    assert.deepEqual(statuses, [401, 401, 401, 429, 429, 429]);
    assert.ok(
      t.app.keyAuth.lookups() - before <= 1,
      `${t.app.keyAuth.lookups() - before} lookups for 6 bad signatures`,
    );
  });

  test('bad realtime tokens count against the same bucket', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++)
      statuses.push(
        (
          await api(t.url, 'GET', `/v1/threads/x/tail?token=rt_${'A'.repeat(20)}.${'B'.repeat(43)}`, {
            headers: from('198.51.100.40'),
          })
        ).status,
      );
    assert.deepEqual(statuses, [401, 401, 401, 429]);
  });

  test('the caller is authenticated before the body is read: a bad key is refused without waiting for it', async () => {
    const { hostname, port } = new URL(t.url);
    const started = Date.now();
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(
        {
          host: hostname,
          port,
          method: 'POST',
          path: '/v1/threads/big/messages',
          headers: {
            authorization: `Bearer ${generateApiKey('secret')}`,
            'content-type': 'application/json',
            'content-length': String(3 * 1024 * 1024),
            ...from('198.51.100.50'),
          },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
          req.destroy();
        },
      );
      req.on('error', reject);
      req.setTimeout(5_000, () => reject(new Error('no answer before the body was sent: the body was awaited')));
      // Headers and the first bytes only; the other 3 MB never come.
      req.write('{"body":"');
    });
    assert.equal(status, 401);
    assert.ok(Date.now() - started < 5_000);
  });
});
