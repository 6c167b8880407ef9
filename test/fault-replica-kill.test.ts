import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { createTestDatabase } from './helpers/db';
import { attempt, retryable, sleep, type Attempt, type Target } from './helpers/load';
import { runCli, spawnReplica, type Replica } from './helpers/processes';

const THREADS = 4;
const WRITERS = 16;
const PER_WRITER = 60;
/** Kill replica A once this many writes have been acknowledged (the load is well under way). */
const KILL_AFTER_ACKS = 250;

interface Ack {
  writer: number;
  i: number;
  thread: string;
  id: string;
  seq: number;
  replica: string;
  attempts: number;
  replayed: boolean;
}

describe('fault: kill -9 one of two replicas under sustained append load', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let a: Replica;
  let b: Replica;
  let sk: string;

  before(async () => {
    database = await createTestDatabase();
    const creds = await runCli<{ keys: { secret: string } }>(
      ['project', 'create', '--name', 'fault replica kill', '--json'],
      { DATABASE_URL: database.url },
    );
    sk = creds.keys.secret;
    [a, b] = await Promise.all([
      spawnReplica('A', { DATABASE_URL: database.url }),
      spawnReplica('B', { DATABASE_URL: database.url }),
    ]);
  });
  after(async () => {
    await a?.kill9();
    await b?.stop();
    await database?.drop();
  });

  test('every acknowledged write is stored exactly once, seqs stay gapless, B keeps serving, retries create no duplicates', async () => {
    const auth = { authorization: `Bearer ${sk}` };
    for (let t = 0; t < THREADS; t++) {
      const r = await attempt(b, 'POST', '/v1/threads', { headers: auth, body: { id: `kill-${t}`, type: 'channel' } });
      assert.equal(r.status, 201, r.text);
    }

    const acks: Ack[] = [];
    const unexpected: string[] = [];
    let retries = 0;
    let lostResponses = 0;
    let failedAttemptsOnA = 0;
    let killedAt = -1;
    let ackedByBAfterKill = 0;
    // Set from inside a writer's callback; a holder object keeps TypeScript from narrowing it to null.
    const killer: { done: Promise<void> | null } = { done: null };

    // Writers 0..7 use client-chosen message ids; 8..15 use Idempotency-Key headers and let
    // the server choose ids. Even writers start on A, odd on B; a failed attempt is retried,
    // unchanged, on the other replica.
    const writer = async (w: number) => {
      const useHeader = w >= WRITERS / 2;
      const thread = `kill-${w % THREADS}`;
      let home: Target = w % 2 === 0 ? a : b;
      for (let i = 0; i < PER_WRITER; i++) {
        const clientId = `w${w}-m${i}`;
        const headers: Record<string, string> = { ...auth, 'x-user-id': `writer-${w}` };
        if (useHeader) headers['idempotency-key'] = `idem-${w}-${i}`;
        const body = useHeader ? { body: { w, i } } : { id: clientId, body: { w, i } };
        let target = home;
        for (let n = 1; ; n++) {
          // Every 5th first attempt of half the writers gives up after 1–25 ms: often the server
          // commits anyway and the response is lost, as on a flaky network. The retry must get
          // the first result back, not a second message.
          const impatient = n === 1 && i % 5 === 0 && w % 4 >= 2;
          if (impatient) lostResponses++;
          const r: Attempt = await attempt(target, 'POST', `/v1/threads/${thread}/messages`, {
            headers,
            body,
            timeoutMs: impatient ? 1 + Math.floor(Math.random() * 25) : 10_000,
          });
          if (r.status === 201) {
            acks.push({
              writer: w,
              i,
              thread,
              id: r.body.id,
              seq: r.body.seq,
              replica: r.replica,
              attempts: n,
              replayed: r.headers?.get('idempotent-replayed') === 'true',
            });
            if (killedAt >= 0 && r.replica === 'B') ackedByBAfterKill++;
            if (!killer.done && acks.length >= KILL_AFTER_ACKS) {
              // A moment later, not on this ack: A should be mid-group, with commits in flight.
              killer.done = new Promise<void>((resolve) =>
                setTimeout(
                  () => {
                    killedAt = acks.length;
                    void a.kill9().then(resolve);
                  },
                  1 + Math.random() * 20,
                ),
              );
            }
            break;
          }
          if (!retryable(r.status)) {
            unexpected.push(`${r.replica} ${r.status}: ${r.text}`);
            break;
          }
          if (r.replica === 'A' && r.status !== 'timeout') failedAttemptsOnA++;
          if (r.replica === 'B' && r.status !== 503 && !impatient)
            unexpected.push(`B failed with ${r.status} (it must keep serving)`);
          if (n > 20) {
            unexpected.push(`gave up on ${thread}/${clientId} after ${n} attempts`);
            break;
          }
          retries++;
          // A client that lost its replica fails over; the load balancer would do the same.
          target = target === a ? b : a;
          if (!a.alive) target = home = b;
          await sleep(Math.min(200, 10 * n));
        }
      }
    };
    await Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));
    assert.ok(killer.done, 'replica A was killed during the run');
    await killer.done;

    assert.deepEqual(unexpected, [], `replica logs:\nA: ${a.output().slice(-4000)}\nB: ${b.output().slice(-4000)}`);
    assert.ok(killedAt > 0, 'replica A was killed during the load');
    const killed = await a.exited;
    assert.equal(killed.signal, 'SIGKILL');
    assert.ok(ackedByBAfterKill > 0, 'replica B acknowledged writes after A died');
    assert.equal(acks.length, WRITERS * PER_WRITER, 'every write was eventually acknowledged');
    assert.equal(b.alive, true);

    const client = new pg.Client({ connectionString: database.url });
    await client.connect();
    try {
      // Every acknowledged write is stored exactly once, with the seq it was acknowledged with.
      const { rows: messages } = await client.query<{
        thread_id: string;
        id: string;
        seq: string;
        author: string;
        body: { w: number; i: number };
      }>(`select thread_id, id, seq, author, body from messages where thread_id like 'kill-%'`);
      const stored = new Map(messages.map((m) => [`${m.thread_id}/${m.id}`, m]));
      for (const ack of acks) {
        const m = stored.get(`${ack.thread}/${ack.id}`);
        assert.ok(m, `acknowledged message ${ack.thread}/${ack.id} is stored`);
        assert.equal(Number(m.seq), ack.seq, `message ${ack.id} has the acknowledged seq`);
        assert.deepEqual([m.body.w, m.body.i], [ack.writer, ack.i]);
      }
      // No duplicates: one stored message per (writer, i), whatever the retries did.
      assert.equal(messages.length, WRITERS * PER_WRITER, 'no message was written twice');
      const logical = new Set(messages.map((m) => `${m.body.w}/${m.body.i}`));
      assert.equal(logical.size, WRITERS * PER_WRITER);
      const created = await client.query<{ n: string; d: string }>(
        `select count(*) n, count(distinct (thread_id, message_id)) d from events where type = 'message.created' and thread_id like 'kill-%'`,
      );
      assert.equal(Number(created.rows[0].n), WRITERS * PER_WRITER);
      assert.equal(Number(created.rows[0].d), WRITERS * PER_WRITER);

      // Every thread's log is exactly 1..last_seq, and last_seq agrees with it.
      for (let t = 0; t < THREADS; t++) {
        const { rows } = await client.query<{ seq: string }>(
          `select seq from events where thread_id = $1 order by seq`,
          [`kill-${t}`],
        );
        const seqs = rows.map((r) => Number(r.seq));
        assert.deepEqual(
          seqs,
          Array.from({ length: seqs.length }, (_, k) => k + 1),
          `kill-${t} seqs are gapless`,
        );
        const th = await client.query<{ last_seq: string }>(`select last_seq from threads where id = $1`, [
          `kill-${t}`,
        ]);
        assert.equal(Number(th.rows[0].last_seq), seqs.length);
      }
    } finally {
      await client.end();
    }

    // B still serves reads and writes.
    const after = await attempt(b, 'POST', '/v1/threads/kill-0/messages', {
      headers: { ...auth, 'x-user-id': 'after' },
      body: { body: 'still here' },
    });
    assert.equal(after.status, 201);
    const retriedAcks = acks.filter((x) => x.attempts > 1).length;
    // A retry answered as a replay is a write committed whose response was lost (client gave
    // up, or A died after COMMIT).
    const replays = acks.filter((x) => x.attempts > 1 && x.replayed).length;
    assert.ok(replays > 0, 'some retries were replays of committed writes, so duplicates were possible');
    process.stdout.write(
      `# fault replica-kill: ${acks.length} writes acknowledged and verified stored exactly once (${retriedAcks} needed a retry, ${replays} of them answered as replays of an already committed write; ${lostResponses} responses deliberately dropped by the client, ${retries} retries in total, ` +
        `${failedAttemptsOnA} failed attempts against A); kill -9 after ${killedAt} acks; B acknowledged ${ackedByBAfterKill} writes after the kill; ` +
        `${THREADS} threads gapless\n`,
    );
  });
});
