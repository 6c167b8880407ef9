import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { createDb } from '../src/lib/db';
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../src/lib/embedded-postgres';
import { migrateLatest } from '../src/lib/migrate';
import { createKeysStore } from '../src/modules/keys/keys-store';
import { createProjectsService } from '../src/modules/projects/projects-service';
import { createProjectsStore } from '../src/modules/projects/projects-store';
import { attempt, sleep, type Attempt } from './helpers/load';
import { freePort, repoRoot, spawnReplica, type Replica } from './helpers/processes';

const WRITERS = 8;
const DOWN_MS = 4_000;
/** A request must be answered (success or 503) within this; the pool's acquire timeout is 5 s. */
const REQUEST_TIMEOUT_MS = 15_000;

describe('fault: PostgreSQL stops during load and comes back', () => {
  let dir: string;
  let port: number;
  let postgres: EmbeddedDatabase;
  let replica: Replica;
  let sk: string;
  let url: string;

  before(async () => {
    dir = mkdtempSync(path.join(repoRoot, '.test-data', 'fault-pg-'));
    port = await freePort();
    postgres = await startEmbeddedPostgres(dir, port);
    url = postgres.url;
    const db = createDb(url, 2);
    try {
      await migrateLatest(db);
      const projects = createProjectsService({
        db,
        projectsStore: createProjectsStore(),
        keysStore: createKeysStore(),
        signingSecretGraceSeconds: 0,
      });
      sk = (await projects.createProject({ name: 'fault postgres restart' })).keys.secret;
    } finally {
      await db.destroy();
    }
    replica = await spawnReplica('R', { DATABASE_URL: url });
  });
  after(async () => {
    await replica?.stop();
    await postgres?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('answers 503 problem+json with Retry-After while down, recovers within 5 s of PostgreSQL being back, loses nothing acknowledged', async () => {
    const auth = { authorization: `Bearer ${sk}` };
    const created = await attempt(replica, 'POST', '/v1/threads', {
      headers: auth,
      body: { id: 'pg-restart', type: 'channel' },
    });
    assert.equal(created.status, 201, created.text);

    let phase: 'before' | 'down' | 'restarting' | 'up' = 'before';
    let stop = false;
    const acks = new Map<string, number>();
    const downResponses: Attempt[] = [];
    const bad: string[] = [];
    let sent = 0;
    let slowest = 0;

    const record = (r: Attempt, what: string) => {
      sent++;
      slowest = Math.max(slowest, r.ms);
      if (r.status === 'timeout' || r.status === 'network')
        bad.push(`${what}: ${r.status} after ${Math.round(r.ms)} ms in phase ${phase}`);
      else if (r.status >= 500 && r.status !== 503) bad.push(`${what}: ${r.status} ${r.text}`);
      else if (r.status === 503) downResponses.push(r);
    };

    const writer = async (w: number) => {
      for (let i = 0; !stop; i++) {
        const id = `w${w}-${i}`;
        // Retry the same id until acknowledged, as a client would.
        for (;;) {
          const r = await attempt(replica, 'POST', '/v1/threads/pg-restart/messages', {
            headers: { ...auth, 'x-user-id': `writer-${w}` },
            body: { id, body: { w, i } },
            timeoutMs: REQUEST_TIMEOUT_MS,
          });
          record(r, `POST ${id}`);
          if (r.status === 201) {
            acks.set(id, r.body.seq);
            break;
          }
          if (r.status !== 503 || bad.length > 0) return;
          await sleep(100);
        }
      }
    };
    const reader = async () => {
      while (!stop) {
        const r = await attempt(replica, 'GET', '/v1/threads/pg-restart/messages?limit=5', {
          headers: auth,
          timeoutMs: REQUEST_TIMEOUT_MS,
        });
        record(r, 'GET messages');
        await sleep(50);
      }
    };
    const load = Promise.all([...Array.from({ length: WRITERS }, (_, w) => writer(w)), reader(), reader()]);

    while (acks.size < 100 && bad.length === 0) await sleep(20);
    const acksBeforeStop = acks.size;
    phase = 'down';
    await postgres.stop();
    const downAt = Date.now();
    await sleep(DOWN_MS);
    const during503 = downResponses.length;

    phase = 'restarting';
    postgres = await startEmbeddedPostgres(dir, port);
    const upAt = Date.now();
    phase = 'up';
    // Serving again: a fresh write and a fresh read both succeed.
    let recoveredAt = 0;
    for (let n = 0; Date.now() - upAt < 30_000; n++) {
      const w = await attempt(replica, 'POST', '/v1/threads/pg-restart/messages', {
        headers: { ...auth, 'x-user-id': 'probe' },
        body: { id: `probe-${n}`, body: n },
      });
      record(w, 'probe');
      if (w.status === 201) {
        acks.set(`probe-${n}`, w.body.seq);
        const r = await attempt(replica, 'GET', '/v1/threads/pg-restart', { headers: auth });
        if (r.status === 200) {
          recoveredAt = Date.now();
          break;
        }
      }
      await sleep(100);
    }
    const acksAtRecovery = acks.size;
    // Readiness (database, migrations, LISTEN) comes back too, so a load balancer re-admits it.
    let readyMs = -1;
    while (Date.now() - upAt < 30_000) {
      const r = await attempt(replica, 'GET', '/readyz');
      if (r.status === 200) {
        readyMs = Date.now() - upAt;
        break;
      }
      await sleep(100);
    }
    while (acks.size < acksAtRecovery + 100 && bad.length === 0 && Date.now() - upAt < 60_000) await sleep(20);
    stop = true;
    await load;

    assert.deepEqual(bad, [], 'no 5xx other than 503, no hung or dropped requests');
    assert.equal(replica.alive, true, `the server did not crash:\n${replica.output()}`);
    assert.ok(during503 > 0, 'requests were refused with 503 while PostgreSQL was down');
    for (const r of downResponses) {
      assert.match(r.contentType!, /^application\/problem\+json/, r.text);
      assert.ok(Number(r.headers!.get('retry-after')) >= 1, 'Retry-After is set');
      assert.equal(r.body.status, 503);
      for (const k of ['type', 'title', 'detail', 'request_id'])
        assert.equal(typeof r.body[k], 'string', `${k} in ${r.text}`);
      assert.doesNotMatch(r.text ?? '', /ECONNREFUSED|at .*\.ts:|select |insert /i, 'no internals leak');
    }
    assert.ok(recoveredAt > 0, `the service recovered:\n${replica.output()}`);
    const recoveryMs = recoveredAt - upAt;
    assert.ok(recoveryMs <= 5_000, `serving again ${recoveryMs} ms after PostgreSQL was back (must be ≤ 5 s)`);
    assert.ok(acks.size > acksAtRecovery, 'writes continue after recovery');
    assert.ok(readyMs >= 0, 'GET /readyz is 200 again after PostgreSQL came back');

    // Nothing acknowledged was lost; the log is gapless.
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const { rows } = await client.query<{ id: string; seq: string }>(
        `select id, seq from messages where thread_id = 'pg-restart'`,
      );
      const stored = new Map(rows.map((r) => [r.id, Number(r.seq)]));
      for (const [id, seq] of acks) assert.equal(stored.get(id), seq, `acknowledged ${id} is stored with seq ${seq}`);
      // Unacknowledged in-flight writes were retried with the same id until acknowledged, so
      // nothing beyond the acknowledged set exists either.
      assert.equal(rows.length, acks.size, 'no unacknowledged or duplicate messages');
      const ev = await client.query<{ seq: string }>(
        `select seq from events where thread_id = 'pg-restart' order by seq`,
      );
      const seqs = ev.rows.map((r) => Number(r.seq));
      assert.deepEqual(
        seqs,
        Array.from({ length: seqs.length }, (_, k) => k + 1),
      );
    } finally {
      await client.end();
    }
    process.stdout.write(
      `# fault postgres-restart: 1 PostgreSQL stop/start (down ${upAt - downAt} ms); ${sent} requests sent, ` +
        `${downResponses.length} answered 503 problem+json with Retry-After, 0 other 5xx, slowest answer ${Math.round(slowest)} ms; ` +
        `serving again ${recoveryMs} ms after PostgreSQL was back, /readyz 200 after ${readyMs} ms; ${acks.size} acknowledged writes verified (${acksBeforeStop} before the stop), log gapless\n`,
    );
  });
});
