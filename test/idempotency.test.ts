import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type TestContext } from './helpers/app';

describe('idempotent writes', () => {
  let t: TestContext;
  let p: ProjectCredentials;
  let sk: string;
  const count = async (table: string, threadId: string) => {
    const { rows } = await t.db.raw(`select count(*)::int as n from ${table} where project_id = ? and thread_id = ?`, [
      p.project_id,
      threadId,
    ]);
    return rows[0].n as number;
  };

  before(async () => {
    t = await startTestApp();
    p = await t.project();
    sk = p.keys.secret;
  });
  after(() => t.stop());

  test('a retry with the same client message id and body returns the first message, marked Idempotent-Replayed', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'cid', type: 'group' } });
    const first = await api(t.url, 'POST', '/v1/threads/cid/messages', {
      key: sk,
      user: 'u',
      body: { id: 'c1', body: { text: 'once', n: [1, 2] } },
    });
    assert.equal(first.status, 201);
    assert.equal(first.headers.get('idempotent-replayed'), null);
    // Same JSON with keys in another order is the same body.
    const retry = await api(t.url, 'POST', '/v1/threads/cid/messages', {
      key: sk,
      user: 'u',
      raw: '{"body": {"n": [1, 2], "text": "once"}, "id": "c1"}',
    });
    assert.equal(retry.status, 201);
    assert.equal(retry.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(retry.body, first.body);
    assert.equal(await count('messages', 'cid'), 1);
    assert.equal(await count('events', 'cid'), 2);
  });

  test('the same client message id with a different body, or another author, is a 409 and writes nothing', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'cid2', type: 'group' } });
    await api(t.url, 'POST', '/v1/threads/cid2/messages', { key: sk, user: 'u', body: { id: 'c1', body: 'first' } });
    const other = await api(t.url, 'POST', '/v1/threads/cid2/messages', {
      key: sk,
      user: 'u',
      body: { id: 'c1', body: 'second' },
    });
    assert.equal(other.status, 409);
    assert.equal(other.headers.get('content-type'), 'application/problem+json; charset=utf-8');
    const otherAuthor = await api(t.url, 'POST', '/v1/threads/cid2/messages', {
      key: sk,
      user: 'v',
      body: { id: 'c1', body: 'first' },
    });
    assert.equal(otherAuthor.status, 409);
    assert.equal(await count('events', 'cid2'), 2);
    // The id stays taken after an edit and after a delete: a late retry never writes a second message.
    await api(t.url, 'PATCH', '/v1/threads/cid2/messages/c1', { key: sk, user: 'u', body: { body: 'edited' } });
    const afterEdit = await api(t.url, 'POST', '/v1/threads/cid2/messages', {
      key: sk,
      user: 'u',
      body: { id: 'c1', body: 'first' },
    });
    assert.equal(afterEdit.status, 201);
    assert.equal(afterEdit.headers.get('idempotent-replayed'), 'true');
    await api(t.url, 'DELETE', '/v1/threads/cid2/messages/c1', { key: sk, user: 'u' });
    const afterDelete = await api(t.url, 'POST', '/v1/threads/cid2/messages', {
      key: sk,
      user: 'u',
      body: { id: 'c1', body: 'edited' },
    });
    assert.equal(afterDelete.status, 409, 'content of a later version is not the request that created the message');
    assert.equal(await count('messages', 'cid2'), 1);
    assert.equal(await count('events', 'cid2'), 4, 'created, created, edited, deleted');
  });

  test('a retry after the message was edited or deleted still replays the first response; other content is still 409', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'cid-edit', type: 'group' } });
    const first = await api(t.url, 'POST', '/v1/threads/cid-edit/messages', {
      key: sk,
      user: 'u',
      body: { id: 'e1', body: { text: 'v1' } },
    });
    assert.equal(first.status, 201);
    await api(t.url, 'PATCH', '/v1/threads/cid-edit/messages/e1', {
      key: sk,
      user: 'u',
      body: { body: { text: 'v2' } },
    });
    const retry = await api(t.url, 'POST', '/v1/threads/cid-edit/messages', {
      key: sk,
      user: 'u',
      body: { id: 'e1', body: { text: 'v1' } },
    });
    assert.equal(retry.status, 201);
    assert.equal(retry.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(retry.body, first.body);
    const editedContent = await api(t.url, 'POST', '/v1/threads/cid-edit/messages', {
      key: sk,
      user: 'u',
      body: { id: 'e1', body: { text: 'v2' } },
    });
    assert.equal(editedContent.status, 409);
    await api(t.url, 'DELETE', '/v1/threads/cid-edit/messages/e1', { key: sk });
    const afterDelete = await api(t.url, 'POST', '/v1/threads/cid-edit/messages', {
      key: sk,
      user: 'u',
      body: { id: 'e1', body: { text: 'v1' } },
    });
    assert.deepEqual(afterDelete.body, first.body);
    assert.equal(await count('events', 'cid-edit'), 4, 'created, message.created, edited, deleted');
  });

  test('a batch retried with the same client ids returns the same messages and writes nothing new', async () => {
    const batch = { messages: Array.from({ length: 5 }, (_, i) => ({ id: `b${i}`, body: { i } })) };
    const first = await api(t.url, 'POST', '/v1/threads/cid-batch/messages/batch', { key: sk, user: 'u', body: batch });
    assert.equal(first.status, 201, first.text);
    const retry = await api(t.url, 'POST', '/v1/threads/cid-batch/messages/batch', { key: sk, user: 'u', body: batch });
    assert.equal(retry.status, 201);
    assert.equal(retry.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(retry.body, first.body);
    // A batch that repeats two known ids and adds one new message appends only the new one.
    const mixed = await api(t.url, 'POST', '/v1/threads/cid-batch/messages/batch', {
      key: sk,
      user: 'u',
      body: { messages: [batch.messages[0], { id: 'b-new', body: 'new' }, batch.messages[4]] },
    });
    assert.equal(mixed.status, 201);
    assert.equal(mixed.headers.get('idempotent-replayed'), null);
    assert.deepEqual(
      mixed.body.data.map((m: any) => m.seq),
      [first.body.data[0].seq, first.body.data[4].seq + 1, first.body.data[4].seq],
    );
    assert.equal(await count('messages', 'cid-batch'), 6);
  });

  test('concurrent duplicates with the same client message id create one message', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'cid-race', type: 'group' } });
    const rs = await Promise.all(
      Array.from({ length: 12 }, () =>
        api(t.url, 'POST', '/v1/threads/cid-race/messages', { key: sk, user: 'u', body: { id: 'dup', body: 'same' } }),
      ),
    );
    assert.deepEqual(new Set(rs.map((r) => r.status)), new Set([201]));
    assert.equal(new Set(rs.map((r) => r.body.seq)).size, 1);
    assert.equal(await count('messages', 'cid-race'), 1);
  });

  test('Idempotency-Key on POST /v1/threads replays the first response; the same key with another body is 422', async () => {
    const headers = { 'idempotency-key': 'create-thread-1' };
    const first = await api(t.url, 'POST', '/v1/threads', { key: sk, headers, body: { type: 'group', title: 'Idem' } });
    assert.equal(first.status, 201);
    const retry = await api(t.url, 'POST', '/v1/threads', { key: sk, headers, body: { type: 'group', title: 'Idem' } });
    assert.equal(retry.status, 201);
    assert.equal(retry.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(retry.body, first.body, 'the generated id is the same');
    const { rows } = await t.db.raw(`select count(*)::int as n from threads where project_id = ? and title = 'Idem'`, [
      p.project_id,
    ]);
    assert.equal(rows[0].n, 1);
    const different = await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      headers,
      body: { type: 'group', title: 'Other' },
    });
    assert.equal(different.status, 422);
    assert.equal(different.headers.get('content-type'), 'application/problem+json; charset=utf-8');
    // Another key of the same project has its own key space.
    const other = await t.app.projects.createKey(p.project_id, 'secret');
    const fromOther = await api(t.url, 'POST', '/v1/threads', {
      key: other.key,
      headers,
      body: { type: 'group', title: 'Other' },
    });
    assert.equal(fromOther.status, 201);
    assert.notEqual(fromOther.body.id, first.body.id);
  });

  test('Idempotency-Key on POST …/messages replays the first response; another body is 422', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'ik', type: 'group' } });
    const headers = { 'idempotency-key': 'msg-1' };
    const first = await api(t.url, 'POST', '/v1/threads/ik/messages', {
      key: sk,
      user: 'u',
      headers,
      body: { body: 'generated id' },
    });
    assert.equal(first.status, 201);
    const retry = await api(t.url, 'POST', '/v1/threads/ik/messages', {
      key: sk,
      user: 'u',
      headers,
      body: { body: 'generated id' },
    });
    assert.equal(retry.status, 201);
    assert.equal(retry.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(retry.body, first.body);
    assert.equal(await count('messages', 'ik'), 1);
    const different = await api(t.url, 'POST', '/v1/threads/ik/messages', {
      key: sk,
      user: 'u',
      headers,
      body: { body: 'something else' },
    });
    assert.equal(different.status, 422);
    const otherThread = await api(t.url, 'POST', '/v1/threads/ik-2/messages', {
      key: sk,
      user: 'u',
      headers,
      body: { body: 'generated id' },
    });
    assert.equal(otherThread.status, 422, 'a key names one request: the same key on another thread is another request');
    assert.equal(await count('messages', 'ik'), 1);
  });

  test('Idempotency-Key on POST …/messages/batch replays the first response', async () => {
    const headers = { 'idempotency-key': 'batch-1' };
    const body = { messages: [{ body: 1 }, { body: 2 }, { body: 3 }] };
    const first = await api(t.url, 'POST', '/v1/threads/ikb/messages/batch', { key: sk, user: 'u', headers, body });
    assert.equal(first.status, 201, first.text);
    const retry = await api(t.url, 'POST', '/v1/threads/ikb/messages/batch', { key: sk, user: 'u', headers, body });
    assert.equal(retry.status, 201);
    assert.equal(retry.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(retry.body, first.body);
    assert.equal(await count('messages', 'ikb'), 3);
    const different = await api(t.url, 'POST', '/v1/threads/ikb/messages/batch', {
      key: sk,
      user: 'u',
      headers,
      body: { messages: [{ body: 4 }] },
    });
    assert.equal(different.status, 422);
  });

  test('concurrent duplicates with the same Idempotency-Key create one message and all get the same answer', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'ik-race', type: 'group' } });
    const headers = { 'idempotency-key': 'race-key' };
    const rs = await Promise.all(
      Array.from({ length: 12 }, () =>
        api(t.url, 'POST', '/v1/threads/ik-race/messages', {
          key: sk,
          user: 'u',
          headers,
          body: { body: 'only once' },
        }),
      ),
    );
    assert.deepEqual(
      rs.map((r) => r.status),
      rs.map(() => 201),
      rs.map((r) => r.text).join('\n'),
    );
    assert.equal(new Set(rs.map((r) => r.body.id)).size, 1);
    assert.equal(await count('messages', 'ik-race'), 1);
    assert.equal(
      rs.filter((r) => r.headers.get('idempotent-replayed') !== 'true').length,
      1,
      'exactly one request wrote',
    );
  });

  test('concurrent duplicates with the same Idempotency-Key on POST /v1/threads create one thread', async () => {
    const headers = { 'idempotency-key': 'thread-race' };
    const rs = await Promise.all(
      Array.from({ length: 8 }, () =>
        api(t.url, 'POST', '/v1/threads', { key: sk, headers, body: { type: 'channel', title: 'race' } }),
      ),
    );
    assert.deepEqual(new Set(rs.map((r) => r.status)), new Set([201]), rs.map((r) => r.text).join('\n'));
    assert.equal(new Set(rs.map((r) => r.body.id)).size, 1);
    const { rows } = await t.db.raw(`select count(*)::int as n from threads where project_id = ? and title = 'race'`, [
      p.project_id,
    ]);
    assert.equal(rows[0].n, 1);
  });

  test('a failed request does not burn its Idempotency-Key', async () => {
    const headers = { 'idempotency-key': 'after-failure' };
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'ik-taken', type: 'group' } });
    const failed = await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      headers,
      body: { id: 'ik-taken', type: 'group' },
    });
    assert.equal(failed.status, 409);
    const { rows } = await t.db.raw(
      `select count(*)::int as n from idempotency_keys where project_id = ? and idem_key = 'after-failure'`,
      [p.project_id],
    );
    assert.equal(rows[0].n, 0);
  });
});
