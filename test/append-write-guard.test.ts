import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import type { GroupStats } from '../src/modules/ingest/ingest-pipeline';
import { signUserId } from '../src/modules/keys/key-auth-service';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type TestContext } from './helpers/app';

/**
 * End users' appends are authorized by the statement that writes them (the threads' write
 * rule as a guard of the seq UPDATE), so a group of them commits as one autocommit statement.
 * These tests hold the only ingest lane behind a row lock so that requests queue up and
 * commit as one group, and play another replica's membership change on a connection of their own.
 */
describe('end users appends authorized in the writing statement', () => {
  let t: TestContext;
  let p: ProjectCredentials;
  let sk: string;
  let blocker: pg.Client;

  const asUser = (user: string, body: unknown) => ({
    key: p.keys.publishable,
    user,
    signature: signUserId(p.signing_secret, user),
    body,
  });
  const post = (thread: string, opts: Parameters<typeof api>[3]) =>
    api(t.url, 'POST', `/v1/threads/${thread}/messages`, opts);

  async function until(cond: () => boolean | Promise<boolean>, what: string) {
    for (let i = 0; !(await cond()); i++) {
      assert.ok(i < 500, `timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Holds the lane: an append to `hold` waits on the thread's row lock until `release`. */
  async function holdLane() {
    await blocker.query('begin');
    await blocker.query(`select 1 from threads where project_id = $1 and id = 'hold' for update`, [p.project_id]);
    const held = post('hold', { key: sk, user: 'op', body: { body: 'held' } });
    await until(() => t.app.ingest.depth >= 1, 'the held append');
    return async () => {
      await blocker.query('commit');
      assert.equal((await held).status, 201);
    };
  }

  async function createThread(id: string, members: string[]) {
    const r = await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      body: { id, type: 'group', members, policies: { read: 'members', write: 'members' } },
    });
    assert.equal(r.status, 201, r.text);
  }

  async function log(thread: string) {
    return (await t
      .db('events')
      .select('seq', 'type', 'actor')
      .where({ project_id: p.project_id, thread_id: thread })
      .orderBy('seq')) as Array<{ seq: string; type: string; actor: string | null }>;
  }

  function assertGapless(events: Array<{ seq: string }>) {
    assert.deepEqual(
      events.map((e) => Number(e.seq)),
      events.map((_, i) => i + 1),
    );
  }

  /** As another replica would: `change` runs in a transaction that holds the thread's row lock. */
  async function otherReplicaChange(thread: string, change: (c: pg.Client, seq: number) => Promise<void>) {
    await blocker.query('begin');
    const { rows } = await blocker.query<{ last_seq: string }>(
      `update threads set last_seq = last_seq + 1 where project_id = $1 and id = $2 returning last_seq`,
      [p.project_id, thread],
    );
    await change(blocker, Number(rows[0].last_seq));
  }

  /** Backends of this database waiting on a lock. */
  async function lockWaiters(): Promise<number> {
    const { rows } = await t.db.raw(
      `select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`,
    );
    return rows[0].n as number;
  }

  before(async () => {
    t = await startTestApp({ INGEST_CONCURRENCY: '1' });
    p = await t.project();
    sk = p.keys.secret;
    blocker = new pg.Client({ connectionString: t.databaseUrl });
    await blocker.connect();
    await createThread('hold', ['op']);
  });
  after(async () => {
    await blocker.end();
    await t.stop();
  });

  test('a group of members appends is one statement, without a transaction', async () => {
    for (const id of ['one-a', 'one-b']) await createThread(id, ['ana', 'bo']);
    const release = await holdLane();
    const sizes: number[] = [];
    const sql: string[] = [];
    const onQuery = (q: { sql: string }) => sql.push(q.sql);
    t.db.on('query', onQuery);
    const unobserve = t.app.ingest.observe((s: GroupStats) => sizes.push(s.size));
    const sends = [
      post('one-a', asUser('ana', { body: 1 })),
      post('one-b', asUser('bo', { body: 2 })),
      post('one-a', asUser('bo', { body: 3 })),
    ];
    await until(() => t.app.ingest.depth >= 4, 'the queued appends');
    await release();
    const rs = await Promise.all(sends);
    t.db.off('query', onQuery);
    unobserve();
    assert.deepEqual(
      rs.map((r) => r.status),
      [201, 201, 201],
      rs.map((r) => r.text).join('\n'),
    );
    assert.deepEqual(sizes, [1, 3]);
    // The group after the held one: one statement, no BEGIN, no lock or membership query of its own.
    assert.equal(sql.filter((q) => /update threads/i.test(q)).length, 1, sql.join('\n---\n'));
    assert.deepEqual(
      sql.filter(
        (q) => !/webhook_deliveries/.test(q) && /^(begin|savepoint)|for (no key )?update|from thread_members/i.test(q),
      ),
      [],
    );
  });

  test('in one group: a removed member and a non-member get 403, a deleted thread 404, the rest commit', async () => {
    await createThread('mix-a', ['ana', 'bo']);
    await createThread('mix-b', ['ana']);
    await createThread('mix-gone', ['ana']);
    assert.equal(
      (await api(t.url, 'DELETE', '/v1/threads/mix-a/members/bo', { key: sk })).status,
      204,
      'bo removed before the group',
    );
    assert.equal((await api(t.url, 'DELETE', '/v1/threads/mix-gone', { key: sk })).status, 204);
    const release = await holdLane();
    const sends = [
      ['mix-a', post('mix-a', asUser('ana', { body: 'ana in a' })), 201],
      ['mix-a', post('mix-a', asUser('bo', { body: 'bo, removed' })), 403],
      ['mix-b', post('mix-b', asUser('cy', { body: 'cy, never a member' })), 403],
      ['mix-a', post('mix-a', { key: sk, user: 'op', body: { body: 'secret key in a' } }), 201],
      ['mix-b', post('mix-b', asUser('ana', { body: 'ana in b' })), 201],
      ['mix-gone', post('mix-gone', asUser('ana', { body: 'to a deleted thread' })), 404],
      ['mix-new', post('mix-new', asUser('ana', { body: 'creates its thread' })), 201],
    ] as const;
    await until(() => t.app.ingest.depth >= 1 + sends.length, 'the queued appends');
    await release();
    for (const [thread, sent, status] of sends) {
      const r = await sent;
      assert.equal(r.status, status, `${thread}: ${r.text}`);
      if (status === 403) {
        assert.match(r.headers.get('content-type') ?? '', /application\/problem\+json/);
        assert.match(r.body.detail, /is not allowed to write this thread/);
      }
    }
    const a = await log('mix-a');
    assertGapless(a);
    assert.deepEqual(
      a
        .filter((e) => e.type === 'message.created')
        .map((e) => e.actor)
        .sort(),
      ['ana', 'op'],
    );
    const b = await log('mix-b');
    assertGapless(b);
    assert.deepEqual(
      b.filter((e) => e.type === 'message.created').map((e) => e.actor),
      ['ana'],
    );
    assert.equal((await log('mix-gone')).filter((e) => e.type === 'message.created').length, 0);
  });

  test('a removal another replica commits while the append waits for the thread is seen: 403', async () => {
    await createThread('race-removed', ['ana', 'bo']);
    await otherReplicaChange('race-removed', async (c, seq) => {
      await c.query(
        `delete from thread_members where project_id = $1 and thread_id = 'race-removed' and user_id = 'bo'`,
        [p.project_id],
      );
      await c.query(
        `insert into events (project_id, thread_id, seq, type, actor, data)
         values ($1, 'race-removed', $2, 'member.removed', null, '{"user_id":"bo"}')`,
        [p.project_id, seq],
      );
    });
    // The append's statement reads the membership before the removal commits, then waits for its lock.
    const sent = post('race-removed', asUser('bo', { body: 'too late' }));
    await until(async () => (await lockWaiters()) >= 1, 'the append to wait for the thread');
    await blocker.query('commit');
    const r = await sent;
    assert.equal(r.status, 403, r.text);
    const events = await log('race-removed');
    assertGapless(events);
    assert.equal(events.filter((e) => e.type === 'message.created').length, 0);
  });

  test('a thread another replica changed meanwhile is decided again, alone: a member still writes', async () => {
    await createThread('race-bumped', ['ana']);
    await otherReplicaChange('race-bumped', async (c, seq) => {
      await c.query(
        `insert into events (project_id, thread_id, seq, type, actor, data)
         values ($1, 'race-bumped', $2, 'message.created', 'op', '{"id":"elsewhere","body":null,"reply_to":null}')`,
        [p.project_id, seq],
      );
    });
    const sent = post('race-bumped', asUser('ana', { body: 'after the other write' }));
    await until(async () => (await lockWaiters()) >= 1, 'the append to wait for the thread');
    await blocker.query('commit');
    const r = await sent;
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.seq, Number((await log('race-bumped')).at(-1)!.seq));
    assertGapless(await log('race-bumped'));
  });

  test('a member added by another replica while the append waits is seen: 201', async () => {
    await createThread('race-added', ['ana']);
    await otherReplicaChange('race-added', async (c, seq) => {
      await c.query(
        `insert into thread_members (project_id, thread_id, user_id, role) values ($1, 'race-added', 'dee', 'member')`,
        [p.project_id],
      );
      await c.query(
        `insert into events (project_id, thread_id, seq, type, actor, data)
         values ($1, 'race-added', $2, 'member.added', null, '{"user_id":"dee","role":"member"}')`,
        [p.project_id, seq],
      );
    });
    const sent = post('race-added', asUser('dee', { body: 'just added' }));
    await until(async () => (await lockWaiters()) >= 1, 'the append to wait for the thread');
    await blocker.query('commit');
    const r = await sent;
    assert.equal(r.status, 201, r.text);
    assertGapless(await log('race-added'));
  });
});
