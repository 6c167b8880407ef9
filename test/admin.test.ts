import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { api, startTestApp, type TestContext } from './helpers/app';

describe('project admin routes', () => {
  let t: TestContext;
  before(async () => {
    t = await startTestApp();
  });
  after(() => t.stop());

  test('stats count only the admin key’s own project', async () => {
    const a = await t.project('a');
    const b = await t.project('b');
    await api(t.url, 'POST', '/v1/threads/t1/messages/batch', {
      key: a.keys.secret,
      body: {
        messages: [
          { body: 1, author: 'u' },
          { body: 2, author: 'u' },
          { id: 'x', body: 3, author: 'u' },
        ],
      },
    });
    await api(t.url, 'DELETE', '/v1/threads/t1/messages/x', { key: a.keys.secret });
    await api(t.url, 'POST', '/v1/threads/other/messages', { key: b.keys.secret, body: { body: 'b', author: 'v' } });
    const stats = await api(t.url, 'GET', '/v1/admin/stats', { key: a.keys.admin });
    assert.equal(stats.status, 200, stats.text);
    assert.equal(stats.body.project_id, a.project_id);
    assert.deepEqual(stats.body.threads, { live: 1, deleted: 0 });
    assert.deepEqual(stats.body.messages, { total: 3, deleted: 1 });
    assert.equal(stats.body.events, 5); // thread.created, 3 × message.created, message.deleted
    assert.deepEqual(stats.body.keys, { live: 3, revoked: 0 });
  });

  test('refuses secret and publishable keys on admin routes', async () => {
    const a = await t.project();
    const r = await api(t.url, 'GET', '/v1/admin/stats', { key: a.keys.secret });
    assert.equal(r.status, 403);
    assert.equal(r.headers.get('content-type'), 'application/problem+json; charset=utf-8');
  });
});
