import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { api, startTestApp, type TestContext } from './helpers/app';
import { signInThroughProvider, startOAuthProvider } from './helpers/oauth-provider';

describe('project settings that nothing enforces are refused, never silently stored', () => {
  let provider: Awaited<ReturnType<typeof startOAuthProvider>>;
  let t: TestContext;
  let token: string;
  const A = (method: string, path: string, body?: unknown) =>
    api(t.url, method, path, { body, headers: { authorization: `Bearer ${token}` } });

  before(async () => {
    provider = await startOAuthProvider();
    t = await startTestApp(provider.env);
    provider.signInAs({ sub: 'g-ops', name: 'Ops', email: 'ops@example.com' });
    token = (await signInThroughProvider(t.url)).cookies.pdb_session;
  });
  after(async () => {
    await t.stop();
    await provider.stop();
  });

  test('PATCH with a legacy settings.webhooks URL answers 422 naming the webhooks endpoints, and stores nothing', async () => {
    const pid = (await A('POST', '/v1/projects', { name: 'p' })).body.id;
    const r = await A('PATCH', `/v1/projects/${pid}`, {
      settings: { retention_days: 7, webhooks: [{ url: 'http://169.254.169.254/' }] },
    });
    assert.equal(r.status, 422, r.text);
    assert.match(r.headers.get('content-type') ?? '', /problem\+json/);
    assert.match(r.body.detail, /webhooks have their own endpoints/);
    assert.deepEqual(
      r.body.errors.map((e: { path: string }) => e.path),
      ['settings.webhooks'],
    );
    const after = await A('GET', `/v1/projects/${pid}`);
    assert.deepEqual(after.body.settings, {}, 'nothing of the refused request was saved');
  });

  test('max_message_bytes (never read: the server-wide limit applies) is refused on create and on update', async () => {
    const created = await A('POST', '/v1/projects', { name: 'q', settings: { max_message_bytes: 100 } });
    assert.equal(created.status, 422, created.text);
    assert.match(created.body.detail, /MAX_MESSAGE_BYTES/);
    const pid = (await A('POST', '/v1/projects', { name: 'q' })).body.id;
    const r = await A('PATCH', `/v1/projects/${pid}`, { settings: { max_message_bytes: 100 } });
    assert.equal(r.status, 422, r.text);
  });

  test('enforced settings still save; a refused key stored by an older version does not void the others', async () => {
    const pid = (await A('POST', '/v1/projects', { name: 'r' })).body.id;
    const saved = await A('PATCH', `/v1/projects/${pid}`, { settings: { ip_allowlist: ['198.51.100.0/24'] } });
    assert.equal(saved.status, 200, saved.text);
    const c = new pg.Client({ connectionString: t.databaseUrl });
    await c.connect();
    try {
      await c.query(
        `update projects set settings = settings || '{"webhooks":[{"url":"https://x.example"}]}' where id = $1`,
        [pid],
      );
    } finally {
      await c.end();
    }
    const r = await A('PATCH', `/v1/projects/${pid}`, { settings: { retention_days: 30 } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.settings, { ip_allowlist: ['198.51.100.0/24'], retention_days: 30 });
  });

  test('the console offers no field for a refused setting', async () => {
    const html = await (await fetch(`${t.url}/console/`)).text();
    const js = await (await fetch(`${t.url}/console/console.js`)).text();
    for (const text of [html, js]) {
      assert.doesNotMatch(text, /max_message_bytes|settings\.webhooks|webhooks:\s*\[/);
    }
  });
});
