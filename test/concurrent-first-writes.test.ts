import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createDb } from '../src/lib/db';
import { createTestDatabase } from './helpers/db';
import { runCli, spawnReplica, type Replica } from './helpers/processes';

const THREADS = 30;
const WRITERS = 8;

describe('concurrent first writes to new threads through two replicas', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let a: Replica;
  let b: Replica;
  let sk: string;
  let projectId: string;

  before(async () => {
    database = await createTestDatabase();
    const creds = await runCli<{ project_id: string; keys: { secret: string } }>(
      ['project', 'create', '--name', 'first writes', '--json'],
      { DATABASE_URL: database.url },
    );
    sk = creds.keys.secret;
    projectId = creds.project_id;
    [a, b] = await Promise.all([
      spawnReplica('A', { DATABASE_URL: database.url }),
      spawnReplica('B', { DATABASE_URL: database.url }),
    ]);
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await database?.drop();
  });

  test(`${THREADS} fresh thread ids × ${WRITERS} writers over two replicas: every append gets its 201`, async () => {
    const run = Date.now().toString(36);
    const post = (r: Replica, thread: string, writer: number) =>
      fetch(`${r.url}/v1/threads/${thread}/messages`, {
        method: 'POST',
        headers: { authorization: `Bearer ${sk}`, 'x-user-id': `w${writer}`, 'content-type': 'application/json' },
        body: JSON.stringify({ body: { writer } }),
      }).then(async (res) => ({ status: res.status, text: await res.text() }));
    // Warm both replicas (connections, code paths), so the first writes really overlap.
    for (const r of [a, b]) for (let i = 0; i < 5; i++) assert.equal((await post(r, `warm-${run}`, i)).status, 201);
    const threads = Array.from({ length: THREADS }, (_, i) => `fresh-${run}-${i}`);
    const results = await Promise.all(
      threads.flatMap((thread) => Array.from({ length: WRITERS }, (_, w) => post(w % 2 === 0 ? a : b, thread, w))),
    );
    const failed = results.filter((r) => r.status !== 201);
    assert.deepEqual(
      failed.slice(0, 5),
      [],
      `${results.length - failed.length}/${results.length} got 201; ${failed.length} did not`,
    );
    assert.equal(results.length, THREADS * WRITERS);

    const db = createDb(database.url, 2);
    try {
      const { rows } = await db.raw<{ rows: Array<{ thread_id: string; type: string; n: string }> }>(
        `select thread_id, type, count(*) as n from events
          where project_id = ? and thread_id = any(?::text[]) group by thread_id, type`,
        [projectId, threads],
      );
      for (const thread of threads) {
        const of = (type: string) => Number(rows.find((r) => r.thread_id === thread && r.type === type)?.n ?? 0);
        assert.equal(of('thread.created'), 1, `${thread}: created once`);
        assert.equal(of('message.created'), WRITERS, `${thread}: every writer's message`);
      }
    } finally {
      await db.destroy();
    }
  });
});
