import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { api, startTestApp, type TestContext } from './helpers/app';
import { spawnReplica } from './helpers/processes';

describe('graceful shutdown of the real server process', () => {
  let t: TestContext;
  let sk: string;
  before(async () => {
    t = await startTestApp();
    sk = (await t.project()).keys.secret;
  });
  after(() => t.stop());

  test('SIGTERM during appends: every acknowledged message is committed and the process exits 0', async () => {
    // Writes wait 20 ms in the group-commit queue, so some are surely in flight at SIGTERM.
    const replica = await spawnReplica('drain', {
      DATABASE_URL: t.databaseUrl,
      LOG_LEVEL: 'info',
      INGEST_MAX_WAIT_MS: '20',
      SHUTDOWN_TIMEOUT_MS: '30000',
    });
    try {
      const created = await api(replica.url, 'POST', '/v1/threads', {
        key: sk,
        body: { id: 'drain', type: 'channel' },
      });
      assert.equal(created.status, 201, created.text);

      const acked: string[] = [];
      let ackedAfterSignal = 0;
      let signalled = false;
      const worker = async (w: number) => {
        for (let i = 0; ; i++) {
          const id = `w${w}-${i}`;
          try {
            const r = await api(replica.url, 'POST', '/v1/threads/drain/messages', {
              key: sk,
              user: `u${w}`,
              body: { id, body: { w, i } },
            });
            if (r.status !== 201) {
              // Refusing new work while draining is allowed; it must say so with a 503.
              assert.equal(r.status, 503, r.text);
              return;
            }
            acked.push(id);
            if (signalled) ackedAfterSignal++;
            if (acked.length === 60 && !signalled) {
              signalled = true;
              replica.child.kill('SIGTERM');
            }
          } catch {
            return; // connection refused or closed: the replica is gone
          }
        }
      };
      await Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));
      const exit = await replica.exited;

      assert.ok(signalled, 'the load reached the point where SIGTERM is sent');
      assert.deepEqual(exit, { code: 0, signal: null }, replica.output());
      assert.ok(ackedAfterSignal > 0, 'requests in flight at SIGTERM were finished, not dropped');
      const { rows } = await t.db.raw(`select id from messages where thread_id = 'drain'`);
      const stored = new Set(rows.map((r: { id: string }) => r.id));
      const lost = acked.filter((id) => !stored.has(id));
      assert.deepEqual(lost, [], 'every 2xx-acknowledged append is in the database');

      const logs = replica
        .output()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { msg: string; reason?: string });
      assert.ok(logs.some((l) => l.msg === 'shutting down' && l.reason === 'SIGTERM'));
      assert.ok(logs.some((l) => l.msg === 'shutdown complete'));
    } finally {
      await replica.kill9();
    }
  });

  test('SIGTERM ends live tails and WebSockets with a reconnect hint, then exits 0', async () => {
    const replica = await spawnReplica('live', { DATABASE_URL: t.databaseUrl, SHUTDOWN_TIMEOUT_MS: '30000' });
    try {
      assert.equal(
        (await api(replica.url, 'POST', '/v1/threads', { key: sk, body: { id: 'live', type: 'channel' } })).status,
        201,
      );
      const tail = await fetch(`${replica.url}/v1/threads/live/tail?after_seq=0`, {
        headers: { authorization: `Bearer ${sk}` },
      });
      assert.equal(tail.status, 200);
      const sseText = tail.text(); // resolves when the server ends the stream

      const ws = new WebSocket(`${replica.url.replace('http', 'ws')}/v1/ws`, {
        headers: { authorization: `Bearer ${sk}`, 'x-user-id': 'u1' },
      });
      const frames: Array<{ type: string }> = [];
      ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
      const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
      await new Promise<void>((resolve, reject) => (ws.once('open', () => resolve()), ws.once('error', reject)));
      ws.send(JSON.stringify({ type: 'subscribe', thread_id: 'live', after_seq: 0 }));
      for (let i = 0; !frames.some((f) => f.type === 'ready'); i++) {
        assert.ok(i < 500, 'the WebSocket subscription became ready');
        await new Promise((r) => setTimeout(r, 10));
      }

      replica.child.kill('SIGTERM');
      assert.match(await sseText, /event: reconnect\ndata: \{"reason":"shutdown"\}/);
      assert.equal(await closed, 1012, 'WebSocket closed with 1012 (service restart): reconnect elsewhere');
      assert.deepEqual(await replica.exited, { code: 0, signal: null }, replica.output());
    } finally {
      await replica.kill9();
    }
  });
});
