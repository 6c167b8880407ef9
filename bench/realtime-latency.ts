/**
 * Publish-to-receive latency of the live tail across two replicas.
 *
 *   npx tsx bench/realtime-latency.ts [--subscribers 1000] [--messages 200] [--rate 20] [--threads 1]
 *   (`npm run bench:realtime` runs the latency and the memory benchmark with their defaults)
 *
 * Two servers (src/server.ts child processes) share one scratch database. `subscribers`
 * WebSockets, alternating between the two, subscribe to `threads` threads. One publisher
 * appends `messages` messages through server 1 at `rate` per second (open loop). For every
 * (message, subscriber) pair it records the time from sending the POST to the event arriving
 * (publish → receive), and from the 201 arriving to the event arriving (ack → receive).
 * DATABASE_URL names a PostgreSQL server; without it an embedded one is started. Loopback only.
 */
import { availableParallelism, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import type WebSocket from 'ws';
import { percentile, request, scratchDatabase, startServer, subscribedSocket } from './realtime-common';

const { values: args } = parseArgs({
  options: {
    subscribers: { type: 'string', default: '1000' },
    messages: { type: 'string', default: '200' },
    rate: { type: 'string', default: '20' },
    threads: { type: 'string', default: '1' },
  },
});
const subscribers = Number(args.subscribers);
const messages = Number(args.messages);
const rate = Number(args.rate);
const threads = Number(args.threads);

async function main() {
  const started = Date.now();
  const database = await scratchDatabase('rt_latency');
  const servers = [await startServer(database.url), await startServer(database.url)];
  const sockets: WebSocket[] = [];
  try {
    const key = database.secretKey;
    const threadIds = Array.from({ length: threads }, (_, i) => `bench-${i}`);
    for (const id of threadIds) await request(servers[0].url, key, 'POST', '/v1/threads', { id, type: 'channel' });

    const sentAt = new Map<string, number>();
    const ackedAt = new Map<string, number>();
    const publishToReceive: number[] = [];
    const ackToReceive: number[] = [];
    let received = 0;
    const onMessage = (data: string) => {
      if (!data.startsWith('{"type":"event"')) return;
      const now = performance.now();
      const id = /"message_id":"([^"]+)"/.exec(data)?.[1];
      if (!id) return;
      received++;
      publishToReceive.push(now - sentAt.get(id)!);
      receipts.push([id, now]);
    };
    const receipts: Array<[string, number]> = [];
    for (let i = 0; i < subscribers; i += 100) {
      const batch = Array.from({ length: Math.min(100, subscribers - i) }, (_, j) => {
        const n = i + j;
        return subscribedSocket(servers[n % 2].url, key, threadIds[n % threads], onMessage);
      });
      sockets.push(...(await Promise.all(batch)));
    }
    process.stdout.write(`${subscribers} subscribers ready (${sockets.length} sockets over 2 servers, ${threads} thread(s))\n`);

    const perThread = new Map(threadIds.map((t) => [t, 0]));
    for (let n = 0; n < subscribers; n++) perThread.set(threadIds[n % threads], perThread.get(threadIds[n % threads])! + 1);
    let expected = 0;
    const interval = 1000 / rate;
    const t0 = performance.now();
    const posts: Promise<void>[] = [];
    for (let k = 0; k < messages; k++) {
      const wait = t0 + k * interval - performance.now();
      if (wait > 0) await sleep(wait);
      const id = `k${k}`;
      const thread = threadIds[k % threads];
      expected += perThread.get(thread)!;
      sentAt.set(id, performance.now());
      posts.push(request(servers[0].url, key, 'POST', `/v1/threads/${thread}/messages`, { id, body: { k } }).then(() => void ackedAt.set(id, performance.now())));
    }
    await Promise.all(posts);
    const deadline = Date.now() + 60_000;
    while (received < expected && Date.now() < deadline) await sleep(50);

    // Negative: the event reached the subscriber before the publisher had read its 201.
    for (const [id, at] of receipts) ackToReceive.push(at - ackedAt.get(id)!);
    publishToReceive.sort((a, b) => a - b);
    ackToReceive.sort((a, b) => a - b);
    const fmt = (v: number) => v.toFixed(1);
    const row = (name: string, xs: number[]) => `| ${name} | ${xs.length} | ${fmt(percentile(xs, 50))} | ${fmt(percentile(xs, 90))} | ${fmt(percentile(xs, 99))} | ${fmt(xs[xs.length - 1])} |`;
    process.stdout.write(
      [
        '',
        `realtime latency: nproc=${availableParallelism()}, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}, node ${process.version}, ${database.embedded ? 'embedded PostgreSQL' : 'DATABASE_URL PostgreSQL'}`,
        `${subscribers} WebSocket subscribers over 2 servers, ${threads} thread(s), ${messages} messages at ${rate}/s through server 1; received ${received} of ${expected} deliveries in ${((Date.now() - started) / 1000).toFixed(0)} s total`,
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
    for (const ws of sockets) ws.terminate();
    for (const s of servers) await s.stop();
    await database.drop();
  }
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
