/**
 * The webhooks benchmark's receiver: a child process of bench/webhooks.ts (its own event loop and
 * CPU, measured apart from the load generator and the service). HTTP on loopback, answers 204 to
 * every POST and records, per distinct event (thread, seq), commit → arrival: the arrival time
 * minus the event's `created_at` (the group transaction's now(), set just before its commit; the
 * same machine's clock as this process). Understands the one-event body and `events.batch`.
 *
 * IPC (process.send): `{ cmd: 'reset' }` forgets everything; `{ cmd: 'stats' }` answers
 * `{ events, posts, connections, firstAt, lastAt, latencies }` (epoch ms, latencies in ms).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

interface EventData {
  thread_id: string;
  seq: number;
  created_at: string;
}

const latency = new Map<string, number>();
let posts = 0;
let connections = 0;
let firstAt = 0;
let lastAt = 0;

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const at = performance.timeOrigin + performance.now();
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
      type: string;
      data: EventData & { events?: EventData[] };
    };
    const events = body.type === 'events.batch' ? body.data.events! : [body.data];
    for (const e of events) {
      const k = `${e.thread_id}#${e.seq}`;
      if (!latency.has(k)) latency.set(k, at - Date.parse(e.created_at));
    }
    posts++;
    if (!firstAt) firstAt = at;
    lastAt = at;
    res.writeHead(204).end();
  });
});
server.on('connection', () => connections++);
server.keepAliveTimeout = 30_000;

process.on('message', (m: { cmd: 'reset' | 'stats' }) => {
  if (m.cmd === 'reset') {
    latency.clear();
    posts = connections = firstAt = lastAt = 0;
    process.send!({ cmd: 'reset' });
  } else {
    process.send!({
      cmd: 'stats',
      events: latency.size,
      posts,
      connections,
      firstAt,
      lastAt,
      latencies: [...latency.values()],
    });
  }
});
process.on('disconnect', () => process.exit(0));

server.listen(0, '127.0.0.1', () => process.send!({ cmd: 'ready', port: (server.address() as AddressInfo).port }));
