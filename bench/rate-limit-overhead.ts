/**
 * Rate limiter overhead on the single-message append path.
 *
 *   npm run bench:rate-limit -- [--mode paired|sequential] [--rounds 4] [--duration 10] [--warmup 3]
 *                               [--connections 32] [--threads 64] [--users 1]
 *
 * Starts the real service as child processes (src/server.ts) against a fresh database, one with
 * RATE_LIMIT_ENABLED=false and one with it on, and drives them with autocannon in closed loop
 * (every connection sends its next append as soon as the last is acknowledged, so the load is
 * the service's maximum). `paired` (default) loads both servers at the same time with half the
 * connections each, so whatever else the machine is doing hits both alike; `sequential` runs
 * one server at a time with all the connections. Rounds alternate the order. Reports req/s,
 * latency, server CPU per request (from /proc) and the overhead, per round and overall.
 * The project's write limit is set far above what the run can send, so every request pays the
 * limiter's full cost and none is refused. DATABASE_URL names a PostgreSQL server (a scratch
 * database is created and dropped on it); without it an embedded PostgreSQL is started.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { createDb } from '../src/lib/db';
import { createLogger } from '../src/lib/logger';
import { createRateLimitStore, type RateLimitStore } from '../src/modules/rate-limit/rate-limit-store';
import { createRateLimiter } from '../src/modules/rate-limit/rate-limiter';
import { scratchDatabase, startServer, type Server } from './common';

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    rounds: { type: 'string', default: '4' },
    connections: { type: 'string', default: '32' },
    threads: { type: 'string', default: '64' },
    users: { type: 'string', default: '1' },
    mode: { type: 'string', default: 'paired' },
  },
});
const duration = Number(args.duration);
const warmup = Number(args.warmup);
const rounds = Number(args.rounds);
const connections = Number(args.connections);
const threadCount = Number(args.threads);
const userCount = Number(args.users);
const paired = args.mode === 'paired';
if (!paired && args.mode !== 'sequential') throw new Error('--mode is paired or sequential');

/** CPU seconds (user + system) a process has used so far, from /proc (Linux); NaN elsewhere. */
function cpuSeconds(pid: number | undefined): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

interface Sample {
  /** Server CPU time per request, in microseconds. */
  cpuUs: number;
  rps: number;
  p50: number;
  p97_5: number;
  p99: number;
  non2xx: number;
  errors: number;
  /** Counts of the non-2xx statuses, e.g. "503×1". */
  statuses: string;
}

/** Appends to `threadCount` threads of its own (`prefix`), so paired servers never contend for a thread's lock. */
function load(
  url: string,
  key: string,
  seconds: number,
  conns: number,
  prefix: string,
): Promise<Omit<Sample, 'cpuUs'>> {
  let n = 0;
  const body = JSON.stringify({ body: { text: 'hello from the rate limiter benchmark' } });
  return new Promise((resolve, reject) => {
    autocannon(
      {
        url,
        connections: conns,
        duration: seconds,
        requests: [
          {
            method: 'POST',
            setupRequest: (req) => {
              const i = n++;
              return {
                ...req,
                path: `/v1/threads/${prefix}-${i % threadCount}/messages`,
                headers: {
                  'content-type': 'application/json',
                  authorization: `Bearer ${key}`,
                  'x-user-id': `user-${i % userCount}`,
                },
                body,
              };
            },
          },
        ],
      },
      (err, r) => {
        if (err) return reject(err);
        const statuses = Object.entries(r.statusCodeStats ?? {})
          .filter(([code]) => !code.startsWith('2'))
          .map(([code, v]) => `${code}×${v.count ?? 0}`)
          .join(' ');
        resolve({
          rps: r.requests.average,
          p50: r.latency.p50,
          p97_5: r.latency.p97_5,
          p99: r.latency.p99,
          non2xx: r.non2xx,
          errors: r.errors,
          statuses,
        });
      },
    );
  });
}

type Mode = 'off' | 'on';
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

async function main() {
  const database = await scratchDatabase('rl', [
    { name: 'rate limit bench', settings: { rate_limits: { write: { limit: 1_000_000, window_seconds: 60 } } } },
  ]);
  const { url: databaseUrl, embedded } = database;
  const results: Record<Mode, Sample[]> = { off: [], on: [] };
  try {
    const [creds] = database.projects;

    process.stdout.write(
      `rate limiter overhead: nproc=${availableParallelism()}, load average ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}, node ${process.version}, ${embedded ? 'embedded PostgreSQL' : 'DATABASE_URL PostgreSQL'}\n` +
        `${paired ? 'paired (both servers loaded at once, half the connections each)' : 'sequential'}, closed loop, ${connections} connections, ${threadCount} threads, ${userCount} end user(s), ${rounds} rounds × ${duration} s per mode (+${warmup} s warm-up)\n\n`,
    );
    const probe = async (base: string, mode: Mode) => {
      // The limiter must really be on (or off) in this server: its headers say so.
      const r = await fetch(`${base}/v1/threads/bench-0/messages`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          authorization: `Bearer ${creds.keys.secret}`,
          'x-user-id': 'user-0',
        },
        body: JSON.stringify({ body: 'probe' }),
      });
      if (!r.ok || (r.headers.get('ratelimit-policy') !== null) !== (mode === 'on')) {
        throw new Error(
          `probe: status ${r.status}, RateLimit-Policy ${r.headers.get('ratelimit-policy')} with the limiter ${mode}: ${(await r.text()).slice(0, 500)}`,
        );
      }
    };
    /** Starts one server per mode, warms them up, then loads them all at once and samples. */
    const runTogether = async (modes: Mode[]) => {
      const servers: Array<Server & { mode: Mode; base: string }> = [];
      try {
        for (const mode of modes) {
          const server = await startServer(databaseUrl, { RATE_LIMIT_ENABLED: String(mode === 'on') });
          servers.push({ ...server, mode, base: server.url });
        }
        const conns = Math.max(1, Math.floor(connections / modes.length));
        for (const sv of servers) await probe(sv.base, sv.mode);
        await Promise.all(servers.map((sv) => load(sv.base, creds.keys.secret, warmup, conns, `bench-${sv.mode}`)));
        const cpu0 = servers.map((sv) => cpuSeconds(sv.child.pid));
        const samples = await Promise.all(
          servers.map((sv) => load(sv.base, creds.keys.secret, duration, conns, `bench-${sv.mode}`)),
        );
        const cpu1 = servers.map((sv) => cpuSeconds(sv.child.pid));
        return servers.map((sv, i) => ({
          mode: sv.mode,
          sample: { ...samples[i], cpuUs: ((cpu1[i] - cpu0[i]) / (samples[i].rps * duration)) * 1e6 },
        }));
      } finally {
        await Promise.all(servers.map((sv) => sv.stop()));
      }
    };

    const overheads: number[] = [];
    for (let round = 0; round < rounds; round++) {
      const order: Mode[] = round % 2 === 0 ? ['off', 'on'] : ['on', 'off'];
      const measured = paired
        ? await runTogether(order)
        : [...(await runTogether([order[0]])), ...(await runTogether([order[1]]))];
      for (const { mode, sample: x } of measured) {
        results[mode].push(x);
        process.stdout.write(
          `round ${round + 1} limiter ${mode.padEnd(3)}  ${x.rps.toFixed(0).padStart(6)} req/s  p50 ${x.p50} ms  p97.5 ${x.p97_5} ms  p99 ${x.p99} ms  server CPU ${x.cpuUs.toFixed(0)} µs/req  non-2xx ${x.non2xx}${x.statuses ? ` (${x.statuses})` : ''}  errors ${x.errors}\n`,
        );
      }
      const rps = (m: Mode) => measured.find((x) => x.mode === m)!.sample.rps;
      overheads.push(((rps('off') - rps('on')) / rps('off')) * 100);
    }
    const avg = (m: Mode, f: (x: Sample) => number) => mean(results[m].map(f));
    const row = (m: Mode) =>
      `| ${m} | ${avg(m, (x) => x.rps).toFixed(0)} | ${avg(m, (x) => x.p50).toFixed(1)} | ${avg(m, (x) => x.p97_5).toFixed(1)} | ${avg(m, (x) => x.p99).toFixed(1)} | ${avg(m, (x) => x.cpuUs).toFixed(0)} | ${results[m].reduce((a, x) => a + x.non2xx + x.errors, 0)} |`;
    if (rounds > 0) {
      const sorted = [...overheads].sort((a, b) => a - b);
      const median =
        sorted.length % 2
          ? sorted[(sorted.length - 1) / 2]
          : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
      const cpuOff = avg('off', (x) => x.cpuUs);
      const cpuOn = avg('on', (x) => x.cpuUs);
      process.stdout.write(
        [
          '',
          '| limiter | req/s | p50 ms | p97.5 ms | p99 ms | server CPU µs/req | non-2xx + errors |',
          '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
          row('off'),
          row('on'),
          '',
          `throughput overhead: median of rounds ${median.toFixed(1)}% (rounds: ${overheads.map((o) => o.toFixed(1)).join(', ')}), of means ${(((avg('off', (x) => x.rps) - avg('on', (x) => x.rps)) / avg('off', (x) => x.rps)) * 100).toFixed(1)}% (goal < 10%)`,
          `server CPU per request: ${(((cpuOn - cpuOff) / cpuOff) * 100).toFixed(1)}% more with the limiter on`,
          `load average at the end ${loadavg()
            .map((l) => l.toFixed(2))
            .join(' ')}`,
          '',
        ].join('\n'),
      );
    }

    // The limiter alone, in this process, on the same database: what one admission costs and
    // how few round trips a hot bucket needs (noise from the HTTP stack and the machine aside).
    const microDb = createDb(databaseUrl, 4);
    const store = createRateLimitStore();
    let acquires = 0;
    const counting: RateLimitStore = {
      ...store,
      acquire: (...a: Parameters<RateLimitStore['acquire']>) => (acquires++, store.acquire(...a)),
      acquireMany: (...a: Parameters<RateLimitStore['acquireMany']>) => (acquires++, store.acquireMany(...a)),
    };
    const policy = { name: 'write', limit: 1_000_000, windowMs: 60_000 };
    /** `total` admissions over `buckets` buckets, `connections` at a time: CPU per admission and round trips. */
    const alone = async (total: number, buckets: number, concurrency: number) => {
      const limiter = createRateLimiter({ db: microDb, store: counting, logger: createLogger('silent') });
      acquires = 0;
      let started = 0;
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (started < total) {
            const i = started++;
            await limiter.consume(creds.project_id, `write:micro:${buckets === 1 ? '' : `u${i % buckets}`}`, policy);
          }
        }),
      );
      const wallMs = performance.now() - t0;
      const cpu = process.cpuUsage(c0);
      const trips = acquires;
      await limiter.close();
      return { wallMs, cpuUs: (cpu.user + cpu.system) / total, trips };
    };
    const hot = await alone(200_000, 1, connections);
    process.stdout.write(
      `limiter alone, one hot bucket: 200000 admissions (limit 1,000,000/60 s, ${connections} concurrent) in ${hot.wallMs.toFixed(0)} ms: ` +
        `${hot.cpuUs.toFixed(2)} µs CPU per admission, ${hot.trips} lease round trips\n`,
    );
    for (const concurrency of [1, connections]) {
      const cold = await alone(20_000, 20_000, concurrency);
      process.stdout.write(
        `limiter alone, cold buckets: 20000 admissions of 20000 distinct buckets (${concurrency} concurrent) in ${cold.wallMs.toFixed(0)} ms: ` +
          `${cold.cpuUs.toFixed(1)} µs CPU per admission, ${cold.trips} lease round trips\n`,
      );
    }
    await microDb.destroy();
  } finally {
    await database.drop();
  }
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
