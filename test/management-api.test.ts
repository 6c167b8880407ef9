import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { signUserId } from '../src/modules/keys/key-auth-service';
import { api, startInstance, startTestApp, type TestContext } from './helpers/app';
import { signInThroughProvider, startOAuthProvider } from './helpers/oauth-provider';

describe('management API (projects, keys, signing secret, settings, usage)', () => {
  let provider: Awaited<ReturnType<typeof startOAuthProvider>>;
  let t: TestContext;
  let alice: string;
  let bob: string;
  const as = (token: string) => (method: string, path: string, body?: unknown) =>
    api(t.url, method, path, { body, headers: { authorization: `Bearer ${token}` } });

  async function signIn(sub: string, name: string) {
    provider.signInAs({ sub, name, email: `${sub}@example.com` });
    const { cookies } = await signInThroughProvider(t.url);
    return cookies.pdb_session;
  }

  before(async () => {
    provider = await startOAuthProvider();
    // A long key cache: only an explicit invalidation can make a revocation immediate.
    t = await startTestApp({ ...provider.env, KEY_CACHE_TTL_MS: '60000' });
    alice = await signIn('g-alice', 'Alice');
    bob = await signIn('g-bob', 'Bob');
  });
  after(async () => {
    await t.stop();
    await provider.stop();
  });

  test('creates a project without keys, mints a key shown once that works on the API, and lists only prefixes', async () => {
    const A = as(alice);
    const created = await A('POST', '/v1/projects', { name: 'Chat app' });
    assert.equal(created.status, 201, created.text);
    assert.match(created.body.signing_secret, /^ss_/);
    const pid = created.body.id;
    assert.deepEqual((await A('GET', `/v1/projects/${pid}/keys`)).body.data, []);

    const key = await A('POST', `/v1/projects/${pid}/keys`, { name: 'backend', kind: 'secret' });
    assert.equal(key.status, 201, key.text);
    assert.match(key.body.key, /^sk_[0-9A-Za-z]{49}$/);
    assert.equal(key.headers.get('cache-control'), 'no-store');
    const append = await api(t.url, 'POST', '/v1/threads/general/messages', {
      key: key.body.key,
      user: 'u1',
      body: { body: { text: 'hi' } },
    });
    assert.equal(append.status, 201, append.text);

    const list = await A('GET', `/v1/projects/${pid}/keys`);
    assert.equal(list.body.data.length, 1);
    const [k] = list.body.data;
    assert.deepEqual(
      [k.id, k.name, k.kind, k.prefix, k.revoked_at],
      [key.body.id, 'backend', 'secret', key.body.key.slice(0, 11), null],
    );
    assert.equal(k.key, undefined, 'the full key is never listed');
    assert.ok(k.created_at && k.last_used_at, 'created and last-used times');
    assert.ok(!list.text.includes(key.body.key));

    const projects = await A('GET', '/v1/projects');
    assert.deepEqual(
      projects.body.data.map((p: any) => p.id),
      [pid],
    );
    assert.equal(projects.body.data[0].signing_secret, undefined, 'lists do not carry the signing secret');
    assert.equal((await A('POST', `/v1/projects/${pid}/keys`, { name: 'x', kind: 'root' })).status, 400);
    assert.equal((await A('POST', '/v1/projects', { name: '  ' })).status, 400);
  });

  test('revoking a key refuses it at once on this replica and notifies the other replicas', async () => {
    const A = as(alice);
    const pid = (await A('POST', '/v1/projects', { name: 'Revocations' })).body.id;
    const key = (await A('POST', `/v1/projects/${pid}/keys`, { name: 'soon gone', kind: 'secret' })).body;
    assert.equal((await api(t.url, 'GET', '/v1/threads', { key: key.key })).status, 200, 'cached as live');

    const listener = new pg.Client({ connectionString: t.databaseUrl });
    await listener.connect();
    const notified = new Promise<string>((resolve) =>
      listener.on('notification', (n) => n.channel === 'progressdb_keys' && resolve(n.payload ?? '')),
    );
    await listener.query('listen progressdb_keys');
    try {
      assert.equal((await A('DELETE', `/v1/projects/${pid}/keys/${key.id}`)).status, 204);
      assert.equal((await api(t.url, 'GET', '/v1/threads', { key: key.key })).status, 401, 'immediately refused');
      assert.equal(await notified, pid);
    } finally {
      await listener.end();
    }
    const listed = (await A('GET', `/v1/projects/${pid}/keys`)).body.data[0];
    assert.ok(listed.revoked_at);
    assert.equal((await A('DELETE', `/v1/projects/${pid}/keys/${key.id}`)).status, 404, 'revoking twice');
  });

  test("a developer cannot read, change or mint keys for another developer's project: 404 everywhere", async () => {
    const A = as(alice);
    const B = as(bob);
    const pid = (await A('POST', '/v1/projects', { name: 'Private', settings: { retention_days: 30 } })).body.id;
    const key = (await A('POST', `/v1/projects/${pid}/keys`, { kind: 'secret' })).body;
    const before = (await A('GET', `/v1/projects/${pid}`)).body;

    const attempts: Array<[string, string, unknown?]> = [
      ['GET', `/v1/projects/${pid}`],
      ['PATCH', `/v1/projects/${pid}`, { name: 'pwned', settings: { retention_days: 1 } }],
      ['DELETE', `/v1/projects/${pid}`],
      ['GET', `/v1/projects/${pid}/keys`],
      ['POST', `/v1/projects/${pid}/keys`, { name: 'mine now', kind: 'secret' }],
      ['DELETE', `/v1/projects/${pid}/keys/${key.id}`],
      ['POST', `/v1/projects/${pid}/signing-secret/rotate`],
      ['GET', `/v1/projects/${pid}/usage`],
      ['GET', `/v1/projects/${pid}/threads`],
      ['GET', `/v1/projects/${pid}/threads/general/messages`],
    ];
    for (const [method, path, body] of attempts) {
      const r = await B(method, path, body);
      assert.equal(r.status, 404, `${method} ${path}: ${r.text}`);
      assert.equal(r.body.type, 'https://progressdb.dev/problems/not-found');
    }
    assert.deepEqual((await B('GET', '/v1/projects')).body.data, []);
    const after = (await A('GET', `/v1/projects/${pid}`)).body;
    assert.deepEqual(after, before, 'nothing changed');
    assert.equal((await A('GET', `/v1/projects/${pid}/keys`)).body.data.length, 1, 'no key was minted');
    assert.equal((await api(t.url, 'GET', '/v1/threads', { key: key.key })).status, 200, 'the key still works');
    // Projects made by the CLI (no owner) are nobody's in the console.
    const cli = await t.project('cli project');
    assert.equal((await A('GET', `/v1/projects/${cli.project_id}`)).status, 404);
    assert.equal((await A('GET', '/v1/projects/prj_doesnotexist')).status, 404);
  });

  test('settings are validated (400 with field paths), merged with the stored ones and stored', async () => {
    const A = as(alice);
    const pid = (await A('POST', '/v1/projects', { name: 'Settings' })).body.id;
    const bad = await A('PATCH', `/v1/projects/${pid}`, {
      settings: {
        allowed_origins: ['https://ok.example', 'ftp://nope/path'],
        rate_limits: { write: { limit: 0, window_seconds: 60 } },
      },
    });
    assert.equal(bad.status, 400);
    assert.deepEqual(bad.body.errors.map((e: any) => e.path).sort(), [
      'body.settings.allowed_origins.1',
      'body.settings.rate_limits.write.limit',
    ]);
    assert.equal((await A('PATCH', `/v1/projects/${pid}`, { settings: { unknown_field: 1 } })).status, 400);

    const ok = await A('PATCH', `/v1/projects/${pid}`, {
      name: 'Settings (renamed)',
      settings: {
        allowed_origins: ['https://app.example.com'],
        ip_allowlist: ['203.0.113.0/24'],
        rate_limits: { read: { limit: 100, window_seconds: 60 } },
        retention_days: 90,
      },
    });
    assert.equal(ok.status, 200, ok.text);
    const merged = await A('PATCH', `/v1/projects/${pid}`, { settings: { retention_days: null } });
    assert.deepEqual(merged.body.settings, {
      allowed_origins: ['https://app.example.com'],
      ip_allowlist: ['203.0.113.0/24'],
      rate_limits: { read: { limit: 100, window_seconds: 60 } },
      retention_days: null,
    });
    assert.equal(merged.body.name, 'Settings (renamed)');
    const { rows } = await t.db.raw('select settings from projects where id = ?', [pid]);
    assert.deepEqual(rows[0].settings, merged.body.settings);
  });

  test('rotating the signing secret keeps the old one verifying during the grace period', async () => {
    const A = as(alice);
    const project = (await A('POST', '/v1/projects', { name: 'Signing' })).body;
    const pk = (await A('POST', `/v1/projects/${project.id}/keys`, { kind: 'publishable' })).body.key;
    const call = (secret: string) =>
      api(t.url, 'GET', '/v1/threads', { key: pk, user: 'u1', signature: signUserId(secret, 'u1') });
    assert.equal((await call(project.signing_secret)).status, 200);
    const rotated = await A('POST', `/v1/projects/${project.id}/signing-secret/rotate`);
    assert.equal(rotated.status, 200);
    assert.notEqual(rotated.body.signing_secret, project.signing_secret);
    assert.ok(Date.parse(rotated.body.previous_signing_secret_expires_at) > Date.now());
    assert.equal(
      (await call(rotated.body.signing_secret)).status,
      200,
      'the new secret verifies at once (cache dropped)',
    );
    assert.equal((await call(project.signing_secret)).status, 200, 'the old one still verifies');
    assert.equal((await call('ss_wrong')).status, 401);
  });

  test('usage counts API requests and new messages per hour; retries of an existing message id do not count', async () => {
    const A = as(alice);
    const hourAtStart = Math.floor(Date.now() / 3_600_000);
    const pid = (await A('POST', '/v1/projects', { name: 'Usage' })).body.id;
    const sk = (await A('POST', `/v1/projects/${pid}/keys`, { kind: 'secret' })).body.key;
    for (let i = 0; i < 3; i++)
      await api(t.url, 'POST', '/v1/threads/u/messages', { key: sk, user: 'u', body: { id: `m${i}`, body: { i } } });
    await api(t.url, 'POST', '/v1/threads/u/messages', { key: sk, user: 'u', body: { id: 'm0', body: { i: 0 } } });
    await api(t.url, 'POST', '/v1/threads/u/messages/batch', {
      key: sk,
      user: 'u',
      body: { messages: [{ body: 1 }, { body: 2 }] },
    });
    await api(t.url, 'GET', '/v1/threads/u/messages', { key: sk });

    const usage = await A('GET', `/v1/projects/${pid}/usage`);
    assert.equal(usage.status, 200, usage.text);
    assert.equal(usage.body.data.length, 24);
    const hours = usage.body.data.map((d: any) => Date.parse(d.hour));
    assert.ok(
      hours.every((h: number, i: number) => i === 0 || h - hours[i - 1] === 3_600_000),
      'consecutive hours, oldest first',
    );
    const total = usage.body.data.reduce(
      (a: any, d: any) => ({ requests: a.requests + d.requests, messages: a.messages + d.messages }),
      { requests: 0, messages: 0 },
    );
    assert.deepEqual(total, { requests: 6, messages: 5 });
    const { rows } = await t.db.raw('select count(*)::int as n from usage_hourly where project_id = ?', [pid]);
    const hoursSpanned = Math.floor(Date.now() / 3_600_000) - hourAtStart + 1;
    assert.equal(rows[0].n, hoursSpanned, 'one row per project-hour, added to, not one per request');
    assert.equal((await A('GET', `/v1/projects/${pid}/usage?hours=0`)).status, 400);
  });

  test("the thread browser reads threads, messages and versions of the developer's project", async () => {
    const A = as(alice);
    const pid = (await A('POST', '/v1/projects', { name: 'Browser' })).body.id;
    const sk = (await A('POST', `/v1/projects/${pid}/keys`, { kind: 'secret' })).body.key;
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'room', type: 'group', title: 'Room' } });
    await api(t.url, 'POST', '/v1/threads/room/messages', {
      key: sk,
      user: 'ann',
      body: { id: 'm1', body: { text: 'first' } },
    });
    await api(t.url, 'PATCH', '/v1/threads/room/messages/m1', {
      key: sk,
      user: 'ann',
      body: { body: { text: 'first (edited)' } },
    });

    const threads = await A('GET', `/v1/projects/${pid}/threads`);
    assert.deepEqual(
      threads.body.data.map((x: any) => [x.id, x.title]),
      [['room', 'Room']],
    );
    const messages = await A('GET', `/v1/projects/${pid}/threads/room/messages`);
    assert.deepEqual(
      messages.body.data.map((m: any) => [m.id, m.version, m.body.text]),
      [['m1', 2, 'first (edited)']],
    );
    const versions = await A('GET', `/v1/projects/${pid}/threads/room/messages/m1/versions`);
    assert.deepEqual(
      versions.body.data.map((v: any) => v.body.text),
      ['first', 'first (edited)'],
    );
    assert.equal((await A('GET', `/v1/projects/${pid}/threads/nope/messages`)).status, 404);
    assert.equal((await A('GET', `/v1/projects/${pid}/threads?limit=0`)).status, 400);
  });

  test('usage from several replicas adds up in the same hourly row', async () => {
    const A = as(alice);
    const pid = (await A('POST', '/v1/projects', { name: 'Two replicas' })).body.id;
    const sk = (await A('POST', `/v1/projects/${pid}/keys`, { kind: 'secret' })).body.key;
    const second = await startInstance(t.databaseUrl, { ...provider.env });
    try {
      for (const url of [t.url, second.url, second.url]) {
        assert.equal(
          (await api(url, 'POST', '/v1/threads/r/messages', { key: sk, user: 'u', body: { body: 'x' } })).status,
          201,
        );
      }
    } finally {
      await second.close(); // a graceful shutdown flushes the replica's pending counts
    }
    const total = (await A('GET', `/v1/projects/${pid}/usage`)).body.data.reduce(
      (n: number, d: any) => n + d.messages,
      0,
    );
    assert.equal(total, 3);
  });

  test('the management routes are in the OpenAPI document with session security', async () => {
    const doc = (await api(t.url, 'GET', '/openapi.json')).body;
    for (const p of [
      '/v1/me',
      '/v1/projects',
      '/v1/projects/{project_id}',
      '/v1/projects/{project_id}/keys',
      '/v1/projects/{project_id}/keys/{key_id}',
      '/v1/projects/{project_id}/signing-secret/rotate',
    ]) {
      assert.ok(doc.paths[p], p);
    }
    assert.deepEqual(doc.paths['/v1/projects'].post.security, [{ session: [] }]);
  });

  test('deleting a project stops its keys at once and hides it', async () => {
    const A = as(alice);
    const pid = (await A('POST', '/v1/projects', { name: 'Doomed' })).body.id;
    const sk = (await A('POST', `/v1/projects/${pid}/keys`, { kind: 'secret' })).body.key;
    assert.equal((await api(t.url, 'GET', '/v1/threads', { key: sk })).status, 200);
    assert.equal((await A('DELETE', `/v1/projects/${pid}`)).status, 204);
    assert.equal((await api(t.url, 'GET', '/v1/threads', { key: sk })).status, 401);
    assert.equal((await A('GET', `/v1/projects/${pid}`)).status, 404);
    assert.ok(!(await A('GET', '/v1/projects')).body.data.some((p: any) => p.id === pid));
  });
});
