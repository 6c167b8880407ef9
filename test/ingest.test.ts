import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { type AppError } from '../src/lib/errors';
import type { ApiPrincipal } from '../src/lib/http/route';
import type { GroupStats } from '../src/modules/ingest/ingest-pipeline';
import { knexTransactionRunner } from '../src/modules/ingest/transaction-runner';
import { commitScope } from '../src/modules/thread-log/thread-log';
import { api, startInstance, startTestApp, type TestContext } from './helpers/app';

/** A secret-key principal: its appends are submitted synchronously, so calls in one tick share a group. */
function secretPrincipal(projectId: string, keyId = 'test-key'): ApiPrincipal {
  return { type: 'api', projectId, keyId, kind: 'secret', userId: 'alice', settings: {} };
}

function watchGroups(t: { app: { ingest: { observe(o: (s: GroupStats) => void): unknown } } }) {
  const sizes: number[] = [];
  t.app.ingest.observe((s) => sizes.push(s.size));
  return sizes;
}

const settle = <T>(ps: Array<Promise<T>>) => Promise.allSettled(ps);

describe('ingest pipeline', () => {
  let t: TestContext;
  let sk: string;
  let projectId: string;
  before(async () => {
    // One lane so that writes to different threads share groups too.
    t = await startTestApp({ INGEST_CONCURRENCY: '1' });
    const p = await t.project();
    sk = p.keys.secret;
    projectId = p.project_id;
  });
  after(() => t.stop());

  test('a conflicting client id and an append to a deleted thread fail alone; their group neighbours commit', async () => {
    for (const id of ['iso-a', 'iso-b', 'iso-gone']) {
      assert.equal((await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id, type: 'group' } })).status, 201);
    }
    assert.equal(
      (
        await api(t.url, 'POST', '/v1/threads/iso-b/messages', {
          key: sk,
          user: 'alice',
          body: { id: 'taken', body: { v: 1 } },
        })
      ).status,
      201,
    );
    assert.equal((await api(t.url, 'DELETE', '/v1/threads/iso-gone', { key: sk })).status < 300, true);

    const groups = watchGroups(t);
    const who = secretPrincipal(projectId);
    const m = t.app.messages;
    // All submitted in this tick: one group.
    const results = await settle([
      m.append(who, 'iso-a', [{ body: { n: 1 } }]),
      m.append(who, 'iso-b', [{ id: 'taken', body: { v: 2 } }]), // same id, other content: 409
      m.append(who, 'iso-a', [{ body: { n: 2 } }]),
      m.append(who, 'iso-gone', [{ body: { n: 3 } }]), // deleted thread: 404
      m.append(who, 'iso-b', [{ id: 'fresh', body: { n: 4 } }]),
      m.append(who, 'iso-a', [{ id: 'twin', body: { n: 5 } }]),
      m.append(who, 'iso-a', [{ id: 'twin', body: { n: 6 } }]), // same id twice in one group, other content: 409
      m.append(who, 'iso-b', [{ id: 'taken', body: { v: 1 } }]), // identical retry: replay, not an error
    ]);
    // One autocommit statement for the seven merged appends; the append to the deleted thread,
    // sent back by it, then alone in a transaction of its own.
    assert.deepEqual(groups, [7, 1], 'the eight appends were committed in one group and its sent-back item');

    const status = results.map((r) => (r.status === 'fulfilled' ? 'ok' : (r.reason as AppError).kind));
    assert.deepEqual(status, ['ok', 'conflict', 'ok', 'not_found', 'ok', 'ok', 'conflict', 'ok']);
    const ok = results.map((r) =>
      r.status === 'fulfilled'
        ? (r.value as { messages: Array<{ seq: number; id: string }>; existed: boolean[] })
        : null,
    );
    assert.deepEqual(ok[7]!.existed, [true]);

    const { rows } = await t.db.raw(
      `select thread_id, id, seq, body from messages where project_id = ? and thread_id in ('iso-a','iso-b','iso-gone') order by thread_id, seq`,
      [projectId],
    );
    assert.deepEqual(
      rows.map((r: any) => [r.thread_id, r.seq, r.body]),
      [
        ['iso-a', 2, { n: 1 }],
        ['iso-a', 3, { n: 2 }],
        ['iso-a', 4, { n: 5 }],
        ['iso-b', 2, { v: 1 }],
        ['iso-b', 3, { n: 4 }],
      ],
    );
    // Acknowledged results match what was stored.
    assert.deepEqual(
      [ok[0], ok[2], ok[5]].map((r) => r!.messages[0].seq),
      [2, 3, 4],
    );
    assert.equal(ok[4]!.messages[0].seq, 3);
  });

  test('within a thread, seq order is submission order, across groups and mixed kinds of write', async () => {
    assert.equal(
      (await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'order-1', type: 'group' } })).status,
      201,
    );
    const first = await api(t.url, 'POST', '/v1/threads/order-1/messages', {
      key: sk,
      user: 'alice',
      body: { id: 'edit-me', body: { n: -1 } },
    });
    assert.equal(first.status, 201);
    const groups = watchGroups(t);
    const who = secretPrincipal(projectId);
    const m = t.app.messages;
    const writes: Array<Promise<{ seq: number }>> = [];
    const expectSeqOf: Array<Promise<number>> = [];
    for (let i = 0; i < 60; i++) {
      if (i % 10 === 5) {
        // An edit between appends must take the seq between theirs (it appends message.edited).
        writes.push(m.edit(who, 'order-1', 'edit-me', { n: i }).then(() => ({ seq: -1 })));
        continue;
      }
      // 'order-2' does not exist yet: the first append creates it on the slow path.
      const thread = i % 3 === 0 ? 'order-2' : 'order-1';
      const p = m
        .append(who, thread, [{ body: { i } }])
        .then((r) => ({ seq: (r as { messages: Array<{ seq: number }> }).messages[0].seq }));
      writes.push(p);
      expectSeqOf.push(p.then((r) => r.seq));
    }
    await Promise.all(writes);
    const { rows } = await t.db.raw(
      `select thread_id, seq, type, coalesce((data->'body'->>'i')::int, (data->'body'->>'n')::int) as i
         from events where project_id = ? and thread_id in ('order-1','order-2') and type in ('message.created','message.edited') order by thread_id, seq`,
      [projectId],
    );
    for (const thread of ['order-1', 'order-2']) {
      const submitted = rows.filter((r: any) => r.thread_id === thread && r.i >= 0).map((r: any) => r.i);
      assert.deepEqual(
        submitted,
        [...submitted].sort((a, b) => a - b),
        `${thread}: seq order follows submission order`,
      );
      const seqs = rows.filter((r: any) => r.thread_id === thread).map((r: any) => r.seq);
      assert.deepEqual(
        seqs,
        Array.from({ length: seqs.length }, (_, k) => seqs[0] + k),
        `${thread}: gapless`,
      );
    }
    assert.equal(rows.filter((r: any) => r.type === 'message.edited').length, 6);
    assert.ok(groups.length >= 1);
  });

  test('seqs follow submission order when groups are small (INGEST_MAX_BATCH=3, two lanes)', async () => {
    const small = await startInstance(t.databaseUrl, { INGEST_MAX_BATCH: '3', INGEST_CONCURRENCY: '2' });
    try {
      const groups = watchGroups(small);
      const who = secretPrincipal(projectId);
      const seqs = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          small.app.messages
            .append(who, `small-${i % 2}`, [{ body: { i } }])
            .then((r) => (r as { messages: Array<{ seq: number }> }).messages[0].seq),
        ),
      );
      for (const parity of [0, 1]) {
        const mine = seqs.filter((_s, i) => i % 2 === parity);
        assert.deepEqual(
          mine,
          [...mine].sort((a, b) => a - b),
        );
        assert.equal(new Set(mine).size, mine.length);
      }
      assert.ok(groups.length >= 10 && groups.every((g) => g <= 3), `groups of at most 3: ${groups.join(',')}`);
    } finally {
      await small.close();
    }
  });

  test('a full queue answers 503 with Retry-After as problem+json and writes nothing for refused requests', async () => {
    const tiny = await startInstance(t.databaseUrl, { INGEST_QUEUE_LIMIT: '1', INGEST_CONCURRENCY: '1' });
    assert.equal(
      (await api(tiny.url, 'POST', '/v1/threads', { key: sk, body: { id: 'bp', type: 'group' } })).status,
      201,
    );
    // Hold the thread's row lock from outside so the first write's group cannot finish.
    const blocker = new pg.Client({ connectionString: t.databaseUrl });
    await blocker.connect();
    try {
      await blocker.query('begin');
      await blocker.query(`select 1 from threads where project_id = $1 and id = 'bp' for update`, [projectId]);
      const held = api(tiny.url, 'POST', '/v1/threads/bp/messages', {
        key: sk,
        user: 'alice',
        body: { id: 'held', body: { n: 0 } },
      });
      for (let i = 0; tiny.app.ingest.depth < 1; i++) {
        assert.ok(i < 500, 'the first write never reached the queue');
        await new Promise((r) => setTimeout(r, 10));
      }
      const refused = await Promise.all(
        Array.from({ length: 5 }, (_, i) =>
          api(tiny.url, 'POST', '/v1/threads/bp/messages', {
            key: sk,
            user: 'alice',
            body: { id: `refused-${i}`, body: { n: i } },
          }),
        ),
      );
      for (const r of refused) {
        assert.equal(r.status, 503);
        assert.match(r.headers.get('content-type') ?? '', /application\/problem\+json/);
        assert.ok(Number(r.headers.get('retry-after')) >= 1);
        assert.equal(r.body.status, 503);
      }
      await blocker.query('commit');
      assert.equal((await held).status, 201);
      const { rows } = await t.db.raw(`select id from messages where project_id = ? and thread_id = 'bp'`, [projectId]);
      assert.deepEqual(
        rows.map((r: any) => r.id),
        ['held'],
      );
    } finally {
      await blocker.query('rollback').catch(() => undefined);
      await blocker.end();
      await tiny.close();
    }
  });

  test('acknowledged means committed: a write that fails at COMMIT gets no success, and its group neighbours still commit', async () => {
    // A deferred constraint trigger fails at COMMIT, after every statement of the group succeeded.
    await t.db.raw(`
      create or replace function test_fail_at_commit() returns trigger language plpgsql as $$
      begin
        if jsonb_exists(new.body, 'fail_at_commit') then raise exception 'refused at commit'; end if;
        return null;
      end $$`);
    await t.db.raw(
      `create constraint trigger test_fail_at_commit after insert on messages deferrable initially deferred for each row execute function test_fail_at_commit()`,
    );
    try {
      assert.equal(
        (await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'commit', type: 'group' } })).status,
        201,
      );
      const groups = watchGroups(t);
      const who = secretPrincipal(projectId);
      const m = t.app.messages;
      const alone = await settle([m.append(who, 'commit', [{ body: { fail_at_commit: true } }])]);
      assert.equal(alone[0].status, 'rejected');

      const results = await settle([
        m.append(who, 'commit', [{ id: 'c1', body: { n: 1 } }]),
        m.append(who, 'commit', [{ id: 'c2', body: { fail_at_commit: true } }]),
        m.append(who, 'commit', [{ id: 'c3', body: { n: 3 } }]),
        m.append(who, 'commit', [{ id: 'c4', body: { n: 4 } }]),
      ]);
      assert.deepEqual(
        results.map((r) => r.status),
        ['fulfilled', 'rejected', 'fulfilled', 'fulfilled'],
      );
      const { rows } = await t.db.raw(
        `select id, seq from messages where project_id = ? and thread_id = 'commit' order by seq`,
        [projectId],
      );
      assert.deepEqual(
        rows.map((r: any) => r.id),
        ['c1', 'c3', 'c4'],
      );
      const acked = results.flatMap((r) =>
        r.status === 'fulfilled' ? [(r.value as { messages: Array<{ id: string; seq: number }> }).messages[0]] : [],
      );
      assert.deepEqual(
        acked.map((a) => [a.id, a.seq]),
        rows.map((r: any) => [r.id, r.seq]),
      );
      const { rows: log } = await t.db.raw(
        `select seq from events where project_id = ? and thread_id = 'commit' order by seq`,
        [projectId],
      );
      assert.deepEqual(
        log.map((r: any) => r.seq),
        [1, 2, 3, 4],
        'the log stays gapless',
      );
      assert.ok(groups.length >= 2, 'the failed group was split and retried');
    } finally {
      await t.db.raw('drop trigger test_fail_at_commit on messages');
      await t.db.raw('drop function test_fail_at_commit()');
    }
  });

  test('a statement failing inside a merged batch of appends fails only its own request', async () => {
    await t.db.raw(`
      create or replace function test_fail_now() returns trigger language plpgsql as $$
      begin
        if jsonb_exists(new.body, 'fail_now') then raise exception 'refused by trigger'; end if;
        return new;
      end $$`);
    await t.db.raw(
      `create trigger test_fail_now before insert on messages for each row execute function test_fail_now()`,
    );
    try {
      for (const id of ['batch-a', 'batch-b'])
        assert.equal((await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id, type: 'group' } })).status, 201);
      const groups = watchGroups(t);
      const who = secretPrincipal(projectId);
      const m = t.app.messages;
      const results = await settle([
        m.append(who, 'batch-a', [{ id: 'b1', body: { n: 1 } }]),
        m.append(who, 'batch-b', [{ id: 'b2', body: { n: 2 } }]),
        m.append(who, 'batch-a', [{ id: 'b3', body: { fail_now: true } }]),
        m.append(who, 'batch-b', [{ id: 'b4', body: { n: 4 } }]),
      ]);
      assert.deepEqual(groups, [4]);
      assert.deepEqual(
        results.map((r) => r.status),
        ['fulfilled', 'fulfilled', 'rejected', 'fulfilled'],
      );
      const { rows } = await t.db.raw(
        `select thread_id, id, seq from messages where project_id = ? and thread_id like 'batch-%' order by thread_id, seq`,
        [projectId],
      );
      assert.deepEqual(
        rows.map((r: any) => [r.thread_id, r.id, r.seq]),
        [
          ['batch-a', 'b1', 2],
          ['batch-b', 'b2', 2],
          ['batch-b', 'b4', 3],
        ],
      );
    } finally {
      await t.db.raw('drop trigger test_fail_now on messages');
      await t.db.raw('drop function test_fail_now()');
    }
  });

  test('each committed group sends one NOTIFY with every thread it wrote and its latest seq', async () => {
    for (const id of ['n-a', 'n-b'])
      assert.equal((await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id, type: 'group' } })).status, 201);
    const listener = new pg.Client({ connectionString: t.databaseUrl });
    await listener.connect();
    const payloads: Array<Array<[string, string, number]>> = [];
    listener.on('notification', (n) => {
      const p = (JSON.parse(n.payload ?? '{}') as { p: Array<[string, string, number]> }).p.filter(
        ([proj, thread]) => proj === projectId && thread.startsWith('n-'),
      );
      if (p.length > 0) payloads.push(p);
    });
    await listener.query('listen progressdb_events');
    try {
      const groups = watchGroups(t);
      const who = secretPrincipal(projectId);
      const m = t.app.messages;
      // Fast appends only (the NOTIFY rides on the INSERT), then a group that also creates a
      // thread and edits a message (slow ops: the NOTIFY is its own statement).
      await Promise.all([
        m.append(who, 'n-a', [{ id: 'x1', body: 1 }]),
        m.append(who, 'n-b', [{ body: 2 }]),
        m.append(who, 'n-a', [{ body: 3 }]),
      ]);
      await Promise.all([
        m.append(who, 'n-a', [{ body: 4 }]),
        m.append(who, 'n-c', [{ body: 5 }]),
        m.edit(who, 'n-a', 'x1', 6),
        m.append(who, 'n-b', [{ body: 7 }]),
      ]);
      assert.deepEqual(groups, [3, 4]);
      for (let i = 0; payloads.length < 2 && i < 200; i++) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, 100));
      const sorted = payloads.map((p) => p.map(([, thread, seq]) => [thread, seq]).sort());
      const { rows } = await t.db.raw(
        `select thread_id, max(seq) as seq from events where project_id = ? and thread_id like 'n-%' group by thread_id order by thread_id`,
        [projectId],
      );
      assert.deepEqual(
        rows.map((r: any) => [r.thread_id, r.seq]),
        [
          ['n-a', 5],
          ['n-b', 3],
          ['n-c', 3],
        ],
      ); // n-c: thread.created, member.added, message
      assert.deepEqual(sorted, [
        [
          ['n-a', 3],
          ['n-b', 2],
        ],
        [
          ['n-a', 5],
          ['n-b', 3],
          ['n-c', 3],
        ],
      ]);
    } finally {
      await listener.end();
    }
  });

  test(
    'an idle pipeline commits a lone write at once, even with a long INGEST_MAX_WAIT_MS',
    { timeout: 60_000 },
    async () => {
      // INGEST_MAX_WAIT_MS only lets a busy lane gather more writes. The pipeline is built with
      // a wait far beyond the test's timeout: a lone write that waited for it would fail the test.
      const { createIngestPipeline } = await import('../src/modules/ingest/ingest-pipeline');
      const { createLogger } = await import('../src/lib/logger');
      const pipeline = createIngestPipeline({
        runner: knexTransactionRunner(t.db),
        scope: commitScope,
        logger: createLogger('silent'),
        options: { maxBatch: 100, maxWaitMs: 3_600_000, lanes: 1, queueLimit: 100 },
      });
      try {
        const one = await pipeline.submit({
          partition: 'x',
          run: async (tx) => (await tx.raw('select 41 + 1 as n')).rows[0].n,
        });
        assert.equal(one, 42);
        // Idle again: the next lone write also goes at once.
        const two = await pipeline.submit({
          partition: 'x',
          run: async (tx) => (await tx.raw('select 2 as n')).rows[0].n,
        });
        assert.equal(two, 2);
      } finally {
        await pipeline.close();
      }
      const slowWait = await startInstance(t.databaseUrl, { INGEST_MAX_WAIT_MS: '1000' });
      try {
        const r = await api(slowWait.url, 'POST', '/v1/threads/idle/messages', {
          key: sk,
          user: 'alice',
          body: { body: { text: 'hi' } },
        });
        assert.equal(r.status, 201);
      } finally {
        await slowWait.close();
      }
    },
  );

  test('close() flushes writes that are gathering and refuses new ones', async () => {
    const { createIngestPipeline } = await import('../src/modules/ingest/ingest-pipeline');
    const { createLogger } = await import('../src/lib/logger');
    const pipeline = createIngestPipeline({
      runner: knexTransactionRunner(t.db),
      scope: commitScope,
      logger: createLogger('silent'),
      options: { maxBatch: 100, maxWaitMs: 3_600_000, lanes: 1, queueLimit: 100 },
    });
    const writes = Array.from({ length: 5 }, (_, i) =>
      pipeline.submit({
        partition: 'x',
        run: async (tx) => (await tx.raw('select ?::int as n', [i])).rows[0].n,
      }),
    );
    await new Promise((r) => setImmediate(r));
    // A second wave while the first group commits: it will be gathering when close() comes.
    writes.push(...Array.from({ length: 3 }, (_, i) => pipeline.submit({ partition: 'x', run: async () => 10 + i })));
    await pipeline.close();
    assert.deepEqual(await Promise.all(writes), [0, 1, 2, 3, 4, 10, 11, 12]);
    await assert.rejects(
      pipeline.submit({ partition: 'x', run: async () => 1 }),
      (e: AppError) => e.kind === 'unavailable',
    );
  });
});
