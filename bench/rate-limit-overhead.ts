/**
 * Rate limiter overhead on the single-message append path.
 *
 *   npm run bench:rate-limit -- [--duration 10] [--rounds 2] [--connections 32] [--threads 64] [--users 1]
 *
 * Starts the real service as a child process (src/server.ts) against a fresh database, once with
 * RATE_LIMIT_ENABLED=false and once with it on, alternating `rounds` times so drift on a shared
 * machine hits both alike, and drives each with autocannon in closed loop (every connection
 * sends its next append as soon as the last is acknowledged: the load is the service's maximum).
 * The project's write limit is set far above what the run can send, so every request pays the
 * limiter's full cost and none is refused. DATABASE_URL names a PostgreSQL server (a scratch
 * database is created and dropped on it); without it an embedded PostgreSQL is started.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import pg from 'pg';
import { createDb } from '../src/lib/db';
import { startEmbeddedPostgres } from '../src/lib/embedded-postgres';
import { migrateLatest } from '../src/lib/migrate';
import { createKeysStore } from '../src/modules/keys/keys-store';
import { createProjectsService } from '../src/modules/projects/projects-service';
import { createProjectsStore } from '../src/modules/projects/projects-store';

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    rounds: { type: 'string', default: '2' },
    connections: { type: 'string', default: '32' },
    threads: { type: 'string', default: '64' },
    users: { type: 'string', default: '1' },
  },
});
const duration = Number(args.duration);
const warmup = Number(args.warmup);
const rounds = Number(args.rounds);
const connections = Number(args.connections);
const threadCount = Number(args.threads);
const userCount = Number(args.users);

const root = path.resolve(__dirname, '..');

function withDatabase(url: string, db: string) {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

async function admin(url: string, sql: string) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

async function startServer(databaseUrl: string, port: number, limiterOn: boolean): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/server.ts')], {
    cwd: root,
    env: {
      ...process.env,
      NODE_ENV: 'production',
      DATABASE_URL: databaseUrl,
      PORT: String(port),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
      SEED_DEV_PROJECT: 'false',
      RATE_LIMIT_ENABLED: String(limiterOn),
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/readyz`);
      if (r.ok) return child;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error('server did not become ready in 30 s');
    await sleep(200);
  }
}

async function stopServer(child: ChildProcess) {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(15_000)]);
  if (child.exitCode === null) child.kill('SIGKILL');
}

interface Sample {
  rps: number;
  p50: number;
  p97_5: number;
  p99: number;
  non2xx: number;
  errors: number;
}

function load(url: string, key: string, seconds: number): Promise<Sample> {
  let n = 0;
  const body = JSON.stringify({ body: { text: 'hello from the rate limiter benchmark' } });
  return new Promise((resolve, reject) => {
    autocannon(
      {
        url,
        connections,
        duration: seconds,
        requests: [
          {
            method: 'POST',
            setupRequest: (req) => {
              const i = n++;
              return {
                ...req,
                path: `/v1/threads/bench-${i % threadCount}/messages`,
                headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'x-user-id': `user-${i % userCount}` },
                body,
              };
            },
          },
        ],
      },
      (err, r) => {
        if (err) return reject(err);
        resolve({ rps: r.requests.average, p50: r.latency.p50, p97_5: r.latency.p97_5, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors });
      },
    );
  });
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

async function main() {
  const port = 18000 + Math.floor(Math.random() * 2000);
  const dataDir = path.join(root, '.bench-data', `rate-limit-${process.pid}`);
  const embedded = process.env.DATABASE_URL ? null : await startEmbeddedPostgres(dataDir, 30000 + Math.floor(Math.random() * 20000));
  const adminUrl = process.env.DATABASE_URL ?? embedded!.url;
  const dbName = `pdb_bench_rl_${randomBytes(4).toString('hex')}`;
  await admin(adminUrl, `create database ${dbName}`);
  const databaseUrl = withDatabase(adminUrl, dbName);
  const results: Record<'off' | 'on', Sample[]> = { off: [], on: [] };
  try {
    const db = createDb(databaseUrl, 2);
    await migrateLatest(db);
    const projects = createProjectsService({ db, projectsStore: createProjectsStore(), keysStore: createKeysStore(), signingSecretGraceSeconds: 0 });
    const creds = await projects.createProject({
      name: 'rate limit bench',
      settings: { rate_limits: { write: { limit: 1_000_000, window_seconds: 60 } } },
    });
    await db.destroy();

    process.stdout.write(
      `rate limiter overhead: nproc=${availableParallelism()}, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}, node ${process.version}, ${embedded ? 'embedded PostgreSQL' : 'DATABASE_URL PostgreSQL'}\n` +
        `closed loop, ${connections} connections, ${threadCount} threads, ${userCount} end user(s), ${rounds} rounds × ${duration} s per mode (+${warmup} s warm-up)\n\n`,
    );
    for (let round = 0; round < rounds; round++) {
      for (const mode of round % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
        const child = await startServer(databaseUrl, port, mode === 'on');
        try {
          const base = `http://127.0.0.1:${port}`;
          // The limiter must really be on (or off) in this server: its headers say so.
          const probe = await fetch(`${base}/v1/threads/bench-0/messages`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${creds.keys.secret}`, 'x-user-id': 'user-0' },
            body: JSON.stringify({ body: 'probe' }),
          });
          if (!probe.ok || (probe.headers.get('ratelimit-policy') !== null) !== (mode === 'on')) {
            throw new Error(`probe: status ${probe.status}, RateLimit-Policy ${probe.headers.get('ratelimit-policy')} with the limiter ${mode}`);
          }
          await load(base, creds.keys.secret, warmup);
          const s = await load(base, creds.keys.secret, duration);
          results[mode].push(s);
          process.stdout.write(
            `round ${round + 1} limiter ${mode.padEnd(3)}  ${s.rps.toFixed(0).padStart(6)} req/s  p50 ${s.p50} ms  p97.5 ${s.p97_5} ms  p99 ${s.p99} ms  non-2xx ${s.non2xx}  errors ${s.errors}\n`,
          );
        } finally {
          await stopServer(child);
        }
      }
    }
    const off = mean(results.off.map((s) => s.rps));
    const on = mean(results.on.map((s) => s.rps));
    const row = (name: string, xs: Sample[]) =>
      `| ${name} | ${mean(xs.map((s) => s.rps)).toFixed(0)} | ${mean(xs.map((s) => s.p50)).toFixed(1)} | ${mean(xs.map((s) => s.p97_5)).toFixed(1)} | ${mean(xs.map((s) => s.p99)).toFixed(1)} | ${xs.reduce((a, s) => a + s.non2xx + s.errors, 0)} |`;
    process.stdout.write(
      [
        '',
        '| limiter | req/s | p50 ms | p97.5 ms | p99 ms | non-2xx + errors |',
        '| --- | ---: | ---: | ---: | ---: | ---: |',
        row('off', results.off),
        row('on', results.on),
        '',
        `overhead: ${(((off - on) / off) * 100).toFixed(1)}% of throughput (goal < 10%); load average at the end ${loadavg().map((l) => l.toFixed(2)).join(' ')}`,
        '',
      ].join('\n'),
    );
  } finally {
    await admin(adminUrl, `select pg_terminate_backend(pid) from pg_stat_activity where datname = '${dbName}' and pid <> pg_backend_pid()`).catch(() => undefined);
    await admin(adminUrl, `drop database if exists ${dbName}`).catch(() => undefined);
    if (embedded) {
      await embedded.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
