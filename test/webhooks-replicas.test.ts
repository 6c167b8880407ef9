import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { createDb } from '../src/lib/db';
import { createSecretBox, newWebhookSecret, resolveWebhookKey } from '../src/modules/webhooks/webhook-secrets';
import { createTestDatabase } from './helpers/db';
import { runCli, spawnReplica, type Replica } from './helpers/processes';
import { startReceiver, type Receiver } from './helpers/webhook-receiver';

const THREADS = 8;
const PER_THREAD = 15;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('webhooks across two replicas, one killed with SIGKILL mid-delivery', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let receiver: Receiver;
  let a: Replica;
  let b: Replica;
  let sk: string;
  let projectId: string;
  let secret: string;
  const key = randomBytes(32).toString('base64url');

  before(async () => {
    database = await createTestDatabase();
    receiver = await startReceiver();
    // Every answer takes a while, so deliveries are in flight when A dies.
    receiver.answer(() => ({ status: 204, delayMs: 300 }));
    const creds = await runCli<{ project_id: string; keys: { secret: string } }>(
      ['project', 'create', '--name', 'webhook replicas', '--json'],
      { DATABASE_URL: database.url },
    );
    sk = creds.keys.secret;
    projectId = creds.project_id;
    // The endpoint, sealed with the key both replicas are given (WEBHOOK_SECRET_KEY).
    const db = createDb(database.url, 2);
    try {
      secret = newWebhookSecret();
      const box = createSecretBox(await resolveWebhookKey(db, key));
      await db('webhook_endpoints').insert({
        project_id: projectId,
        id: 'we_kill',
        url: `${receiver.url}/kill`,
        secret_ciphertext: box.seal(projectId, 'we_kill', secret),
      });
    } finally {
      await db.destroy();
    }
    const env = {
      DATABASE_URL: database.url,
      WEBHOOK_SECRET_KEY: key,
      WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true',
      WEBHOOK_POLL_MS: '100',
      WEBHOOK_CONCURRENCY: '4',
      WEBHOOK_TIMEOUT_MS: '2000',
      WEBHOOK_CLAIM_MARGIN_SECONDS: '1',
      WEBHOOK_RETRY_SCHEDULE: '0.2,0.2,0.2,0.2,0.2',
    };
    [a, b] = await Promise.all([spawnReplica('A', env), spawnReplica('B', env)]);
  });
  after(async () => {
    await a?.kill9();
    await b?.stop();
    await receiver?.close();
    await database?.drop();
  });

  test('every committed event is delivered at least once, in seq order per thread, duplicates only with the same webhook-id', async () => {
    const append = (r: Replica, thread: string, i: number) =>
      fetch(`${r.url}/v1/threads/${thread}/messages`, {
        method: 'POST',
        headers: { authorization: `Bearer ${sk}`, 'x-user-id': 'writer', 'content-type': 'application/json' },
        body: JSON.stringify({ body: { i } }),
      });
    // Writes through both replicas; A dies with deliveries in flight (the receiver holds each
    // answer 300 ms; at most 4 are in flight per replica, so 5 or more means A has some).
    const writes: Array<Promise<unknown>> = [];
    for (let i = 0; i < PER_THREAD; i++)
      for (let th = 0; th < THREADS; th++)
        writes.push(append((i + th) % 2 === 0 ? a : b, `k${th}`, i).catch(() => undefined));
    for (let i = 0; i < 200 && receiver.inFlight < 5; i++) await sleep(10);
    assert.ok(receiver.inFlight >= 5, `deliveries in flight from both replicas (${receiver.inFlight})`);
    await a.kill9();
    await Promise.all(writes);
    // More commits after the kill, on B only.
    for (let th = 0; th < THREADS; th++) assert.equal((await append(b, `k${th}`, 99)).status, 201);

    const db = createDb(database.url, 2);
    try {
      const committed: Array<{ thread_id: string; seq: number }> = await db('events')
        .where({ project_id: projectId })
        .select('thread_id', 'seq');
      const key = (t: string, s: number) => `${t}#${s}`;
      const want = new Set(committed.map((e) => key(e.thread_id, Number(e.seq))));
      const got = () => new Set(receiver.received.map((r) => key(r.json.data.thread_id, r.json.data.seq)));
      await receiver.until(() => [...want].every((k) => got().has(k)), 60_000);

      const ids = new Map<string, string>();
      const lastSeq = new Map<string, number>();
      const wh = new Webhook(secret);
      for (const r of receiver.received) {
        const { thread_id, seq } = r.json.data;
        wh.verify(r.body, r.headers as Record<string, string>);
        const k = key(thread_id, seq);
        const id = String(r.headers['webhook-id']);
        if (ids.has(k)) assert.equal(ids.get(k), id, `a duplicate of ${k} carries the same webhook-id`);
        ids.set(k, id);
        // Arrivals per thread never go back in seq (a re-sent event comes again before its successors).
        assert.ok(seq >= (lastSeq.get(thread_id) ?? 0), `${thread_id}: seq ${seq} after ${lastSeq.get(thread_id)}`);
        lastSeq.set(thread_id, seq);
      }
      assert.equal(new Set(ids.values()).size, ids.size, 'distinct events have distinct webhook-ids');
      assert.deepEqual(new Set(ids.keys()), want, 'exactly the committed events, nothing else');
      for (let i = 0; i < 100; i++) {
        const open = await db('webhook_deliveries').where({ project_id: projectId }).whereNot({ status: 'delivered' });
        if (open.length === 0) break;
        await sleep(100);
      }
      const states = await db('webhook_deliveries').where({ project_id: projectId }).select('status');
      assert.ok(
        states.every((s) => s.status === 'delivered'),
        'every delivery ends delivered',
      );
      assert.equal(states.length, want.size);
    } finally {
      await db.destroy();
    }
    assert.ok(b.alive);
  });
});
