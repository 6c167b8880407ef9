import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type TestContext } from './helpers/app';

describe('idempotent edits and deletes (Idempotency-Key, If-Match)', () => {
  let t: TestContext;
  let creds: ProjectCredentials;
  const req = (method: string, path: string, opts: { body?: unknown; headers?: Record<string, string> } = {}) =>
    api(t.url, method, path, { key: creds.keys.secret, user: 'ann', ...opts });
  const post = async (thread: string, id: string) => {
    const r = await req('POST', `/v1/threads/${thread}/messages`, { body: { id, body: { text: 'v1' } } });
    assert.equal(r.status, 201, r.text);
  };
  const versions = async (thread: string, id: string) =>
    (await req('GET', `/v1/threads/${thread}/messages/${id}/versions`)).body.data as any[];

  before(async () => {
    t = await startTestApp();
    creds = await t.project();
  });
  after(() => t.stop());

  test('a retried edit with the same Idempotency-Key answers the first result and appends one version', async () => {
    await post('idem', 'e1');
    const edit = () =>
      req('PATCH', '/v1/threads/idem/messages/e1', {
        body: { body: { text: 'v2' } },
        headers: { 'idempotency-key': 'edit-1' },
      });
    const first = await edit();
    assert.equal(first.status, 200, first.text);
    assert.equal(first.body.version, 2);
    assert.equal(first.headers.get('etag'), '"2"');
    const retried = await Promise.all([edit(), edit()]);
    for (const r of retried) {
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.body, first.body);
      assert.equal(r.headers.get('idempotent-replayed'), 'true');
    }
    assert.equal((await versions('idem', 'e1')).length, 2);
    // The same key for another change is refused.
    const other = await req('PATCH', '/v1/threads/idem/messages/e1', {
      body: { body: { text: 'v3' } },
      headers: { 'idempotency-key': 'edit-1' },
    });
    assert.equal(other.status, 422, other.text);
  });

  test('concurrent first edits with one key write one version', async () => {
    await post('idem', 'e2');
    const answers = await Promise.all(
      Array.from({ length: 6 }, () =>
        req('PATCH', '/v1/threads/idem/messages/e2', {
          body: { body: { text: 'once' } },
          headers: { 'idempotency-key': 'edit-2' },
        }),
      ),
    );
    for (const r of answers) assert.equal(r.status, 200, r.text);
    assert.equal(new Set(answers.map((r) => r.body.version)).size, 1);
    assert.equal((await versions('idem', 'e2')).length, 2);
  });

  test('a retried delete answers what the first answered instead of 409', async () => {
    await post('idem', 'd1');
    const del = () => req('DELETE', '/v1/threads/idem/messages/d1', { headers: { 'idempotency-key': 'del-1' } });
    const first = await del();
    assert.equal(first.status, 200, first.text);
    assert.equal(first.body.deleted, true);
    const again = await del();
    assert.equal(again.status, 200, again.text);
    assert.deepEqual(again.body, first.body);
    // Without the key a second delete is still the conflict it always was.
    assert.equal((await req('DELETE', '/v1/threads/idem/messages/d1')).status, 409);
    assert.equal((await versions('idem', 'd1')).length, 2);
  });

  test('If-Match with the message version: 412 problem on a mismatch, nothing written', async () => {
    await post('idem', 'm1');
    const stale = await req('PATCH', '/v1/threads/idem/messages/m1', {
      body: { body: { text: 'x' } },
      headers: { 'if-match': '"7"' },
    });
    assert.equal(stale.status, 412, stale.text);
    assert.match(stale.headers.get('content-type') ?? '', /problem\+json/);
    assert.equal(stale.body.current_version, 1);
    const ok = await req('PATCH', '/v1/threads/idem/messages/m1', {
      body: { body: { text: 'v2' } },
      headers: { 'if-match': '"1"' },
    });
    assert.equal(ok.status, 200, ok.text);
    // A second writer who read version 1 loses instead of overwriting.
    const lost = await req('PATCH', '/v1/threads/idem/messages/m1', {
      body: { body: { text: 'other' } },
      headers: { 'if-match': '1' },
    });
    assert.equal(lost.status, 412);
    const delStale = await req('DELETE', '/v1/threads/idem/messages/m1', { headers: { 'if-match': '"1"' } });
    assert.equal(delStale.status, 412);
    const del = await req('DELETE', '/v1/threads/idem/messages/m1', { headers: { 'if-match': 'W/"2"' } });
    assert.equal(del.status, 200, del.text);
    assert.equal((await versions('idem', 'm1')).length, 3);
    const bad = await req('PATCH', '/v1/threads/idem/messages/m1', {
      body: { body: { text: 'x' } },
      headers: { 'if-match': 'banana' },
    });
    assert.equal(bad.status, 400);
  });

  test('the OpenAPI document lists Idempotency-Key and If-Match on PATCH and DELETE', async () => {
    const doc = (await api(t.url, 'GET', '/openapi.json')).body;
    const item = doc.paths['/v1/threads/{thread_id}/messages/{message_id}'];
    for (const method of ['patch', 'delete']) {
      const names = (item[method].parameters as any[])
        .filter((p) => p.in === 'header')
        .map((p) => (p.name as string).toLowerCase());
      for (const h of ['idempotency-key', 'if-match']) assert.ok(names.includes(h), `${method} documents ${h}`);
      assert.ok(item[method].responses['412'], `${method} documents 412`);
    }
  });
});
