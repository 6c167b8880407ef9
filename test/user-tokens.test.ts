import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import jwt from 'jsonwebtoken';
import { signUserToken } from '../src/modules/keys/key-auth-service';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startInstance, startTestApp, type TestContext, type TestInstance } from './helpers/app';

describe('expiring end-user credentials', () => {
  let t: TestContext;
  let second: TestInstance;
  let creds: ProjectCredentials;
  const asToken = (token: string, url = t.url, extra: Record<string, string> = {}) =>
    api(url, 'GET', '/v1/threads', { key: creds.keys.publishable, headers: { 'x-user-token': token, ...extra } });

  before(async () => {
    t = await startTestApp({ REALTIME_TOKEN_MAX_TTL_SECONDS: '600', KEY_CACHE_TTL_MS: '60000' });
    second = await startInstance(t.databaseUrl, { KEY_CACHE_TTL_MS: '60000' });
    creds = await t.project();
  });
  after(async () => {
    await second.close();
    await t.stop();
  });

  test('a user token minted by the backend acts as its user with a publishable key, no signature needed', async () => {
    const minted = await api(t.url, 'POST', '/v1/_sign', {
      key: creds.keys.secret,
      body: { user_id: 'tina', expires_in: 120 },
    });
    assert.equal(minted.status, 200, minted.text);
    assert.ok(minted.body.signature, 'the permanent HMAC is still returned');
    const expiresAt = Date.parse(minted.body.expires_at);
    assert.ok(Math.abs(expiresAt - (Date.now() + 120_000)) < 5_000);
    const posted = await api(t.url, 'POST', '/v1/threads/tok-1/messages', {
      key: creds.keys.publishable,
      headers: { 'x-user-token': minted.body.token },
      body: { body: 'hi' },
    });
    assert.equal(posted.status, 201, posted.text);
    assert.equal(posted.body.author, 'tina');
    const offline = signUserToken(creds.signing_secret, 'tina', 60);
    assert.equal((await asToken(offline)).status, 200, 'tokens minted offline with the signing secret work too');
    assert.equal((await asToken(offline, t.url, { 'x-user-id': 'tina' })).status, 200);
    const mismatch = await asToken(offline, t.url, { 'x-user-id': 'someone-else' });
    assert.equal(mismatch.status, 400, mismatch.text);
    const tooLong = await api(t.url, 'POST', '/v1/_sign', {
      key: creds.keys.secret,
      body: { user_id: 'tina', expires_in: 400 * 86_400 },
    });
    assert.equal(tooLong.status, 400);
  });

  test('expired, unsigned, never-expiring and over-long tokens are refused', async () => {
    const expired = signUserToken(creds.signing_secret, 'tina', 60, Date.now() - 3_600_000);
    const r = await asToken(expired);
    assert.equal(r.status, 401);
    assert.match(r.body.detail, /expired/);
    const noExp = jwt.sign({ user_id: 'tina' }, creds.signing_secret, { algorithm: 'HS256' });
    assert.equal((await asToken(noExp)).status, 401);
    const wrongSecret = signUserToken('not-the-signing-secret-at-all', 'tina', 60);
    assert.equal((await asToken(wrongSecret)).status, 401);
    const none = jwt.sign({ user_id: 'tina', exp: Math.floor(Date.now() / 1000) + 60 }, '', { algorithm: 'none' });
    assert.equal((await asToken(none)).status, 401, 'alg=none is not accepted');
    const forever = jwt.sign(
      { user_id: 'tina', iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 400 * 86_400 },
      creds.signing_secret,
      { algorithm: 'HS256' },
    );
    assert.equal((await asToken(forever)).status, 401, 'longer than USER_TOKEN_MAX_TTL_SECONDS');
  });

  test("the backend can revoke a user's tokens (not_before), on every replica", async () => {
    const token = signUserToken(creds.signing_secret, 'rita', 300);
    assert.equal((await asToken(token)).status, 200);
    assert.equal((await asToken(token, second.url)).status, 200, 'cached on the second replica');
    const revoked = await api(t.url, 'POST', '/v1/users/rita/revoke-tokens', { key: creds.keys.secret });
    assert.equal(revoked.status, 200, revoked.text);
    assert.ok(Date.parse(revoked.body.not_before) <= Date.now());
    assert.equal((await asToken(token)).status, 401);
    let onSecond = 0;
    for (let i = 0; i < 50 && onSecond !== 401; i++) {
      onSecond = (await asToken(token, second.url)).status;
      if (onSecond !== 401) await sleep(100);
    }
    assert.equal(onSecond, 401, 'the other replica drops its cached not_before on the notice');
    await sleep(1_100);
    assert.equal((await asToken(signUserToken(creds.signing_secret, 'rita', 300))).status, 200, 'new tokens work');
    assert.equal(
      (await asToken(signUserToken(creds.signing_secret, 'other', 300))).status,
      200,
      'other users are not affected',
    );
  });

  test('realtime tokens are minted by the server with a bounded lifetime and cannot be forged offline', async () => {
    const mint = (body?: object) =>
      api(t.url, 'POST', '/v1/realtime/token', {
        key: creds.keys.secret,
        user: 'tina',
        ...(body ? { body } : {}),
      });
    const dflt = await mint();
    assert.equal(dflt.status, 201, dflt.text);
    assert.equal(dflt.body.expires_in, 300);
    const short = await mint({ expires_in: 30 });
    assert.equal(short.body.expires_in, 30);
    const tooLong = await mint({ expires_in: 601 });
    assert.equal(tooLong.status, 400, tooLong.text);
    assert.match(tooLong.body.detail, /600/);
    const tail = (token: string) => api(t.url, 'GET', `/v1/threads/tok-1/tail?token=${encodeURIComponent(token)}`);
    const ok = await fetch(`${t.url}/v1/threads/tok-1/tail?token=${encodeURIComponent(short.body.token)}`);
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
    // What a tenant holding the signing secret could have minted offline under the old scheme.
    const now = Math.floor(Date.now() / 1000);
    const keyRow = await t.db('api_keys').first('id').where({ project_id: creds.project_id, kind: 'publishable' });
    for (const v of [1, 2]) {
      const body = Buffer.from(
        JSON.stringify({ v, p: creds.project_id, k: keyRow.id, u: 'tina', iat: now, exp: now + 10 * 365 * 86_400 }),
      ).toString('base64url');
      const mac = createHmac('sha256', creds.signing_secret).update(`progressdb-realtime:${body}`).digest('base64url');
      assert.equal((await tail(`rt_${body}.${mac}`)).status, 401, `forged v${v} token refused`);
    }
  });
});
