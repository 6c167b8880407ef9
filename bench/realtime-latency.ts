/**
 * Publish-to-receive latency of the live tail across two replicas.
 *
 *   npx tsx bench/realtime-latency.ts [--subscribers 1000] [--messages 200] [--rate 20] [--threads 1] [--clients 2]
 *   (`npm run bench:realtime` runs the latency and the memory benchmark with their defaults)
 *
 * Two servers (src/server.ts child processes) share one scratch database. `subscribers`
 * WebSockets, alternating between the two, subscribe to `threads` threads. One publisher
 * appends `messages` messages through server 1 at `rate` per second (open loop). For every
 * (message, subscriber) pair it records the time from sending the POST to the event arriving
 * (publish → receive), and from the 201 arriving to the event arriving (ack → receive).
 * The subscribers live in `clients` worker threads (default 2), so one client event loop is
 * not the bottleneck; times are absolute (performance.timeOrigin + now()) across threads.
 * DATABASE_URL names a PostgreSQL server; without it an embedded one is started. Loopback only.
 */
import { availableParallelism, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type WebSocket from 'ws';
import { percentile, request, scratchDatabase, startServer, subscribedSocket } from './common';

const now = () => performance.timeOrigin + performance.now();

interface WorkerJob {
  urls: string[];
  key: string;
  threadIds: string[];
  /** Global subscriber numbers this worker owns (n % 2 picks the server, n % threads the thread). */
  subscribers: number[];
}

/** Worker: opens its sockets, reports ready, records [message index, receive time] until told to finish. */
async function runWorker(job: WorkerJob) {
  const ks: number[] = [];
  const times: number[] = [];
  const sockets: WebSocket[] = [];
  const onMessage = (data: string) => {
    if (!data.startsWith('{"type":"event"')) return;
    const at = now();
    const m = /"message_id":"k(\d+)"/.exec(data);
    if (!m) return;
    ks.push(Number(m[1]));
    times.push(at);
  };
  for (let i = 0; i < job.subscribers.length; i += 100) {
    const batch = job.subscribers
      .slice(i, i + 100)
      .map((n) => subscribedSocket(job.urls[n % 2], job.key, job.threadIds[n % job.threadIds.length], onMessage));
    sockets.push(...(await Promise.all(batch)));
  }
  parentPort!.postMessage({ type: 'ready' });
  parentPort!.on('message', (msg: { type: string }) => {
    if (msg.type === 'count') parentPort!.postMessage({ type: 'count', received: ks.length });
    if (msg.type === 'finish') {
      for (const ws of sockets) ws.terminate();
      parentPort!.postMessage({ type: 'result', ks, times });
    }
  });
}

function ask<T>(w: Worker, type: string, reply: string): Promise<T> {
  return new Promise((resolve) => {
    const on = (m: { type: string }) => {
      if (m.type !== reply) return;
      w.off('message', on);
      resolve(m as T);
    };
    w.on('message', on);
    w.postMessage({ type });
  });
}

async function main() {
  const { values: args } = parseArgs({
    options: {
      subscribers: { type: 'string', default: '1000' },
      messages: { type: 'string', default: '200' },
      rate: { type: 'string', default: '20' },
      threads: { type: 'string', default: '1' },
      clients: { type: 'string', default: '2' },
    },
  });
  const subscribers = Number(args.subscribers);
  const messages = Number(args.messages);
  const rate = Number(args.rate);
  const threads = Number(args.threads);
  const clients = Number(args.clients);

  const started = Date.now();
  const database = await scratchDatabase('rt_latency');
  const servers = [await startServer(database.url), await startServer(database.url)];
  const workers: Worker[] = [];
  try {
    const key = database.secretKey;
    const threadIds = Array.from({ length: threads }, (_, i) => `bench-${i}`);
    for (const id of threadIds) await request(servers[0].url, key, 'POST', '/v1/threads', { id, type: 'channel' });

    for (let c = 0; c < clients; c++) {
      const job: WorkerJob = {
        urls: servers.map((s) => s.url),
        key,
        threadIds,
        subscribers: Array.from({ length: subscribers }, (_, n) => n).filter((n) => n % clients === c),
      };
      // Workers do not inherit tsx's loader: register its require hook, then load this file.
      const w = new Worker(`require('tsx/cjs'); require(${JSON.stringify(__filename)});`, {
        eval: true,
        workerData: job,
      });
      workers.push(w);
    }
    await Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((resolve, reject) => {
            w.once('message', () => resolve());
            w.once('error', reject);
          }),
      ),
    );
    process.stdout.write(
      `${subscribers} subscribers ready (over 2 servers, ${threads} thread(s), ${clients} client threads)\n`,
    );

    const perThread = new Map(threadIds.map((t) => [t, 0]));
    for (let n = 0; n < subscribers; n++)
      perThread.set(threadIds[n % threads], perThread.get(threadIds[n % threads])! + 1);
    const sentAt: number[] = [];
    const ackedAt: number[] = [];
    let expected = 0;
    const interval = 1000 / rate;
    const t0 = performance.now();
    const posts: Promise<void>[] = [];
    for (let k = 0; k < messages; k++) {
      const wait = t0 + k * interval - performance.now();
      if (wait > 0) await sleep(wait);
      const thread = threadIds[k % threads];
      expected += perThread.get(thread)!;
      sentAt[k] = now();
      posts.push(
        request(servers[0].url, key, 'POST', `/v1/threads/${thread}/messages`, { id: `k${k}`, body: { k } }).then(
          () => void (ackedAt[k] = now()),
        ),
      );
    }
    await Promise.all(posts);
    const deadline = Date.now() + 60_000;
    let received = 0;
    for (;;) {
      received = (await Promise.all(workers.map((w) => ask<{ received: number }>(w, 'count', 'count')))).reduce(
        (a, r) => a + r.received,
        0,
      );
      if (received >= expected || Date.now() > deadline) break;
      await sleep(100);
    }
    const results = await Promise.all(
      workers.map((w) => ask<{ ks: number[]; times: number[] }>(w, 'finish', 'result')),
    );
    const publishToReceive: number[] = [];
    const ackToReceive: number[] = [];
    for (const r of results) {
      for (let i = 0; i < r.ks.length; i++) {
        publishToReceive.push(r.times[i] - sentAt[r.ks[i]]);
        // Negative: the event reached the subscriber before the publisher had read its 201.
        ackToReceive.push(r.times[i] - ackedAt[r.ks[i]]);
      }
    }
    publishToReceive.sort((a, b) => a - b);
    ackToReceive.sort((a, b) => a - b);
    const fmt = (v: number) => v.toFixed(1);
    const row = (name: string, xs: number[]) =>
      `| ${name} | ${xs.length} | ${fmt(percentile(xs, 50))} | ${fmt(percentile(xs, 90))} | ${fmt(percentile(xs, 99))} | ${fmt(xs[xs.length - 1])} |`;
    process.stdout.write(
      [
        '',
        `realtime latency: nproc=${availableParallelism()}, load average ${loadavg()
          .map((l) => l.toFixed(2))
          .join(
            ' ',
          )}, node ${process.version}, ${database.embedded ? 'embedded PostgreSQL' : 'DATABASE_URL PostgreSQL'}`,
        `${subscribers} WebSocket subscribers over 2 servers (${clients} client threads), ${threads} thread(s), ${messages} messages at ${rate}/s through server 1; received ${received} of ${expected} deliveries in ${((Date.now() - started) / 1000).toFixed(0)} s total`,
        '',
        '| measure | samples | p50 ms | p90 ms | p99 ms | max ms |',
        '| --- | ---: | ---: | ---: | ---: | ---: |',
        row('publish → receive', publishToReceive),
        row('ack (201) → receive (negative: event before the 201)', ackToReceive),
        '',
      ].join('\n'),
    );
    if (received !== expected) process.exitCode = 1;
  } finally {
    for (const w of workers) await w.terminate();
    for (const s of servers) await s.stop();
    await database.drop();
  }
}

if (isMainThread) {
  main().catch((e) => {
    process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  });
} else {
  runWorker(workerData as WorkerJob).catch((e) => {
    process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  });
}
