import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import type { GroupStats } from '../src/modules/ingest/ingest-pipeline';
import { requestHash } from '../src/modules/idempotency/idempotency';
import { signUserId } from '../src/modules/keys/key-auth-service';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type TestContext } from './helpers/app';

/**
 * Appends carrying an Idempotency-Key merge into groups like any other append: their responses
 * are stored by one INSERT after the group's batch. These tests hold the only ingest lane
 * behind a row lock so that the requests queue up and commit as one group.
 */
describe('idempotent appends in groups', () => {
  let t: TestContext;
  let p: ProjectCredentials;
  let sk: string;
  let pk: string;
  let blocker: pg.Client;

  /** An end user of the publishable key, as the SDK sends it. */
  const asUser = (user: string, key: string, body: unknown) => ({
    key: pk,
    user,
    signature: signUserId(p.signing_secret, user),
    headers: { 'idempotency-key': key },
    body,
  });

  /** Holds the lane: an append to `hold` waits on the thread's row lock until `release`. */
  async function holdLane(thread: string) {
    await blocker.query('begin');
    await blocker.query(`select 1 from threads where project_id = $1 and id = $2 for update`, [p.project_id, thread]);
    const held = api(t.url, 'POST', `/v1/threads/${thread}/messages`, { key: sk, user: 'op', body: { body: 'held' } });
    await until(() => t.app.ingest.depth >= 1);
    return {
      held,
      release: async () => {
        await blocker.query('commit');
        assert.equal((await held).status, 201);
      },
    };
  }

  async function until(cond: () => boolean) {
    for (let i = 0; !cond(); i++) {
      assert.ok(i < 500, 'timed out waiting for the ingest queue');
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Group sizes, and the statements the app ran meanwhile. */
  function watchGroups() {
    const sizes: number[] = [];
    const sql: string[] = [];
    const onQuery = (q: { sql: string }) => sql.push(q.sql);
    t.db.on('query', onQuery);
    const unobserve = t.app.ingest.observe((s: GroupStats) => sizes.push(s.size));
    return {
      sizes,
      sql,
      stop: () => {
        unobserve();
        t.db.off('query', onQuery);
      },
    };
  }

  before(async () => {
    t = await startTestApp({ INGEST_CONCURRENCY: '1' });
    p = await t.project();
    sk = p.keys.secret;
    pk = p.keys.publishable;
    blocker = new pg.Client({ connectionString: t.databaseUrl });
    await blocker.connect();
    for (const id of ['hold', 'g1', 'g2', 'g3', 'race', 'twin'])
      assert.equal(
        (
          await api(t.url, 'POST', '/v1/threads', {
            key: sk,
            body: { id, type: 'group', members: ['ana', 'bo'], policies: { read: 'members', write: 'members' } },
          })
        ).status,
        201,
      );
  });
  after(async () => {
    await blocker.end();
    await t.stop();
  });

  test('keyed appends of publishable-key users commit in one transaction, their responses with them', async () => {
    const lane = await holdLane('hold');
    const groups = watchGroups();
    const sends = [
      ['g1', 'ana', 'k-1'],
      ['g2', 'bo', 'k-2'],
      ['g3', 'ana', 'k-3'],
      ['g1', 'bo', 'k-4'],
      ['g2', 'ana', 'k-5'],
    ].map(([thread, user, key]) =>
      api(t.url, 'POST', `/v1/threads/${thread}/messages`, asUser(user, key, { body: { text: key } })),
    );
    await until(() => t.app.ingest.depth >= 1 + sends.length);
    await lane.release();
    const rs = await Promise.all(sends);
    groups.stop();
    assert.deepEqual(
      rs.map((r) => r.status),
      rs.map(() => 201),
      rs.map((r) => r.text).join('\n'),
    );
    assert.deepEqual(groups.sizes, [1, 5], 'the held append, then the five keyed appends as one group');
    // Merged: no append ran alone in a savepoint, and one INSERT stored the five responses.
    assert.deepEqual(
      groups.sql.filter((q) => /^savepoint/i.test(q)),
      [],
    );
    assert.equal(groups.sql.filter((q) => /insert into idempotency_keys/i.test(q)).length, 1);
    // One transaction wrote every message and every stored response.
    const { rows } = await t.db.raw(
      `select xmin::text as tx from messages where project_id = ? and thread_id in ('g1', 'g2', 'g3')
       union all
       select xmin::text from idempotency_keys where project_id = ? and idem_key like 'k-%'`,
      [p.project_id, p.project_id],
    );
    assert.equal(rows.length, 10);
    assert.equal(new Set(rows.map((r: { tx: string }) => r.tx)).size, 1);
    // Each key replays its own first response; another body under it is still a 422.
    for (const [i, [thread, user, key]] of [
      ['g1', 'ana', 'k-1'],
      ['g2', 'bo', 'k-2'],
    ].entries()) {
      const again = await api(
        t.url,
        'POST',
        `/v1/threads/${thread}/messages`,
        asUser(user, key, { body: { text: key } }),
      );
      assert.equal(again.status, 201);
      assert.equal(again.headers.get('idempotent-replayed'), 'true');
      assert.deepEqual(again.body, rs[i].body);
      const other = await api(t.url, 'POST', `/v1/threads/${thread}/messages`, asUser(user, key, { body: 'other' }));
      assert.equal(other.status, 422);
    }
  });

  test('the same key sent concurrently into one group: one message, one request executes, the others replay it', async () => {
    const lane = await holdLane('hold');
    const groups = watchGroups();
    const sends = Array.from({ length: 6 }, () =>
      api(t.url, 'POST', '/v1/threads/race/messages', asUser('ana', 'same-key', { body: { text: 'once' } })),
    );
    const neighbour = api(t.url, 'POST', '/v1/threads/race/messages', asUser('bo', 'bo-key', { body: 'neighbour' }));
    await until(() => t.app.ingest.depth >= 8);
    await lane.release();
    const rs = await Promise.all(sends);
    const n = await neighbour;
    groups.stop();
    assert.deepEqual(groups.sizes, [1, 7]);
    assert.deepEqual(
      rs.map((r) => r.status),
      rs.map(() => 201),
      rs.map((r) => r.text).join('\n'),
    );
    assert.equal(new Set(rs.map((r) => r.body.id)).size, 1);
    assert.equal(rs.filter((r) => r.headers.get('idempotent-replayed') !== 'true').length, 1, 'exactly one wrote');
    assert.equal(n.status, 201);
    const { rows } = await t.db.raw(`select author, body from messages where project_id = ? and thread_id = 'race'`, [
      p.project_id,
    ]);
    assert.deepEqual(rows.map((r: { author: string }) => r.author).sort(), ['ana', 'bo']);
  });

  test('a key another request stored first, after the look-up: that append is not committed, it replays', async () => {
    const lane = await holdLane('hold');
    const groups = watchGroups();
    const body = { body: { text: 'late twin' } };
    const late = api(t.url, 'POST', '/v1/threads/twin/messages', asUser('ana', 'twin-key', body));
    const neighbour = api(t.url, 'POST', '/v1/threads/twin/messages', asUser('bo', 'bo-twin', { body: 'kept' }));
    await until(() => t.app.ingest.depth >= 3);
    // As if another replica's twin had committed while these waited in the queue.
    const stored = {
      id: 'from-elsewhere',
      thread_id: 'twin',
      author: 'ana',
      seq: 999,
      body: body.body,
      version: 1,
      created_at: new Date().toISOString(),
      edited_at: null,
      deleted: false,
      reactions: {},
      reply_to: null,
    };
    await t.db('idempotency_keys').insert({
      project_id: p.project_id,
      key_id: (await t.db('api_keys').first('id').where({ project_id: p.project_id, kind: 'publishable' })).id,
      user_id: 'ana',
      idem_key: 'twin-key',
      request_hash: requestHash('POST', '/v1/threads/twin/messages', body),
      status: 201,
      response: JSON.stringify(stored),
    });
    await lane.release();
    const [r, n] = await Promise.all([late, neighbour]);
    groups.stop();
    assert.deepEqual(groups.sizes, [1, 2]);
    assert.equal(r.status, 201, r.text);
    assert.equal(r.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(r.body, stored);
    assert.equal(n.status, 201);
    const { rows } = await t.db.raw(`select author from messages where project_id = ? and thread_id = 'twin'`, [
      p.project_id,
    ]);
    assert.deepEqual(
      rows.map((x: { author: string }) => x.author),
      ['bo'],
      'the late twin wrote nothing; its neighbour committed',
    );
  });
});
