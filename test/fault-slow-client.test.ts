import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createParser } from 'eventsource-parser';
import WebSocket from 'ws';
import { createDb } from '../src/lib/db';
import { createKeysStore } from '../src/modules/keys/keys-store';
import { createProjectsService } from '../src/modules/projects/projects-service';
import { createProjectsStore } from '../src/modules/projects/projects-store';
import { createTestDatabase } from './helpers/db';
import { attempt, sleep } from './helpers/load';
import { spawnReplica, type Replica } from './helpers/processes';

const MAX_BUFFERED = 1024 * 1024;
const STALLED_SSE = 6;
const STALLED_WS = 6;
const BATCHES = 120;
const PER_BATCH = 50;
const BODY_BYTES = 8 * 1024;
const MESSAGES = BATCHES * PER_BATCH;
/**
 * Unbounded buffering would hold every event for every stalled subscriber:
 * 12 × 6,000 × 8 KiB ≈ 590 MB on top of the heap churn of fanning 48 MB out to the healthy
 * subscribers. The limit is half of the unbounded total: bounded buffering stays far below it,
 * unbounded buffering far above. (It was 200 MB; main's code measured 213–255 MB on 2026-12-02
 * with embedded PostgreSQL, all of it churn: the stalled sockets were cut at 1 MiB each.)
 */
const RSS_GROWTH_LIMIT = ((STALLED_SSE + STALLED_WS) * MESSAGES * BODY_BYTES) / 2;

const rssOf = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

/** An SSE client that sends its request and then never reads: the kernel buffers fill, then the server's. */
function stalledSse(port: number, path: string, key: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${key}\r\nAccept: text/event-stream\r\n\r\n`,
      );
      socket.once('data', (first) => {
        if (!first.toString('latin1').startsWith('HTTP/1.1 200'))
          reject(new Error(`tail refused: ${first.toString('latin1').slice(0, 200)}`));
        socket.pause();
        resolve(socket);
      });
    });
    socket.on('error', () => undefined);
  });
}

/** A WebSocket client that subscribes and then stops reading its socket. */
function stalledWs(url: string, key: string, threadId: string): Promise<{ ws: WebSocket; closeCode: Promise<number> }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${key}` } });
    const closeCode = new Promise<number>((r) => ws.once('close', (code) => r(code)));
    ws.on('error', () => undefined);
    ws.once('open', () => ws.send(JSON.stringify({ type: 'subscribe', thread_id: threadId })));
    ws.on('message', (data) => {
      const m = JSON.parse(String(data));
      if (m.type === 'subscribed' || m.type === 'ready') {
        (ws as unknown as { _socket: Socket })._socket.pause();
        ws.removeAllListeners('message');
        resolve({ ws, closeCode });
      } else if (m.type === 'error') reject(new Error(JSON.stringify(m)));
    });
  });
}

describe('fault: stalled SSE and WebSocket clients', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let replica: Replica;
  let sk: string;

  before(async () => {
    database = await createTestDatabase();
    const db = createDb(database.url, 2);
    try {
      const projects = createProjectsService({
        db,
        projectsStore: createProjectsStore(),
        keysStore: createKeysStore(),
        signingSecretGraceSeconds: 0,
      });
      sk = (await projects.createProject({ name: 'slow clients' })).keys.secret;
    } finally {
      await db.destroy();
    }
    replica = await spawnReplica('R', {
      DATABASE_URL: database.url,
      REALTIME_MAX_BUFFERED_BYTES: String(MAX_BUFFERED),
      REALTIME_HEARTBEAT_MS: '1000',
      // Floods of batches (each message a unit of the write limit): this test is about memory and backpressure.
      RATE_LIMIT_ENABLED: 'false',
    });
  });
  after(async () => {
    await replica?.stop();
    await database?.drop();
  });

  test('stalled subscribers do not hold back healthy ones or writers, and replica memory stays bounded', async () => {
    const auth = { authorization: `Bearer ${sk}` };
    assert.equal(
      (await attempt(replica, 'POST', '/v1/threads', { headers: auth, body: { id: 'slow', type: 'channel' } })).status,
      201,
    );

    const stalledSses = await Promise.all(
      Array.from({ length: STALLED_SSE }, () => stalledSse(replica.port, '/v1/threads/slow/tail?after_seq=0', sk)),
    );
    const wsUrl = replica.url.replace('http', 'ws') + '/v1/ws';
    const stalledWss = await Promise.all(Array.from({ length: STALLED_WS }, () => stalledWs(wsUrl, sk, 'slow')));

    // Healthy subscribers: one SSE, one WebSocket, reading as fast as they can and behaving as
    // the protocol asks (on `event: reconnect` / close 4008, resume from the last seq seen).
    // Both must see every event exactly once, in order.
    let stop = false;
    const failures: string[] = [];
    const reconnects = { sse: 0, ws: 0 };
    const sseSeqs: number[] = [];
    let sseAbort = new AbortController();
    const healthySse = (async () => {
      while (!stop) {
        const last = sseSeqs.length ? sseSeqs[sseSeqs.length - 1] : 0;
        sseAbort = new AbortController();
        let res: Response;
        try {
          res = await fetch(`${replica.url}/v1/threads/slow/tail`, {
            headers: { ...auth, accept: 'text/event-stream', 'last-event-id': String(last) },
            signal: sseAbort.signal,
          });
        } catch {
          await sleep(200);
          continue;
        }
        if (res.status !== 200) {
          failures.push(`healthy SSE reconnect answered ${res.status}: ${await res.text()}`);
          await sleep(200);
          continue;
        }
        const parser = createParser({
          onEvent: (m) => {
            if (m.event === undefined && m.id) sseSeqs.push(Number(m.id));
          },
        });
        const decoder = new TextDecoder();
        try {
          for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>)
            parser.feed(decoder.decode(chunk, { stream: true }));
        } catch {
          /* aborted */
        }
        if (!stop) reconnects.sse++;
      }
    })();
    const wsSeqs: number[] = [];
    let healthyWs: WebSocket | null = null;
    const healthyWsLoop = (async () => {
      while (!stop) {
        const after = wsSeqs.length ? wsSeqs[wsSeqs.length - 1] : 0;
        const ws = (healthyWs = new WebSocket(wsUrl, { headers: auth }));
        await new Promise<void>((resolve) => {
          ws.once('open', () => ws.send(JSON.stringify({ type: 'subscribe', thread_id: 'slow', after_seq: after })));
          ws.on('message', (data) => {
            const m = JSON.parse(String(data));
            if (m.type === 'event') wsSeqs.push(m.event.seq);
          });
          ws.once('close', () => resolve());
          ws.once('error', () => undefined);
        });
        if (!stop) {
          reconnects.ws++;
          await sleep(50);
        }
      }
    })();
    await sleep(500);

    try {
      const baseline = rssOf(replica.child.pid!);
      let peak = baseline;
      const sampler = setInterval(() => {
        try {
          peak = Math.max(peak, rssOf(replica.child.pid!));
        } catch {
          /* exited */
        }
      }, 50);

      // The writer: 6,000 messages of 8 KiB in batches; every batch must be acknowledged.
      const text = 'x'.repeat(BODY_BYTES - 64);
      let acked = 0;
      for (let b = 0; b < BATCHES; b++) {
        const messages = Array.from({ length: PER_BATCH }, (_, i) => ({
          id: `b${b}-m${i}`,
          author: 'writer',
          body: { text },
        }));
        const r = await attempt(replica, 'POST', '/v1/threads/slow/messages/batch', {
          headers: auth,
          body: { messages },
          timeoutMs: 30_000,
        });
        assert.equal(r.status, 201, r.text);
        acked += PER_BATCH;
      }
      const lastSeq = MESSAGES + 1;
      const expected = Array.from({ length: lastSeq }, (_, i) => i + 1);
      for (let waited = 0; (sseSeqs.length < lastSeq || wsSeqs.length < lastSeq) && waited < 60_000; waited += 100)
        await sleep(100);
      clearInterval(sampler);
      peak = Math.max(peak, rssOf(replica.child.pid!));

      assert.deepEqual(sseSeqs, expected, 'the healthy SSE subscriber got every event once, in order');
      assert.deepEqual(wsSeqs, expected, 'the healthy WebSocket subscriber got every event once, in order');
      const growth = peak - baseline;
      assert.ok(
        growth < RSS_GROWTH_LIMIT,
        `replica RSS grew ${Math.round(growth / 1048576)} MB with ${STALLED_SSE + STALLED_WS} stalled subscribers`,
      );

      // The stalled WebSockets were cut off as slow consumers (visible once they read again).
      for (const { ws } of stalledWss) (ws as unknown as { _socket: Socket })._socket.resume();
      const wsCodes = await Promise.all(
        stalledWss.map(({ ws, closeCode }) => Promise.race([closeCode, sleep(15_000).then(() => ws.readyState)])),
      );
      for (const code of wsCodes) assert.ok(code === 4008 || code === 1006, `stalled WebSocket closed (code ${code})`);

      // The stalled SSE streams were told to reconnect, and got far less than everything.
      let sseReceived = 0;
      const sseTold = await Promise.all(
        stalledSses.map(
          (socket) =>
            new Promise<boolean>((resolve) => {
              let seen = '';
              const done = (told: boolean) => {
                socket.destroy();
                resolve(told);
              };
              const timer = setTimeout(() => done(/slow_consumer/.test(seen)), 15_000);
              socket.on('data', (c: Buffer) => {
                sseReceived += c.length;
                seen = (seen + c.toString('latin1')).slice(-4096);
                if (/slow_consumer/.test(seen)) {
                  clearTimeout(timer);
                  done(true);
                }
              });
              socket.on('close', () => {
                clearTimeout(timer);
                done(/slow_consumer/.test(seen));
              });
              socket.resume();
            }),
        ),
      );
      assert.deepEqual(
        sseTold,
        stalledSses.map(() => true),
        'every stalled SSE stream ended with event: reconnect (slow_consumer)',
      );
      assert.deepEqual(failures, []);
      assert.equal(replica.alive, true);
      const still = await attempt(replica, 'GET', '/v1/threads/slow', { headers: auth });
      assert.equal(still.status, 200);
      process.stdout.write(
        `# fault slow-client: ${STALLED_SSE} stalled SSE + ${STALLED_WS} stalled WebSocket subscribers; ${acked} messages (${Math.round((MESSAGES * BODY_BYTES) / 1048576)} MB) appended and acknowledged; ` +
          `healthy SSE and WebSocket subscribers each received all ${lastSeq} events exactly once in order (resuming ${reconnects.sse}/${reconnects.ws} times after reconnect hints); replica RSS ${Math.round(baseline / 1048576)} → peak ${Math.round(peak / 1048576)} MB ` +
          `(unbounded buffering would need ≈ ${Math.round(((STALLED_SSE + STALLED_WS) * MESSAGES * BODY_BYTES) / 1048576)} MB); stalled WebSockets closed with ${[...new Set(wsCodes)].join('/')}; ` +
          `stalled SSE streams got ${Math.round(sseReceived / STALLED_SSE / 1024)} KiB each before event: reconnect\n`,
      );
    } finally {
      stop = true;
      sseAbort.abort();
      (healthyWs as WebSocket | null)?.close();
      await Promise.all([healthySse, healthyWsLoop]);
    }
  });
});
