import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type TestContext } from './helpers/app';

describe('append-only storage, enforced by the database', () => {
  let t: TestContext;
  let p: ProjectCredentials;
  const snapshot = async () => {
    const events = await t.db('events').where({ project_id: p.project_id }).orderBy(['thread_id', 'seq']);
    const messages = await t.db('messages').where({ project_id: p.project_id }).orderBy(['thread_id', 'seq']);
    return JSON.stringify({ events, messages });
  };
  /** Runs SQL directly (as the service's own database user would) and returns the error it raised. */
  const refused = async (sql: string, bindings: unknown[] = []) => {
    try {
      await t.db.raw(sql, bindings as never);
    } catch (e) {
      return e as Error & { code?: string };
    }
    assert.fail(`expected the database to refuse: ${sql}`);
  };

  before(async () => {
    t = await startTestApp();
    p = await t.project();
    const sk = p.keys.secret;
    await api(t.url, 'POST', '/v1/threads', { key: sk, user: 'u', body: { id: 'log', type: 'group' } });
    await api(t.url, 'POST', '/v1/threads/log/messages', {
      key: sk,
      user: 'u',
      body: { id: 'm1', body: { text: 'v1' } },
    });
    await api(t.url, 'PATCH', '/v1/threads/log/messages/m1', { key: sk, user: 'u', body: { body: { text: 'v2' } } });
  });
  after(() => t.stop());

  test('UPDATE, DELETE and TRUNCATE on events are rejected by the trigger', async () => {
    const before = await snapshot();
    for (const sql of [
      `update events set data = '{"text":"rewritten"}'::jsonb where project_id = ?`,
      `update events set seq = seq + 100 where project_id = ?`,
      `delete from events where project_id = ?`,
      `delete from events where project_id = ? and seq = 1`,
    ]) {
      const e = await refused(sql, [p.project_id]);
      assert.match(e.message, /events is append-only/, sql);
      assert.equal(e.code, 'P0001', sql);
    }
    const e = await refused('truncate events');
    assert.match(e.message, /events is append-only: TRUNCATE/);
    const cascade = await refused('truncate events cascade');
    assert.match(cascade.message, /append-only/);
    assert.equal(await snapshot(), before);
  });

  test('DELETE and TRUNCATE on messages are rejected by the trigger', async () => {
    const before = await snapshot();
    const e = await refused('delete from messages where project_id = ?', [p.project_id]);
    assert.match(e.message, /messages is append-only: DELETE/);
    assert.match((await refused('truncate messages')).message, /messages is append-only: TRUNCATE/);
    assert.equal(await snapshot(), before);
  });

  test('message_versions (a view over events) refuses UPDATE and DELETE', async () => {
    const before = await snapshot();
    const versions = await t
      .db('message_versions')
      .where({ project_id: p.project_id, message_id: 'm1' })
      .orderBy('seq');
    assert.deepEqual(
      versions.map((v) => v.body.text),
      ['v1', 'v2'],
    );
    for (const sql of [
      `update message_versions set actor = 'mallory' where project_id = ?`,
      `delete from message_versions where project_id = ?`,
    ]) {
      const e = await refused(sql, [p.project_id]);
      assert.match(e.message, /append-only/, sql);
    }
    const computed = await refused(`update message_versions set body = '"x"'::jsonb where project_id = ?`, [
      p.project_id,
    ]);
    assert.ok(computed.message.length > 0, 'a computed column of the view is not writable either');
    assert.equal(await snapshot(), before);
  });

  test('the refusals hold inside a transaction and leave the log intact', async () => {
    const before = await snapshot();
    await assert.rejects(
      t.db.transaction(async (tx) => {
        await tx('events').insert({
          project_id: p.project_id,
          thread_id: 'log',
          seq: 999,
          type: 'message.created',
          data: '{}',
        });
        await tx('events').where({ project_id: p.project_id, thread_id: 'log', seq: 999 }).del();
      }),
      /append-only/,
    );
    assert.equal(await snapshot(), before);
  });

  test('a duplicate seq cannot be inserted into a thread log', async () => {
    const e = await refused(
      `insert into events (project_id, thread_id, seq, type) values (?, 'log', 1, 'thread.updated')`,
      [p.project_id],
    );
    assert.equal(e.code, '23505');
  });

  test('edits and deletes through the API only append', async () => {
    const sk = p.keys.secret;
    const seqsBefore = (
      await t.db('events').select('seq').where({ project_id: p.project_id, thread_id: 'log' }).orderBy('seq')
    ).map((r) => r.seq);
    await api(t.url, 'POST', '/v1/threads/log/messages', { key: sk, user: 'u', body: { id: 'm2', body: 'x' } });
    await api(t.url, 'PATCH', '/v1/threads/log/messages/m2', { key: sk, user: 'u', body: { body: 'y' } });
    const del = await api(t.url, 'DELETE', '/v1/threads/log/messages/m2', { key: sk, user: 'u' });
    assert.equal(del.status, 200);
    const seqsAfter = (
      await t.db('events').select('seq').where({ project_id: p.project_id, thread_id: 'log' }).orderBy('seq')
    ).map((r) => r.seq);
    assert.deepEqual(seqsAfter.slice(0, seqsBefore.length), seqsBefore);
    assert.equal(seqsAfter.length, seqsBefore.length + 3);
    const stored = await t.db('messages').first('*').where({ project_id: p.project_id, thread_id: 'log', id: 'm2' });
    assert.equal(stored.deleted, true, 'the current-state row is kept as a tombstone');
  });
});
