/**
 * WebSocket `send` vs the REST append: messages/s appended, same server, same run.
 *
 *   npm run bench:ws-send -- [--duration 10] [--warmup 2] [--rounds 2] [--sockets 64] [--window 8]
 *
 * Starts the real service (src/server.ts, one process, NODE_ENV=production, rate limiter off)
 * against a fresh database. Each round runs, one after another:
 *  - rest: autocannon, `--sockets` keep-alive connections, closed loop, POST …/messages;
 *  - ws×1: `--sockets` WebSockets on /v1/ws, each with one `send` awaiting its ack (closed loop,
 *    the same concurrency as rest);
 *  - ws×W: the same sockets, each keeping `--window` sends awaiting their acks.
 * Every append goes to a random one of 1,000 existing threads, as user "u" with the secret key.
 * Afterwards every acknowledged message is checked to be stored exactly once. Reports messages/s,
 * p50/p99 of send → ack, and the ratio to rest. DATABASE_URL names a PostgreSQL server (a scratch
 * database is created and dropped on it); without it an embedded PostgreSQL is started.
 */
import { availableParallelism, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import WebSocket from 'ws';
import { createDb } from '../src/lib/db';
import { scratchDatabase, startServer, type Server } from './common';

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '2' },
    sockets: { type: 'string', default: '64' },
    window: { type: 'string', default: '8' },
  },
});
const duration = Number(args.duration);
const warmup = Number(args.warmup);
const rounds = Number(args.rounds);
const sockets = Number(args.sockets);
const windowSize = Number(args.window);
const THREADS = 1000;
const say = (s: string) => process.stdout.write(s + '\n');
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
};
const randomThread = () => `t${Math.floor(Math.random() * THREADS)}`;

interface Result {
  perSecond: number;
  p50: number;
  p99: number;
  failures: number;
}

/** REST: autocannon, closed loop, one request per connection at a time. */
function restLoad(base: string, key: string, seconds: number, acked: Set<string>): Promise<Result> {
  const body = JSON.stringify({ body: { text: 'hello from the ws-send benchmark' } });
  return new Promise((resolve, reject) => {
    autocannon(
      {
        url: base,
        connections: sockets,
        duration: seconds,
        requests: [
          {
            method: 'POST',
            setupRequest: (req) => ({
              ...req,
              path: `/v1/threads/${randomThread()}/messages`,
              headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'x-user-id': 'u' },
              body,
            }),
            onResponse: (status, resBody) => {
              if (status === 201) acked.add((JSON.parse(resBody) as { id: string }).id);
            },
          },
        ],
      },
      (err, r) =>
        err
          ? reject(err)
          : resolve({
              perSecond: r.requests.total / seconds,
              p50: r.latency.p50,
              p99: r.latency.p99,
              failures: r.non2xx + r.errors,
            }),
    );
  });
}

/** WebSocket: `sockets` sockets, each keeping `window` sends awaiting their acks for `seconds`. */
async function wsLoad(base: string, key: string, seconds: number, window: number, acked: Set<string>): Promise<Result> {
  const url = `${base.replace(/^http/, 'ws')}/v1/ws`;
  const conns = await Promise.all(
    Array.from(
      { length: sockets },
      () =>
        new Promise<WebSocket>((resolve, reject) => {
          const ws = new WebSocket(url, { headers: { authorization: `Bearer ${key}`, 'x-user-id': 'u' } });
          ws.once('open', () => resolve(ws));
          ws.once('error', reject);
        }),
    ),
  );
  const latencies: number[] = [];
  let done = 0;
  let failures = 0;
  let stopping = false;
  const started = performance.now();
  const timer = setTimeout(() => (stopping = true), seconds * 1000);
  await Promise.all(
    conns.map(
      (ws, s) =>
        new Promise<void>((resolve) => {
          const sentAt = new Map<string, number>();
          let n = 0;
          const next = () => {
            if (stopping) {
              if (sentAt.size === 0) resolve();
              return;
            }
            const id = `${s}.${n++}`;
            sentAt.set(id, performance.now());
            ws.send(
              JSON.stringify({
                type: 'send',
                id,
                thread_id: randomThread(),
                message: { body: { text: 'hello from the ws-send benchmark' } },
              }),
            );
          };
          ws.on('message', (data: Buffer) => {
            const f = JSON.parse(data.toString()) as { type: string; id?: string; message?: { id: string } };
            if ((f.type !== 'ack' && f.type !== 'error') || !f.id || !sentAt.has(f.id)) return;
            latencies.push(performance.now() - sentAt.get(f.id)!);
            sentAt.delete(f.id);
            if (f.type === 'ack') {
              done++;
              acked.add(f.message!.id);
            } else failures++;
            next();
          });
          ws.on('close', () => resolve());
          for (let i = 0; i < window; i++) next();
        }),
    ),
  );
  clearTimeout(timer);
  const elapsed = (performance.now() - started) / 1000;
  for (const ws of conns) ws.close();
  return { perSecond: done / elapsed, p50: pct(latencies, 50), p99: pct(latencies, 99), failures };
}

async function main() {
  const database = await scratchDatabase('ws', [{ name: 'ws-send bench' }]);
  const db = createDb(database.url, 4);
  let server: Server | null = null;
  try {
    const key = database.secretKey;
    server = await startServer(database.url, { WEB_CONCURRENCY: '1' });
    const base = server.url;
    // Threads exist first, so every append takes the merged fast path.
    for (let i = 0; i < THREADS; i += 100)
      await Promise.all(
        Array.from({ length: 100 }, (_, j) =>
          fetch(`${base}/v1/threads`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
            body: JSON.stringify({ id: `t${i + j}`, type: 'channel' }),
          }).then((r) => {
            if (r.status !== 201) throw new Error(`thread t${i + j}: ${r.status}`);
          }),
        ),
      );

    say(
      `ws-send: ${sockets} sockets/connections, ${duration} s per mode, ${rounds} round(s), window ${windowSize}; ` +
        `${availableParallelism()} CPUs, load ${loadavg()[0].toFixed(2)}`,
    );
    const acked = new Set<string>();
    const modes: Array<[string, (s: number) => Promise<Result>]> = [
      ['rest', (s) => restLoad(base, key, s, acked)],
      ['ws×1', (s) => wsLoad(base, key, s, 1, acked)],
      [`ws×${windowSize}`, (s) => wsLoad(base, key, s, windowSize, acked)],
    ];
    if (warmup > 0) for (const [, run] of modes) await run(warmup);
    const results = new Map<string, Result[]>();
    for (let r = 0; r < rounds; r++)
      for (const [name, run] of modes) {
        const res = await run(duration);
        results.set(name, [...(results.get(name) ?? []), res]);
        say(
          `  round ${r + 1} ${name.padEnd(6)} ${res.perSecond.toFixed(0).padStart(7)} msg/s  p50 ${res.p50.toFixed(1)} ms  p99 ${res.p99.toFixed(1)} ms  failures ${res.failures}`,
        );
      }

    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const rest = mean(results.get('rest')!.map((x) => x.perSecond));
    say('');
    say('| mode | messages/s | p50 ms | p99 ms | × REST |');
    say('| ---- | ---------: | -----: | -----: | -----: |');
    for (const [name, rs] of results)
      say(
        `| ${name} | ${mean(rs.map((x) => x.perSecond)).toFixed(0)} | ${mean(rs.map((x) => x.p50)).toFixed(1)} | ${mean(rs.map((x) => x.p99)).toFixed(1)} | ${(mean(rs.map((x) => x.perSecond)) / rest).toFixed(2)} |`,
      );

    // Every acknowledged message is stored, exactly once.
    const stored = Number((await db('messages').count('* as n'))[0].n);
    const ids = [...acked];
    let found = 0;
    for (let i = 0; i < ids.length; i += 5000)
      found += Number(
        (
          await db('messages')
            .whereIn('id', ids.slice(i, i + 5000))
            .count('* as n')
        )[0].n,
      );
    say(`\nverified: ${found} of ${acked.size} acknowledged messages stored; ${stored} messages in total`);
    if (found !== acked.size) throw new Error('an acknowledged message is missing');
  } finally {
    await server?.stop();
    await db.destroy();
    await database.drop();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
