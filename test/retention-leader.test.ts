import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { after, before, describe, test } from 'node:test';
import { createDb } from '../src/lib/db';
import { createTestDatabase } from './helpers/db';
import { runCli, spawnReplica, type Replica } from './helpers/processes';
import { seedThread } from './helpers/seed-log';
import type { Knex } from 'knex';

const DAY = 86_400_000;
const INTERVAL_MS = 1_500;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('retention scheduler: one advisory-lock leader across replicas', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let db: Knex;
  let a: Replica;
  let b: Replica;
  const replicaId = (r: Replica) => `${hostname()}/${r.child.pid}`;

  async function project(name: string) {
    const creds = await runCli<{ project_id: string }>(['project', 'create', '--name', name, '--json'], {
      DATABASE_URL: database.url,
    });
    return creds.project_id;
  }
  async function until<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 60_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await check();
      if (v) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await sleep(50);
    }
  }

  before(async () => {
    database = await createTestDatabase();
    db = createDb(database.url, 2);
    const env = {
      DATABASE_URL: database.url,
      RETENTION_INTERVAL_MS: String(INTERVAL_MS),
      RETENTION_BATCH_SIZE: '250',
    };
    [a, b] = await Promise.all([spawnReplica('A', env), spawnReplica('B', env)]);
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await db?.destroy();
    await database?.drop();
  });

  test('two replicas run the purge once per interval, never at the same time', async () => {
    const pid = await project('scheduled');
    await seedThread(db, {
      projectId: pid,
      threadId: 'old',
      messages: 20,
      start: new Date(Date.now() - 90 * DAY),
      stepMs: 1_000,
    });
    await db('projects')
      .where({ id: pid })
      .update({ settings: JSON.stringify({ retention_days: 30 }) });
    const from = (await db.raw('select now() as t')).rows[0].t as string;
    await sleep(INTERVAL_MS * 5 + 300);
    const runs = (await db('retention_runs').where('started_at', '>=', from).orderBy('id')) as Array<{
      replica: string;
      started_at: string;
      completed_at: string | null;
    }>;
    // ~5 intervals passed: one run per interval (a run may start up to a tick late), not one per replica.
    assert.ok(runs.length >= 3 && runs.length <= 6, `runs: ${runs.length}`);
    for (let i = 1; i < runs.length; i++) {
      const gap = Date.parse(runs[i].started_at) - Date.parse(runs[i - 1].started_at);
      assert.ok(gap >= INTERVAL_MS - 20, `run ${i} started ${gap} ms after the previous one`);
      assert.ok(runs[i - 1].completed_at !== null && runs[i - 1].completed_at! <= runs[i].started_at, 'no overlap');
    }
    const replicas = new Set(runs.map((r) => r.replica));
    for (const r of replicas) assert.ok([replicaId(a), replicaId(b)].includes(r), r);
    // The thread lost its old prefix exactly once, in the first run that saw it.
    const audit = await db('retention_audit').where({ project_id: pid });
    assert.equal(audit.length, 1);
    assert.deepEqual([audit[0].from_seq, audit[0].through_seq, audit[0].reason], [1, 22, 'policy']);
    assert.match(audit[0].actor, /^scheduler:/);
  });

  test('the leader killed mid-purge leaves a consistent log; the other replica completes the purge', async () => {
    const pid = await project('killed mid-purge');
    const MESSAGES = 60_000;
    await seedThread(db, {
      projectId: pid,
      threadId: 'big',
      messages: MESSAGES,
      start: new Date(Date.now() - 90 * DAY),
      stepMs: 10,
    });
    await db('projects')
      .where({ id: pid })
      .update({ settings: JSON.stringify({ retention_days: 30 }) });
    const target = MESSAGES + 2;

    // Wait until a leader is well into the purge, then kill it.
    const auditRows = () => db('retention_audit').where({ project_id: pid }).orderBy('id');
    const started = await until('the purge to start', async () => {
      const rows = await auditRows();
      return rows.length >= 10 && rows;
    });
    const leaderId = (started[0].actor as string).replace(/^scheduler:/, '');
    const leader = leaderId === replicaId(a) ? a : b;
    const survivor = leader === a ? b : a;
    assert.equal(leaderId, replicaId(leader));
    await leader.kill9();
    const atKill = await db('threads').first('purged_through_seq').where({ project_id: pid, id: 'big' });
    assert.ok(Number(atKill.purged_through_seq) < target, 'killed before the purge finished');

    await until(
      'the survivor to finish the purge',
      async () => {
        const t = await db('threads').first('purged_through_seq').where({ project_id: pid, id: 'big' });
        return Number(t.purged_through_seq) === target;
      },
      90_000,
    );

    // Consistent: contiguous audited batches 1…target, each removing exactly its range, and
    // nothing left in the log or the current state below the horizon.
    const rows = await auditRows();
    let next = 1;
    for (const r of rows) {
      assert.equal(Number(r.from_seq), next, 'audited ranges are contiguous and do not overlap');
      assert.equal(Number(r.events_removed), Number(r.through_seq) - Number(r.from_seq) + 1);
      next = Number(r.through_seq) + 1;
    }
    assert.equal(next, target + 1);
    assert.ok(
      rows.some((r) => r.actor === `scheduler:${replicaId(survivor)}`),
      'the survivor did part of it',
    );
    assert.ok(rows.some((r) => r.actor === `scheduler:${leaderId}`));
    assert.equal(
      rows.reduce((n, r) => n + Number(r.messages_removed), 0),
      MESSAGES,
    );
    const left = await db.raw(
      `select (select count(*) from events where project_id = ? and thread_id = 'big')::int as events,
              (select count(*) from messages where project_id = ? and thread_id = 'big')::int as messages`,
      [pid, pid],
    );
    assert.deepEqual(left.rows[0], { events: 0, messages: 0 });
    // The survivor records the interrupted run's continuation as a run of its own, completed.
    const last = await db('retention_runs').orderBy('id', 'desc').first();
    await until('the run to be recorded as completed', async () => {
      const r = await db('retention_runs').where('id', '>=', last.id).whereNotNull('completed_at').first();
      return r && r.replica === replicaId(survivor);
    });
    assert.ok(survivor.alive);
  });
});
