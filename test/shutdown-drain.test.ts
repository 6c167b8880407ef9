import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createLogger } from '../src/lib/logger';
import { createGracefulShutdown } from '../src/lib/shutdown';
import { api, startInstance, startTestApp, type TestContext } from './helpers/app';

describe('graceful shutdown, in process', () => {
  let t: TestContext;
  let sk: string;
  before(async () => {
    t = await startTestApp();
    sk = (await t.project()).keys.secret;
  });
  after(() => t.stop());

  test('waits for an in-flight append, then closes the app; readiness says not accepting meanwhile', async () => {
    // Appends wait 300 ms in the group-commit queue: the request is surely in flight at shutdown.
    const replica = await startInstance(t.databaseUrl, { INGEST_MAX_WAIT_MS: '300' });
    const closed: string[] = [];
    const shutdown = createGracefulShutdown({
      server: replica.server,
      logger: createLogger('silent'),
      timeoutMs: 20_000,
      closers: [
        async () => {
          await replica.app.close();
          closed.push('app');
        },
        async () => {
          await replica.db.destroy();
          closed.push('db');
        },
      ],
      readinessChecks: replica.app.readinessChecks,
    });
    const accepting = replica.app.readinessChecks.find((c) => c.name === 'accepting')!;
    assert.equal(await accepting.check(), true);

    const pending = api(replica.url, 'POST', '/v1/threads/inflight/messages', {
      key: sk,
      user: 'u',
      body: { id: 'late', body: 'x' },
    });
    for (let i = 0; replica.app.ingest.depth === 0; i++) {
      assert.ok(i < 500, 'the append reached the group-commit queue');
      await new Promise((r) => setTimeout(r, 10));
    }
    const done = shutdown.run('test');
    assert.equal(await accepting.check(), false);
    assert.equal(shutdown.draining, true);
    const res = await pending;
    assert.equal(res.status, 201, res.text);
    assert.equal(res.headers.get('connection'), 'close');
    assert.equal(await done, true);
    assert.deepEqual(closed, ['app', 'db']);
    assert.equal(shutdown.run('again'), done, 'a second call returns the first outcome');
    const { rows } = await t.db.raw(`select id from messages where thread_id = 'inflight'`);
    assert.deepEqual(
      rows.map((r: { id: string }) => r.id),
      ['late'],
    );
    await assert.rejects(fetch(`${replica.url}/healthz`), 'the server no longer accepts connections');
  });

  test('gives up at the deadline when a step hangs, and says so', async () => {
    const replica = await startInstance(t.databaseUrl);
    try {
      const shutdown = createGracefulShutdown({
        server: replica.server,
        logger: createLogger('silent'),
        timeoutMs: 200,
        closers: [() => new Promise<void>(() => undefined)],
      });
      assert.equal(await shutdown.run('test'), false);
    } finally {
      await replica.app.close();
      await replica.db.destroy();
    }
  });
});
