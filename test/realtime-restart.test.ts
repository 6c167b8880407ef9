import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createDb } from '../src/lib/db';
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../src/lib/embedded-postgres';
import { migrateLatest } from '../src/lib/migrate';
import { startInstance, type TestInstance } from './helpers/app';
import { freePort, repoRoot } from './helpers/processes';
import { as, openSse, openWs, range, seqs } from './realtime-clients';

const MESSAGES = 120;
const DOWN_MS = 2_000;
const ENV = { RATE_LIMIT_ENABLED: 'false', REALTIME_HEARTBEAT_MS: '2000' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('realtime: PostgreSQL restarts under a live tail', () => {
  let dir: string;
  let port: number;
  let postgres: EmbeddedDatabase;
  let one: TestInstance;
  let two: TestInstance;
  let sk: string;

  before(async () => {
    dir = mkdtempSync(path.join(repoRoot, '.test-data', 'rt-restart-'));
    port = await freePort();
    postgres = await startEmbeddedPostgres(dir, port);
    const db = createDb(postgres.url, 2);
    try {
      await migrateLatest(db);
    } finally {
      await db.destroy();
    }
    one = await startInstance(postgres.url, ENV);
    two = await startInstance(postgres.url, ENV);
    sk = (await one.app.projects.createProject({ name: 'realtime restart' })).keys.secret;
  });
  after(async () => {
    await two?.close();
    await one?.close();
    await postgres?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('subscribers on both replicas end with every acknowledged message exactly once, in order', async () => {
    const created = await fetch(`${one.url}/v1/threads`, {
      method: 'POST',
      headers: { ...as(sk), 'content-type': 'application/json' },
      body: JSON.stringify({ id: 'restart', type: 'channel' }),
    });
    assert.equal(created.status, 201);
    const sse = await openSse(`${one.url}/v1/threads/restart/tail`, as(sk));
    await sse.waitFor(() => sse.messages.find((m) => m.event === 'ready'), 'ready');
    const ws = await openWs(`${two.url.replace('http', 'ws')}/v1/ws`, as(sk));
    ws.send({ type: 'subscribe', thread_id: 'restart', after_seq: 1 });
    await ws.waitFor((m) => m.type === 'ready', 'ready');

    const acked = new Map<string, number>();
    const failures = new Map<number, number>();
    // One client appending with client-chosen ids, retrying each until it is acknowledged.
    const writer = (async () => {
      for (let i = 0; i < MESSAGES; i++) {
        const id = `m${i}`;
        for (;;) {
          const base = i % 2 ? one.url : two.url;
          const r = await fetch(`${base}/v1/threads/restart/messages`, {
            method: 'POST',
            headers: { ...as(sk, 'writer'), 'content-type': 'application/json' },
            body: JSON.stringify({ id, body: { i } }),
            signal: AbortSignal.timeout(20_000),
          });
          const body = await r.json();
          if (r.status === 201) {
            acked.set(id, body.seq);
            break;
          }
          failures.set(r.status, (failures.get(r.status) ?? 0) + 1);
          // Anything but "unavailable, retry" is a bug: stop instead of retrying forever.
          if (r.status !== 503) throw new Error(`append ${id} answered ${r.status}: ${JSON.stringify(body)}`);
          await sleep(100);
        }
        await sleep(15);
      }
    })();

    while (acked.size < 30) await Promise.race([sleep(20), writer]);
    await postgres.stop();
    let sawNotReady = false;
    const downUntil = Date.now() + DOWN_MS;
    while (Date.now() < downUntil) {
      const ready = await fetch(`${one.url}/readyz`);
      if (ready.status === 503) {
        const checks = (await ready.json()).checks;
        sawNotReady = sawNotReady || (checks.database === false && checks.listen === false);
      } else await ready.arrayBuffer();
      await sleep(200);
    }
    const ackedWhileDown = acked.size;
    postgres = await startEmbeddedPostgres(dir, port);
    await writer;

    assert.ok(sawNotReady, '/readyz said not ready (database and LISTEN down) during the outage');
    assert.ok(ackedWhileDown < MESSAGES, 'the outage happened while messages were still being appended');
    assert.ok(
      [...failures.keys()].every((s) => s === 503),
      `writes failed cleanly with 503 only: ${JSON.stringify([...failures])}`,
    );
    assert.ok((failures.get(503) ?? 0) > 0, 'some writes were refused while PostgreSQL was down');
    assert.equal(acked.size, MESSAGES);

    const expected = range(2, MESSAGES + 1);
    assert.deepEqual(
      [...acked.values()].sort((a, b) => a - b),
      expected,
      'acknowledged seqs are contiguous: no message written twice',
    );
    for (const events of [
      await sse.waitForEvents(MESSAGES, 60_000),
      await ws.waitForEvents('restart', MESSAGES, 60_000),
    ]) {
      assert.deepEqual(seqs(events), expected);
      assert.deepEqual(new Map(events.map((e: any) => [e.message_id, e.seq])), acked);
    }
    await sleep(300);
    assert.equal(sse.events().length, MESSAGES, 'nothing delivered twice (SSE)');
    assert.equal(ws.eventsOf('restart').length, MESSAGES, 'nothing delivered twice (WebSocket)');
    sse.close();
    ws.close();
  });
});
