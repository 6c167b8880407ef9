import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startInstance, startTestApp, type TestContext, type TestInstance } from './helpers/app';

describe('idempotency keys expire and are swept', () => {
  let t: TestContext;
  let p: ProjectCredentials;

  before(async () => {
    t = await startTestApp({ IDEMPOTENCY_TTL_HOURS: '1', IDEMPOTENCY_SWEEP_INTERVAL_MS: '86400000' });
    p = await t.project();
  });
  after(() => t.stop());

  const seedKeys = async (n: number, ageHours: number, prefix: string) => {
    await t.db.raw(
      `insert into idempotency_keys (project_id, key_id, user_id, idem_key, request_hash, status, response, created_at)
       select ?, 'k', 'u', ? || g, 'h', 201, '{}'::jsonb, now() - make_interval(hours => ?)
         from generate_series(1, ?) g`,
      [p.project_id, prefix, ageHours, n],
    );
  };
  const count = async (prefix: string) =>
    Number(
      (
        await t
          .db('idempotency_keys')
          .count({ n: '*' })
          .where({ project_id: p.project_id })
          .andWhereLike('idem_key', `${prefix}%`)
      )[0].n,
    );

  test('a key older than IDEMPOTENCY_TTL_HOURS is not replayed: the retry is a new request', async () => {
    const post = () =>
      api(t.url, 'POST', '/v1/threads/exp/messages', {
        key: p.keys.secret,
        user: 'ann',
        headers: { 'idempotency-key': 'retry-1' },
        body: { body: { text: 'hi' } },
      });
    const first = await post();
    assert.equal(first.status, 201, first.text);
    const replay = await post();
    assert.equal(replay.headers.get('idempotent-replayed'), 'true');
    assert.equal(replay.body.id, first.body.id);

    await t
      .db('idempotency_keys')
      .where({ project_id: p.project_id, idem_key: 'retry-1' })
      .update({ created_at: t.db.raw(`now() - interval '61 minutes'`) });
    const late = await post();
    assert.equal(late.status, 201, late.text);
    assert.equal(late.headers.get('idempotent-replayed'), null);
    assert.notEqual(late.body.id, first.body.id);
    // The new response is the one remembered now.
    const again = await post();
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.equal(again.body.id, late.body.id);
  });

  test('two replicas sweeping at once delete every expired key exactly once, in bounded batches, and keep fresh ones', async () => {
    await seedKeys(2_500, 2, 'old-');
    await seedKeys(20, 0, 'fresh-');
    const env = {
      IDEMPOTENCY_TTL_HOURS: '1',
      IDEMPOTENCY_SWEEP_INTERVAL_MS: '86400000',
      IDEMPOTENCY_SWEEP_BATCH: '300',
    };
    const other: TestInstance = await startInstance(t.databaseUrl, env);
    const statements: number[] = [];
    const onQuery = (q: { sql: string }) => {
      if (q.sql.startsWith('delete from idempotency_keys')) statements.push(1);
    };
    other.db.on('query', onQuery);
    try {
      const again = await startInstance(t.databaseUrl, env);
      try {
        const [a, b] = await Promise.all([other.app.idempotency.sweep(), again.app.idempotency.sweep()]);
        assert.equal(a + b, 2_500);
      } finally {
        await again.close();
      }
      assert.ok(statements.length >= 2, 'several batches, not one unbounded delete');
      assert.equal(await count('old-'), 0);
      assert.equal(await count('fresh-'), 20);
    } finally {
      other.db.off('query', onQuery);
      await other.close();
    }
  });

  test('each replica sweeps on its own every IDEMPOTENCY_SWEEP_INTERVAL_MS', async () => {
    await seedKeys(50, 3, 'timer-');
    const swept = await startInstance(t.databaseUrl, {
      IDEMPOTENCY_TTL_HOURS: '1',
      IDEMPOTENCY_SWEEP_INTERVAL_MS: '200',
    });
    try {
      const deadline = Date.now() + 10_000;
      while ((await count('timer-')) > 0) {
        assert.ok(Date.now() < deadline, 'the periodic sweep did not run');
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(await count('fresh-'), 20);
    } finally {
      await swept.close();
    }
  });
});
