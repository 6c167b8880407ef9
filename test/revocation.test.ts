import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { api, startInstance, startTestApp, type TestContext, type TestInstance } from './helpers/app';

/** Polls until `probe` holds; false if it still does not after `ms`. */
async function within(ms: number, probe: () => Promise<boolean>): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
}

// The key cache TTL is set far beyond the 5 s bound so that only the notification (or the
// listener's reconnect) can make these pass: the TTL backstop alone would fail them.
const LONG_CACHE = { KEY_CACHE_TTL_MS: '60000', SIGNING_SECRET_GRACE_SECONDS: '0' };

describe('revocation and settings changes across replicas', () => {
  let t: TestContext;
  let second: TestInstance;
  before(async () => {
    t = await startTestApp(LONG_CACHE);
    second = await startInstance(t.databaseUrl, LONG_CACHE);
  });
  after(async () => {
    await second.close();
    await t.stop();
  });

  const keyIdOf = async (projectId: string, kind: string) =>
    (await t.db('api_keys').first('id').where({ project_id: projectId, kind })).id as string;

  test('a key revoked on instance 1 is refused on instance 2 within 5 seconds', async () => {
    const creds = await t.project();
    const sk = creds.keys.secret;
    assert.equal(
      (await api(second.url, 'GET', '/v1/threads', { key: sk })).status,
      200,
      'instance 2 has the key cached',
    );
    await t.app.projects.revokeKey(creds.project_id, await keyIdOf(creds.project_id, 'secret'));
    const refused = await within(
      5_000,
      async () => (await api(second.url, 'GET', '/v1/threads', { key: sk })).status === 401,
    );
    assert.ok(refused, 'instance 2 still accepted the revoked key after 5 s');
    assert.equal((await api(t.url, 'GET', '/v1/threads', { key: sk })).status, 401);
    const other = await t.project();
    assert.equal(
      (await api(second.url, 'GET', '/v1/threads', { key: other.keys.secret })).status,
      200,
      "other projects' keys still work",
    );
  });

  test('a signing secret rotated on instance 1 stops verifying on instance 2 within 5 seconds (no grace)', async () => {
    const creds = await t.project();
    const sign = await api(second.url, 'POST', '/v1/_sign', { key: creds.keys.secret, body: { user_id: 'bob' } });
    const signature = sign.body.signature as string;
    assert.equal(
      (await api(second.url, 'GET', '/v1/threads', { key: creds.keys.publishable, user: 'bob', signature })).status,
      200,
    );
    await t.app.projects.rotateSigningSecret(creds.project_id);
    const refused = await within(
      5_000,
      async () =>
        (await api(second.url, 'GET', '/v1/threads', { key: creds.keys.publishable, user: 'bob', signature }))
          .status === 401,
    );
    assert.ok(refused, 'instance 2 still verified the old secret after 5 s');
  });

  test('a settings change (rate limit) reaches instance 2 within 5 seconds', async () => {
    const creds = await t.app.projects.createProject({
      name: 'settings',
      settings: { rate_limits: { read: { limit: 100, window_seconds: 60 } } },
    });
    const first = await api(second.url, 'GET', '/v1/threads', { key: creds.keys.secret });
    assert.equal(first.headers.get('ratelimit-policy'), '"read";q=100;w=60');
    await t
      .db('projects')
      .where({ id: creds.project_id })
      .update({ settings: { rate_limits: { read: { limit: 7, window_seconds: 30 } } } });
    await t.db.raw(`select pg_notify('progressdb_keys', ?)`, [creds.project_id]);
    const changed = await within(
      5_000,
      async () =>
        (await api(second.url, 'GET', '/v1/threads', { key: creds.keys.secret })).headers.get('ratelimit-policy') ===
        '"read";q=7;w=30',
    );
    assert.ok(changed);
  });

  test('after the LISTEN connection drops, the reconnect invalidates every cached key', async () => {
    const creds = await t.project();
    const sk = creds.keys.secret;
    assert.equal((await api(second.url, 'GET', '/v1/threads', { key: sk })).status, 200);
    // Revoked without a notification (as if it had been sent while nobody was listening) …
    await t
      .db('api_keys')
      .where({ project_id: creds.project_id, kind: 'secret' })
      .update({ revoked_at: t.db.fn.now() });
    assert.equal(
      (await api(second.url, 'GET', '/v1/threads', { key: sk })).status,
      200,
      'still cached: nothing told instance 2',
    );
    // … then the listeners lose their connection; on reconnect they must drop everything.
    const dbName = new URL(t.databaseUrl).pathname.slice(1);
    await t.db.raw(
      `select pg_terminate_backend(pid) from pg_stat_activity where datname = ? and application_name = 'progressdb-listener'`,
      [dbName],
    );
    const refused = await within(
      5_000,
      async () => (await api(second.url, 'GET', '/v1/threads', { key: sk })).status === 401,
    );
    assert.ok(refused);
  });
});
