import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { api, startTestApp, type TestContext } from './helpers/app';
import { signInThroughProvider, startOAuthProvider } from './helpers/oauth-provider';
import { seedThread } from './helpers/seed-log';

const DAY = 86_400_000;

describe('retention policies: settings, deleted threads, per-thread caps, the one audited path', () => {
  let provider: Awaited<ReturnType<typeof startOAuthProvider>>;
  let t: TestContext;
  let session: string;
  const dev = (method: string, path: string, body?: unknown) =>
    api(t.url, method, path, { body, headers: { authorization: `Bearer ${session}` } });
  const run = (adminKey: string, dryRun = false) =>
    api(t.url, 'POST', '/v1/admin/retention/run', { key: adminKey, body: { dry_run: dryRun } });
  const count = async (table: string, where: Record<string, unknown>) =>
    Number((await t.db(table).where(where).count('* as n'))[0].n);

  /** A project made through the console API, with an admin and a secret key. */
  async function project(name: string, settings?: Record<string, unknown>) {
    const created = await dev('POST', '/v1/projects', { name, ...(settings ? { settings } : {}) });
    assert.equal(created.status, 201, created.text);
    const id = created.body.id as string;
    const adminKey = (await dev('POST', `/v1/projects/${id}/keys`, { kind: 'admin' })).body.key as string;
    const secret = (await dev('POST', `/v1/projects/${id}/keys`, { kind: 'secret' })).body.key as string;
    return { id, adminKey, secret };
  }

  before(async () => {
    provider = await startOAuthProvider();
    t = await startTestApp({ ...provider.env, RETENTION_ENABLED: 'false', RETENTION_BATCH_SIZE: '25' });
    provider.signInAs({ sub: 'g-ops', name: 'Ops', email: 'ops@example.com' });
    session = (await signInThroughProvider(t.url)).cookies.pdb_session;
  });
  after(async () => {
    await t.stop();
    await provider.stop();
  });

  test('policies are validated by the management API; valid ones are stored and shown', async () => {
    const { id } = await project('validated');
    for (const settings of [
      { retention_days: 0 },
      { retention_days: 1.5 },
      { retention_days: '30' },
      { deleted_thread_retention_days: -1 },
      { max_messages_per_thread: 0 },
      { max_messages_per_thread: 2_000_000 },
    ]) {
      const r = await dev('PATCH', `/v1/projects/${id}`, { settings });
      assert.equal(r.status, 400, `${JSON.stringify(settings)}: ${r.text}`);
      assert.match(r.headers.get('content-type') ?? '', /problem\+json/);
      assert.ok(r.body.errors.length > 0);
    }
    assert.deepEqual((await dev('GET', `/v1/projects/${id}`)).body.settings, {}, 'nothing was stored');
    const ok = await dev('PATCH', `/v1/projects/${id}`, {
      settings: { retention_days: 365, deleted_thread_retention_days: 30, max_messages_per_thread: 10_000 },
    });
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.body.settings, {
      retention_days: 365,
      deleted_thread_retention_days: 30,
      max_messages_per_thread: 10_000,
    });
  });

  test('the default keeps everything, however old', async () => {
    const p = await project('keeps everything');
    await seedThread(t.db, {
      projectId: p.id,
      threadId: 'ancient',
      messages: 40,
      start: new Date(Date.now() - 3_000 * DAY),
      stepMs: DAY,
    });
    const r = await run(p.adminKey);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.policy, {
      retention_days: null,
      deleted_thread_retention_days: null,
      max_messages_per_thread: null,
    });
    assert.deepEqual(r.body.totals, { threads: 0, events: 0, messages: 0 });
    assert.equal(await count('events', { project_id: p.id }), 42);
  });

  test('soft-deleted threads are purged whole N days after deletion; recently deleted ones are kept', async () => {
    const p = await project('deleted threads', { deleted_thread_retention_days: 30 });
    for (const id of ['gone', 'recent', 'live']) {
      await api(t.url, 'POST', '/v1/threads', {
        key: p.secret,
        user: 'ann',
        body: { id, type: 'group', title: `title ${id}`, members: ['bob'] },
      });
      for (let i = 0; i < 3; i++)
        await api(t.url, 'POST', `/v1/threads/${id}/messages`, { key: p.secret, user: 'ann', body: { body: i } });
    }
    await api(t.url, 'POST', '/v1/threads/gone/read', { key: p.secret, user: 'bob', body: { seq: 2 } });
    for (const id of ['gone', 'recent'])
      assert.equal((await api(t.url, 'DELETE', `/v1/threads/${id}`, { key: p.secret })).status, 204);
    // threads is the mutable summary row: move the deletion back in time.
    await t.db.raw(`update threads set deleted_at = now() - interval '40 days' where project_id = ? and id = 'gone'`, [
      p.id,
    ]);
    await t.db.raw(`update threads set deleted_at = now() - interval '5 days' where project_id = ? and id = 'recent'`, [
      p.id,
    ]);
    const lastSeq = Number((await t.db('threads').first('last_seq').where({ project_id: p.id, id: 'gone' })).last_seq);

    const dry = await run(p.adminKey, true);
    assert.deepEqual(dry.body.threads, [
      { thread_id: 'gone', reason: 'thread_purge', from_seq: 1, through_seq: lastSeq, events: lastSeq, messages: 3 },
    ]);
    const r = await run(p.adminKey);
    assert.deepEqual(r.body.threads, dry.body.threads);
    assert.equal(await count('events', { project_id: p.id, thread_id: 'gone' }), 0);
    assert.equal(await count('messages', { project_id: p.id, thread_id: 'gone' }), 0);
    assert.equal(await count('thread_members', { project_id: p.id, thread_id: 'gone' }), 0);
    assert.equal(await count('read_marks', { project_id: p.id, thread_id: 'gone' }), 0);
    const row = await t.db('threads').first('*').where({ project_id: p.id, id: 'gone' });
    assert.equal(Number(row.purged_through_seq), lastSeq, 'the row stays, so the id and seqs are never reused');
    assert.equal(row.title, null);
    assert.equal(await count('events', { project_id: p.id, thread_id: 'recent' }), lastSeq);
    assert.equal(await count('events', { project_id: p.id, thread_id: 'live' }), lastSeq - 1, 'no thread.deleted');
    const audit = await t.db('retention_audit').where({ project_id: p.id });
    assert.deepEqual(
      audit.map((a) => [a.thread_id, a.reason, Number(a.from_seq), Number(a.through_seq)]),
      [['gone', 'thread_purge', 1, lastSeq]],
    );
  });

  test('max_messages_per_thread keeps the newest M messages and removes the log prefix before them', async () => {
    const p = await project('capped', { max_messages_per_thread: 10 });
    await seedThread(t.db, { projectId: p.id, threadId: 'chatty', messages: 50, start: new Date(), stepMs: 1 });
    await seedThread(t.db, { projectId: p.id, threadId: 'quiet', messages: 10, start: new Date(), stepMs: 1 });
    const r = await run(p.adminKey);
    // m40 is at seq 42: purging through it leaves m41…m50.
    assert.deepEqual(r.body.threads, [
      { thread_id: 'chatty', reason: 'on_demand', from_seq: 1, through_seq: 42, events: 42, messages: 40 },
    ]);
    const left = await t.db('messages').where({ project_id: p.id, thread_id: 'chatty' }).orderBy('seq');
    assert.deepEqual(
      left.map((m) => m.id),
      Array.from({ length: 10 }, (_, i) => `m${41 + i}`),
    );
    assert.equal(await count('messages', { project_id: p.id, thread_id: 'quiet' }), 10);
    // Two batches of at most 25 events each.
    const audit = await t.db('retention_audit').where({ project_id: p.id }).orderBy('id');
    assert.deepEqual(
      audit.map((a) => [Number(a.from_seq), Number(a.through_seq)]),
      [
        [1, 25],
        [26, 42],
      ],
    );
  });

  test('direct UPDATE, DELETE and TRUNCATE on the log and the audit table are still refused', async () => {
    const p = await project('direct sql', { retention_days: 1 });
    await seedThread(t.db, {
      projectId: p.id,
      threadId: 'direct',
      messages: 5,
      start: new Date(Date.now() - 10 * DAY),
      stepMs: 1,
    });
    await run(p.adminKey);
    assert.equal(await count('retention_audit', { project_id: p.id }), 1);
    await seedThread(t.db, { projectId: p.id, threadId: 'kept', messages: 5, start: new Date(), stepMs: 1 });
    for (const sql of [
      `delete from events where project_id = ?`,
      `delete from events where project_id = ? and thread_id = 'kept' and seq = 1`,
      `update events set data = '{}'::jsonb where project_id = ?`,
      `delete from messages where project_id = ?`,
      `delete from retention_audit where project_id = ?`,
      `update retention_audit set events_removed = 0 where project_id = ?`,
      `truncate events`,
      `truncate messages`,
      `truncate retention_audit`,
    ]) {
      await assert.rejects(
        t.db.raw(sql, sql.includes('?') ? [p.id] : []),
        (e: Error & { code?: string }) => e.code === 'P0001' && /append-only/.test(e.message),
        sql,
      );
    }
    assert.equal(await count('events', { project_id: p.id, thread_id: 'kept' }), 7);
    // The purge function refuses what it does not know.
    await assert.rejects(
      t.db.raw(`select * from progressdb_purge_prefix(?, 'kept', 3, 'because', 'me')`, [p.id]),
      /unknown purge reason/,
    );
    assert.equal(await count('events', { project_id: p.id, thread_id: 'kept' }), 7);
  });

  test('a role that may DELETE cannot get past the trigger by setting the purge marker, nor call the purge function ungranted', async () => {
    const p = await project('roles');
    await seedThread(t.db, { projectId: p.id, threadId: 'r', messages: 3, start: new Date(), stepMs: 1 });
    // Roles are cluster-wide: name this one after the test database.
    const db = (await t.db.raw('select current_database() as d')).rows[0].d as string;
    const role = `pdb_ret_${db}`.slice(0, 63);
    await t.db.raw(`create role ${role} nologin`);
    try {
      await t.db.raw(`grant select, delete on events, messages, threads to ${role}`);
      const asRole = (sql: string) =>
        t.db.transaction(async (tx) => {
          await tx.raw(`set local role ${role}`);
          await tx.raw(`select set_config('progressdb.purge', pg_current_xact_id()::text, true)`);
          return tx.raw(sql, [p.id]);
        });
      await assert.rejects(
        asRole(`delete from events where project_id = ? and thread_id = 'r'`),
        /events is append-only: DELETE/,
      );
      await assert.rejects(
        asRole(`select * from progressdb_purge_prefix(?, 'r', 3, 'on_demand', 'mallory')`),
        /permission denied for function progressdb_purge_prefix/,
      );
      assert.equal(await count('events', { project_id: p.id, thread_id: 'r' }), 5);
      assert.equal(await count('retention_audit', { project_id: p.id }), 0);
    } finally {
      await t.db.raw(`drop owned by ${role}`);
      await t.db.raw(`drop role ${role}`);
    }
  });
});
