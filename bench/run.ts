/**
 * `npm run bench`: the service's read and write paths, measured beside two ceilings taken in the
 * same run — the framework's (bare express 5 and bare node:http, no database, same load
 * generator, connections and duration) and PostgreSQL's (the shared pgbench script).
 *
 * The load generator is wrk, a separate C process (Lua scripts in bench/wrk/), and every
 * scenario reports its CPU share beside the service's and PostgreSQL's, so a run shows whether
 * the load generator was what saturated. Append p99 at half the maximum rate uses a paced,
 * open-loop raw HTTP/1.1 client in a worker thread (bench/paced.ts; wrk2 is not packaged).
 *
 * Starts the real service (src/server.ts under tsx, or the compiled dist/src/server.js with
 * BENCH_SERVER=compiled) as a child process on a fresh database, seeds it with SQL (valid log
 * rows, seqs from each thread's last_seq: bench/seed.ts), checks after every write scenario that
 * every thread's seqs are gapless and the acknowledged messages are stored, and writes
 * bench/results/latest.{json,md}, latency.svg, throughput.svg and BENCHMARKS.md's "Read and
 * write path" section (`npm run bench:docs` re-renders those from the JSON). Then it stops its
 * server and drops its database.
 *
 * Environment (all optional):
 *   DATABASE_URL            PostgreSQL server (a scratch database is created there and dropped);
 *                           default postgres://postgres@127.0.0.1:5432/postgres
 *   BENCH_EMBEDDED=1        an embedded PostgreSQL instead (the pgbench ceiling is then skipped)
 *   BENCH_DURATION=15s      duration of each scenario (BENCH_SECONDS=15 also works)
 *   BENCH_CONNECTIONS=64    connections (closed loop), for the ceilings and every scenario alike
 *   BENCH_WRK_THREADS       wrk threads (default: half of nproc, at least 1)
 *   BENCH_WARMUP=3s         warm-up before the scenarios (and after a server restart)
 *   BENCH_SCENARIOS         comma-separated scenario names to run (default: all)
 *   BENCH_SERVER=tsx        tsx | compiled: which server runs the scenarios
 *   BENCH_COMPARE_SERVER=0  1: re-run a few scenarios with the other server kind (npm run bench:compiled)
 *   BENCH_WORKERS=1         WEB_CONCURRENCY of the server under test
 *   BENCH_COMPARE_WORKERS=1 0: skip re-running append and read with the other worker count (1 vs 2)
 *   BENCH_CEILING_SECONDS=10  seconds per pgbench scenario of the PostgreSQL ceiling; 0 skips it
 *   BENCH_PG_CEILING        path of the pg-ceiling run.sh (default: ../shared/bench/pg-ceiling/run.sh
 *                           from the repository, else /work/shared/bench/pg-ceiling/run.sh)
 *   BENCH_FRAMEWORK=1       0: skip the framework ceiling (ratios then n/a)
 *   BENCH_SEED_PER_THREAD=100  messages seeded in each of the 1,000 threads
 *   BENCH_SMALL_THREAD=1000, BENCH_BIG_THREAD=1000000  the two threads of the size comparison
 *   BENCH_RATE_LIMIT=off    on: keep the rate limiter on (project limits set far above the load)
 *   BENCH_CPU_PROF=1        run the server with node --cpu-prof; a summary is printed and saved
 *   BENCH_WRITE_DOCS=1      0: do not update BENCHMARKS.md
 *   BENCH_SERVER_LOG_LEVEL=warn  log level of the server under test
 *   BENCH_RESULTS_DIR       where latest.json/md and the charts go (default bench/results)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { createDb } from '../src/lib/db';
import { startEmbeddedPostgres } from '../src/lib/embedded-postgres';
import { migrateLatest } from '../src/lib/migrate';
import { withDatabase, adminQuery as admin } from '../src/lib/pg-admin';
import { signUserId } from '../src/modules/keys/key-auth-service';
import { createKeysStore } from '../src/modules/keys/keys-store';
import { createProjectsService } from '../src/modules/projects/projects-service';
import { createProjectsStore } from '../src/modules/projects/projects-store';
import { freePort, SERVICE_NODE_FLAGS } from './common';
import { buildCompiled } from './compile';
import { postgresCpu, postgresDelta, treeCpuSeconds } from './cpu';
import { startBare, stopChild } from './framework-servers';
import { runPaced } from './paced';
import { runCeiling, type CeilingRow } from './pg-ceiling';
import { summarizeProfiles } from './profile-summary';
import type { FrameworkRow, Report, ScenarioResult, Verification } from './report';
import { seedMessages } from './seed';
import { writeReport } from './write-docs';
import { findWrk, runWrk, WRK_INSTALL_HINT, type LoadResult, type WrkLoad, type WrkTarget } from './wrk';

const env = process.env;
const seconds = (v: string | undefined, d: number) => {
  if (v === undefined || v === '') return d;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m)?$/.exec(v.trim());
  if (!m) throw new Error(`not a duration: ${v} (e.g. 15s, 2s, 1m)`);
  const n = Number(m[1]);
  return m[2] === 'ms' ? n / 1000 : m[2] === 'm' ? n * 60 : n;
};
const NPROC = availableParallelism();
const SECONDS = Math.max(1, Math.round(seconds(env.BENCH_DURATION ?? env.BENCH_SECONDS, 15)));
const WARMUP = Math.round(seconds(env.BENCH_WARMUP, 3));
const CONNECTIONS = Number(env.BENCH_CONNECTIONS ?? 64);
const WRK_THREADS = Number(env.BENCH_WRK_THREADS ?? Math.max(1, Math.floor(NPROC / 2)));
const WORKERS = Number(env.BENCH_WORKERS ?? 1);
const SERVER_KIND: 'tsx' | 'compiled' = env.BENCH_SERVER === 'compiled' ? 'compiled' : 'tsx';
const CEILING_SECONDS = Number(env.BENCH_CEILING_SECONDS ?? 10);
/** Rounds of an alternating pair (read-small-thread / read-big-thread). */
const ALTERNATE_ROUNDS = 4;
const RATE_LIMIT = env.BENCH_RATE_LIMIT === 'on';
const CPU_PROF = env.BENCH_CPU_PROF === '1';
const PER_THREAD = Number(env.BENCH_SEED_PER_THREAD ?? 100);
const SMALL = Number(env.BENCH_SMALL_THREAD ?? 1000);
const BIG = Number(env.BENCH_BIG_THREAD ?? 1_000_000);
const ONLY = env.BENCH_SCENARIOS ? new Set(env.BENCH_SCENARIOS.split(',').map((s) => s.trim())) : null;
const THREADS = 1000;
const USERS = 100;
const LIST_THREADS = 200;
const BATCH = 100;
const root = path.resolve(__dirname, '..');
const resultsDir = env.BENCH_RESULTS_DIR ? path.resolve(env.BENCH_RESULTS_DIR) : path.join(root, 'bench', 'results');
const started = Date.now();

const log = (msg: string) =>
  process.stdout.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${msg}\n`);

/** The shared pgbench script: BENCH_PG_CEILING, ../shared beside the repository, or /work/shared. */
function ceilingScript(): string | null {
  const candidates = [
    env.BENCH_PG_CEILING,
    path.resolve(root, '../shared/bench/pg-ceiling/run.sh'),
    path.resolve(root, '../../shared/bench/pg-ceiling/run.sh'),
    '/work/shared/bench/pg-ceiling/run.sh',
  ];
  return candidates.find((c): c is string => Boolean(c && existsSync(c))) ?? null;
}

async function startServer(
  databaseUrl: string,
  port: number,
  profileDir: string | null,
  workers = WORKERS,
  kind = SERVER_KIND,
): Promise<ChildProcess> {
  const entry = kind === 'compiled' ? await buildCompiled() : null;
  const args = [
    ...SERVICE_NODE_FLAGS,
    ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []),
    ...(entry ? [entry] : ['--import', 'tsx', path.join(root, 'src/server.ts')]),
  ];
  const child = spawn(process.execPath, args, {
    cwd: root,
    env: {
      ...env,
      NODE_ENV: 'production',
      DATABASE_URL: databaseUrl,
      PORT: String(port),
      HOST: '127.0.0.1',
      LOG_LEVEL: env.BENCH_SERVER_LOG_LEVEL ?? 'warn',
      SEED_DEV_PROJECT: 'false',
      WEB_CONCURRENCY: String(workers),
      RATE_LIMIT_ENABLED: String(RATE_LIMIT),
      DB_POOL_MAX: env.DB_POOL_MAX ?? '20',
      // Under a saturating load every query is "slow"; those warnings would bury the progress lines.
      SLOW_QUERY_MS: env.SLOW_QUERY_MS ?? '5000',
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    try {
      // Readiness is per worker and the port is shared: require a run of successes.
      let ok = 0;
      for (let i = 0; i < workers * 4; i++) if ((await fetch(`http://127.0.0.1:${port}/readyz`)).ok) ok++;
      if (ok === workers * 4) return child;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error('server did not become ready in 60 s');
    await sleep(250);
  }
}

interface Scenario {
  name: string;
  title: string;
  load: WrkLoad;
  /** Messages each 2xx response acknowledges (0 for reads; mixed loads are not counted). */
  messagesPerRequest: number;
  writes: boolean;
  /** Paced (open loop) at a share of another scenario's req/s, instead of closed loop. */
  pacedAt?: { scenario: string; share: number };
  /**
   * Measured in alternating rounds with this other scenario (A B, B A, A B …), each getting the
   * same share of the duration: for a comparison of two loads, so drift in the machine over the
   * run (other tenants, CPU frequency, the heap growing) falls on both sides alike.
   */
  alternateWith?: string;
  pgCeiling: ScenarioResult['pgCeiling'];
}

const threadId = (i: number) => `t-${String(i).padStart(4, '0')}`;
const userId = (i: number) => `u-${String(i % USERS).padStart(2, '0')}`;
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

function scenarios(secret: string, publishable: string, signingSecret: string): Scenario[] {
  const secretHeaders = { authorization: `Bearer ${secret}`, 'x-user-id': 'bench-user' };
  const pk = (user: string) => ({
    authorization: `Bearer ${publishable}`,
    'x-user-id': user,
    'x-user-signature': signUserId(signingSecret, user),
  });
  const json = { 'content-type': 'application/json' };
  const read = (t: string, headers: Record<string, string>): WrkTarget => ({
    path: `/v1/threads/${t}/messages?limit=50`,
    headers,
  });
  const append = (t: string, headers: Record<string, string>): WrkTarget => ({
    path: `/v1/threads/${t}/messages`,
    headers: { ...headers, ...json },
  });
  const single = JSON.stringify({ body: { text: 'hello from the benchmark, a message of typical chat length' } });
  const batch = JSON.stringify({
    messages: range(BATCH).map((i) => ({ body: { text: `batched message ${i} of typical chat length` } })),
  });
  const readSecret = range(THREADS).map((i) => read(threadId(i), secretHeaders));
  const appendSecret = range(THREADS).map((i) => append(threadId(i), secretHeaders));
  const readCeiling = { scenario: 'read-latest-50', by: 'tx', ours: 'requests' } as const;
  const appendCeiling = { scenario: 'spread+notify', by: 'tx', ours: 'messages' } as const;
  return [
    {
      name: 'healthz',
      title: 'GET /healthz: the full middleware chain, no query',
      load: { method: 'GET', targets: [{ path: '/healthz', headers: {} }] },
      messagesPerRequest: 0,
      writes: false,
      pgCeiling: null,
    },
    {
      name: 'read-latest-50',
      title: 'latest 50 messages of a random one of 1,000 threads, secret key',
      load: { method: 'GET', targets: readSecret },
      messagesPerRequest: 0,
      writes: false,
      pgCeiling: readCeiling,
    },
    {
      name: 'read-latest-50-pk',
      title: 'latest 50, publishable key + signed user (X-User-Signature), members-only thread',
      load: { method: 'GET', targets: range(THREADS).map((i) => read(threadId(i), pk(userId(i)))) },
      messagesPerRequest: 0,
      writes: false,
      pgCeiling: readCeiling,
    },
    {
      name: 'read-small-thread',
      title: `latest 50 of one thread of ${SMALL.toLocaleString('en-US')} messages, secret key (rounds alternating with read-big-thread)`,
      load: { method: 'GET', targets: [read('small', secretHeaders)] },
      messagesPerRequest: 0,
      writes: false,
      alternateWith: 'read-big-thread',
      pgCeiling: readCeiling,
    },
    {
      name: 'read-big-thread',
      title: `latest 50 of one thread of ${BIG.toLocaleString('en-US')} messages, secret key (rounds alternating with read-small-thread)`,
      load: { method: 'GET', targets: [read('big', secretHeaders)] },
      messagesPerRequest: 0,
      writes: false,
      pgCeiling: readCeiling,
    },
    {
      name: 'thread-list',
      title: `GET /v1/threads (first page of 50) for a publishable-key user in ${LIST_THREADS} threads`,
      load: { method: 'GET', targets: [{ path: '/v1/threads?limit=50', headers: pk('lister') }] },
      messagesPerRequest: 0,
      writes: false,
      pgCeiling: null,
    },
    {
      name: 'append-spread',
      title: 'append 1 message to a random one of 1,000 threads, secret key',
      load: { method: 'POST', targets: appendSecret, body: single },
      messagesPerRequest: 1,
      writes: true,
      pgCeiling: appendCeiling,
    },
    {
      name: 'append-spread-half-rate',
      title: 'append-spread paced at half its maximum rate (open loop, paced client)',
      load: { method: 'POST', targets: appendSecret, body: single },
      messagesPerRequest: 1,
      writes: true,
      pacedAt: { scenario: 'append-spread', share: 0.5 },
      pgCeiling: appendCeiling,
    },
    {
      name: 'append-pk',
      title:
        'append 1 message as a publishable-key user (signature, members-only thread, distinct Idempotency-Key as the SDK sends)',
      load: {
        method: 'POST',
        targets: range(THREADS).map((i) => append(threadId(i), pk(userId(i)))),
        body: single,
        idempotency: true,
      },
      messagesPerRequest: 1,
      writes: true,
      pgCeiling: appendCeiling,
    },
    {
      name: 'append-hot',
      title: 'append 1 message to one hot thread, secret key',
      load: { method: 'POST', targets: [append('hot', secretHeaders)], body: single },
      messagesPerRequest: 1,
      writes: true,
      pgCeiling: { scenario: 'hot-thread', by: 'tx', ours: 'messages' },
    },
    {
      name: 'append-batch',
      title: `batch append, ${BATCH} messages per request, random thread, secret key`,
      load: {
        method: 'POST',
        targets: range(THREADS).map((i) => ({
          path: `/v1/threads/${threadId(i)}/messages/batch`,
          headers: { ...secretHeaders, ...json },
        })),
        body: batch,
      },
      messagesPerRequest: BATCH,
      writes: true,
      pgCeiling: { scenario: 'spread-batch50+notify', by: 'rows', ours: 'messages' },
    },
    {
      name: 'mixed-90-10',
      title: '90 % latest-50 reads / 10 % single appends, random thread, secret key',
      load: {
        method: 'GET',
        targets: [
          ...readSecret.slice(0, 900),
          ...appendSecret.slice(0, 100).map((t) => ({ ...t, method: 'POST' as const, body: single })),
        ],
      },
      messagesPerRequest: 0,
      writes: true,
      pgCeiling: null,
    },
  ];
}

/** After a write scenario: every touched thread's log is gapless, and what was acknowledged is stored. */
async function verify(
  db: pg.Pool,
  projectId: string,
  storedBefore: number,
  acknowledged: number | null,
  maxUnacknowledged: number,
): Promise<Verification> {
  const gaps = await db.query(
    `select count(*) filter (where not (n = last_seq - purged and coalesce(lo, purged + 1) = purged + 1 and coalesce(hi, purged) = last_seq))::int as bad,
            count(*)::int as threads
       from (select t.id, t.last_seq, t.purged_through_seq as purged, count(e.seq) as n, min(e.seq) as lo, max(e.seq) as hi
               from threads t left join events e on e.project_id = t.project_id and e.thread_id = t.id
              where t.project_id = $1 and t.id not in ('big', 'small')
              group by t.id, t.last_seq, t.purged_through_seq) s`,
    [projectId],
  );
  const stored = (await storedMessages(db, projectId)) - storedBefore;
  const v: Verification = {
    ok: false,
    threadsChecked: gaps.rows[0].threads,
    gapViolations: gaps.rows[0].bad,
    acknowledgedMessages: acknowledged,
    storedMessages: stored,
    maxUnacknowledged,
  };
  v.ok =
    v.gapViolations === 0 &&
    (acknowledged === null || (stored >= acknowledged && stored - acknowledged <= maxUnacknowledged));
  return v;
}

/** Waits until the stored message count stops moving (at most 15 s). */
async function settle(db: pg.Pool, projectId: string) {
  let last = -1;
  for (let i = 0; i < 60; i++) {
    await sleep(250);
    const n = await storedMessages(db, projectId);
    if (n === last) return;
    last = n;
  }
}

async function storedMessages(db: pg.Pool, projectId: string): Promise<number> {
  const { rows } = await db.query(
    `select count(*)::int as n from messages where project_id = $1 and thread_id not in ('big', 'small')`,
    [projectId],
  );
  return rows[0].n;
}

/**
 * One result from the rounds of an alternating pair (read scenarios, no verification): requests
 * and seconds summed, CPU shares weighted by each round's length, and each latency percentile the
 * worst round's (percentiles do not add up; the worst is the honest bound).
 */
function combineRounds(rounds: { r: LoadResult; service: number; postgres: number }[]) {
  const sum = (f: (r: LoadResult) => number) => rounds.reduce((n, x) => n + f(x.r), 0);
  const seconds = sum((r) => r.seconds);
  const weighted = (f: (x: (typeof rounds)[number]) => number) =>
    rounds.reduce((n, x) => n + f(x) * x.r.seconds, 0) / seconds;
  const worst = (k: keyof LoadResult['latency']) => Math.max(...rounds.map((x) => x.r.latency[k]));
  const r: LoadResult = {
    generator: `${rounds[0].r.generator}, ${rounds.length} alternating rounds`,
    seconds,
    requests: sum((r) => r.requests),
    ok: sum((r) => r.ok),
    non2xx: sum((r) => r.non2xx),
    errors: {
      connect: sum((r) => r.errors.connect),
      read: sum((r) => r.errors.read),
      write: sum((r) => r.errors.write),
      timeout: sum((r) => r.errors.timeout),
    },
    latency: {
      p50: worst('p50'),
      p75: worst('p75'),
      p90: worst('p90'),
      p97_5: worst('p97_5'),
      p99: worst('p99'),
      p99_9: worst('p99_9'),
      max: worst('max'),
    },
    cpuSeconds: sum((r) => r.cpuSeconds),
    cpuShare: weighted((x) => x.r.cpuShare),
  };
  return { r, service: weighted((x) => x.service), postgres: weighted((x) => x.postgres), verification: null };
}

async function main() {
  if (!findWrk()) {
    process.stderr.write(`${WRK_INSTALL_HINT}\n`);
    process.exit(1);
  }
  mkdirSync(resultsDir, { recursive: true });
  const embeddedWanted = env.BENCH_EMBEDDED === '1';
  const dataDir = path.join(root, '.test-data', `bench-main-${process.pid}`);
  const embedded = embeddedWanted
    ? await startEmbeddedPostgres(dataDir, 30000 + Math.floor(Math.random() * 20000))
    : null;
  const adminUrl = embedded?.url ?? env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const dbName = `pdb_bench_${randomBytes(4).toString('hex')}`;
  const databaseUrl = withDatabase(adminUrl, dbName);
  const profileDir = CPU_PROF ? path.join(resultsDir, 'profiles') : null;
  let server: ChildProcess | null = null;
  let bare: ChildProcess | null = null;
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    if (bare) await stopChild(bare);
    if (server) await stopChild(server);
    await admin(
      adminUrl,
      `select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()`,
      [dbName],
    ).catch(() => undefined);
    await admin(adminUrl, `drop database if exists ${dbName}`).catch((e) => log(`could not drop ${dbName}: ${e}`));
    if (embedded) {
      await embedded.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  };
  const onSignal = () => {
    log('interrupted: stopping the servers and dropping the bench database');
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    const machine = {
      nproc: NPROC,
      cpu: cpus()[0]?.model ?? 'unknown',
      node: process.version,
      loadAverageAtStart: loadavg().map((l) => Number(l.toFixed(2))),
      postgres: '',
      database: embedded ? 'embedded PostgreSQL' : adminUrl.replace(/\/\/[^@]*@/, '//…@'),
    };
    const script = CEILING_SECONDS > 0 && !embedded ? ceilingScript() : null;
    log(
      `ProgressDB benchmark: nproc=${machine.nproc}, node ${machine.node}, load average ${machine.loadAverageAtStart.join(' ')}`,
    );
    log(
      `${SECONDS} s per scenario, ${CONNECTIONS} connections, wrk with ${WRK_THREADS} thread(s), server ${SERVER_KIND}, ${WORKERS} worker(s), ` +
        `rate limiter ${RATE_LIMIT ? 'on' : 'off'}, PostgreSQL ceiling ${script ? `${CEILING_SECONDS} s per pgbench run (${script})` : 'skipped'}`,
    );
    if (CEILING_SECONDS > 0 && !embedded && !script)
      log('  pg-ceiling run.sh not found: set BENCH_PG_CEILING to its path (it lives in the shared directory)');

    // 1. Ceilings first, while nothing else of ours runs.
    let ceiling: CeilingRow[] = [];
    if (script) {
      log(`PostgreSQL ceiling: ${script} ${CEILING_SECONDS} (6 pgbench runs, ~${CEILING_SECONDS * 6 + 5} s)`);
      ceiling = await runCeiling(
        script,
        env.BENCH_PGURL ?? withDatabase(adminUrl, 'postgres'),
        CEILING_SECONDS,
        (line) => log(`  ceiling ${line}`),
      );
    }
    const framework: FrameworkRow[] = [];
    if (env.BENCH_FRAMEWORK !== '0') {
      for (const name of ['node:http', 'express 5']) {
        const port = await freePort();
        bare = await startBare(name, port);
        const url = `http://127.0.0.1:${port}`;
        const shape = { url, connections: CONNECTIONS, threads: WRK_THREADS };
        await runWrk({ ...shape, seconds: Math.max(1, Math.min(WARMUP, 2)) });
        log(`framework ceiling: ${name}, GET / (${SECONDS} s)`);
        const r = await runWrk({ ...shape, seconds: SECONDS });
        framework.push({
          name,
          requestsPerSecond: r.ok / r.seconds,
          p50: r.latency.p50,
          p99: r.latency.p99,
          errors: r.non2xx + r.errors.connect + r.errors.read + r.errors.write + r.errors.timeout,
          loadGeneratorCpu: r.cpuShare,
        });
        log(
          `  ${(r.ok / r.seconds).toFixed(0)} req/s, p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms; wrk used ${(r.cpuShare * 100).toFixed(0)} % of the machine`,
        );
        await stopChild(bare);
        bare = null;
      }
    }

    // 2. A fresh database, migrated; a project with its keys.
    await admin(adminUrl, `create database ${dbName}`);
    const knex = createDb(databaseUrl, 4);
    await migrateLatest(knex);
    machine.postgres = String((await knex.raw('show server_version')).rows[0].server_version);
    const projects = createProjectsService({
      db: knex,
      projectsStore: createProjectsStore(),
      keysStore: createKeysStore(),
      signingSecretGraceSeconds: 0,
    });
    const big = { limit: 1_000_000_000, window_seconds: 60 };
    const creds = await projects.createProject({ name: 'bench', settings: { rate_limits: { read: big, write: big } } });
    await knex.destroy();

    const port = await freePort();
    log(
      `starting the service (${SERVER_KIND}, ${WORKERS} worker(s)) on 127.0.0.1:${port}, database ${dbName}${CPU_PROF ? ', with --cpu-prof' : ''}`,
    );
    if (profileDir) rmSync(profileDir, { recursive: true, force: true });
    server = await startServer(databaseUrl, port, profileDir);
    const base = `http://127.0.0.1:${port}`;

    // 3. Threads through the API (thread.created and member.added events as the service writes
    //    them): 1,000 members-only threads, each with one of 100 end users (and "lister" in the
    //    first 200), the hot thread, and the two of the size comparison.
    log(`creating ${THREADS} members-only threads (${USERS} users, "lister" in ${LIST_THREADS}), hot, small and big`);
    const defs = [
      ...range(THREADS).map((i) => ({
        id: threadId(i),
        type: 'group',
        members: [userId(i), ...(i < LIST_THREADS ? ['lister'] : [])],
      })),
      { id: 'hot', type: 'channel' },
      { id: 'small', type: 'channel' },
      { id: 'big', type: 'channel' },
    ];
    for (let i = 0; i < defs.length; i += 50) {
      await Promise.all(
        defs.slice(i, i + 50).map(async (body) => {
          const r = await fetch(`${base}/v1/threads`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${creds.keys.secret}` },
            body: JSON.stringify(body),
          });
          if (r.status !== 201) throw new Error(`creating thread ${body.id}: ${r.status} ${await r.text()}`);
        }),
      );
    }
    // A pool, not one client: a connection terminated under us (another engineer's cleanup, a
    // restart) is replaced instead of crashing the run before it drops its database.
    const db = new pg.Pool({ connectionString: databaseUrl, max: 2 });
    db.on('error', (e) => log(`  (bench database connection lost: ${e.message}; reconnecting)`));
    const seedStart = Date.now();
    log(
      `seeding with SQL: ${PER_THREAD} messages in each of ${THREADS} threads, ${SMALL.toLocaleString('en-US')} in "small", ${BIG.toLocaleString('en-US')} in "big"`,
    );
    const seeder = await db.connect();
    try {
      await seedMessages(seeder, creds.project_id, range(THREADS).map(threadId), PER_THREAD);
      await seedMessages(seeder, creds.project_id, ['small'], SMALL);
      await seedMessages(seeder, creds.project_id, ['big'], BIG);
    } finally {
      seeder.release();
    }
    await db.query('analyze threads, thread_members, events, messages');
    const seedSeconds = (Date.now() - seedStart) / 1000;
    log(`  seeded in ${seedSeconds.toFixed(1)} s`);

    const all = scenarios(creds.keys.secret, creds.keys.publishable, creds.signing_secret);
    const byName = new Map(all.map((s) => [s.name, s]));
    const selected = all.filter((s) => !ONLY || ONLY.has(s.name));
    if (ONLY)
      for (const n of ONLY)
        if (!byName.has(n)) throw new Error(`unknown scenario ${n}; known: ${[...byName.keys()].join(', ')}`);

    const shape = { url: base, connections: CONNECTIONS, threads: WRK_THREADS };
    const warmUp = async () => {
      if (WARMUP <= 0) return;
      // Appends first, then reads: appends move every thread's last_seq, so reads warmed before
      // them would leave the page cache cold (all 1,000 pages stale) for the first read scenario.
      log(`warm-up: ${WARMUP} s of appends, ${WARMUP} s of reads`);
      await runWrk({ ...shape, seconds: WARMUP, load: byName.get('append-spread')!.load });
      await settle(db, creds.project_id);
      await runWrk({ ...shape, seconds: WARMUP, load: byName.get('read-latest-50')!.load });
    };
    await warmUp();

    const results: ScenarioResult[] = [];
    const measure = async (s: Scenario, srv: ChildProcess, rate: number | null, seconds = SECONDS) => {
      const before = s.writes ? await storedMessages(db, creds.project_id) : 0;
      const svc0 = treeCpuSeconds(srv.pid!);
      const pg0 = postgresCpu();
      const t0 = performance.now();
      const r: LoadResult =
        rate === null
          ? await runWrk({ ...shape, seconds, load: s.load })
          : await runPaced({ url: base, rate, seconds, connections: CONNECTIONS, load: s.load });
      const wall = (performance.now() - t0) / 1000;
      const service = (treeCpuSeconds(srv.pid!) - svc0) / (wall * NPROC);
      const postgres = postgresDelta(pg0, postgresCpu()) / (wall * NPROC);
      let verification: Verification | null = null;
      if (s.writes) {
        // Requests in flight when the load stopped may still commit: wait until nothing more
        // arrives, so they count here and not in the next scenario.
        await settle(db, creds.project_id);
        const unacked = (CONNECTIONS + r.errors.timeout + r.errors.read) * Math.max(1, s.messagesPerRequest);
        verification = await verify(
          db,
          creds.project_id,
          before,
          s.messagesPerRequest > 0 ? r.ok * s.messagesPerRequest : null,
          unacked,
        );
      }
      return { r, service, postgres, verification };
    };
    type Measured = Awaited<ReturnType<typeof measure>>;
    /** Two read scenarios in ALTERNATE_ROUNDS alternating rounds; each one's rounds summed. */
    const measureAlternating = async (a: Scenario, b: Scenario) => {
      const rounds: Record<'a' | 'b', Measured[]> = { a: [], b: [] };
      const each = Math.max(1, Math.round(SECONDS / ALTERNATE_ROUNDS));
      for (let i = 0; i < ALTERNATE_ROUNDS; i++)
        for (const side of i % 2 === 0 ? (['a', 'b'] as const) : (['b', 'a'] as const))
          rounds[side].push(await measure(side === 'a' ? a : b, server!, null, each));
      return { a: combineRounds(rounds.a), b: combineRounds(rounds.b) };
    };
    const alternated = new Map<string, Measured>();
    const record = (s: Scenario, rate: number | null, { r, service, postgres, verification }: Measured) => {
      const res: ScenarioResult = {
        name: s.name,
        title: s.title,
        generator: r.generator,
        connections: CONNECTIONS,
        seconds: r.seconds,
        overallRate: rate,
        requestsPerSecond: r.ok / r.seconds,
        messagesPerSecond: (r.ok * s.messagesPerRequest) / r.seconds,
        latency: r.latency,
        errors: r.non2xx + r.errors.connect + r.errors.read + r.errors.write + r.errors.timeout,
        non2xx: r.non2xx,
        cpu: { loadGenerator: r.cpuShare, service, postgres },
        pgCeiling: s.pgCeiling,
        verification,
      };
      results.push(res);
      const v = verification;
      log(
        `  ${s.name}: ${res.requestsPerSecond.toFixed(0)} req/s${res.messagesPerSecond ? `, ${res.messagesPerSecond.toFixed(0)} msg/s` : ''}, p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms, errors ${res.errors}; ` +
          `CPU: load generator ${(r.cpuShare * 100).toFixed(0)} %, service ${(service * 100).toFixed(0)} %, PostgreSQL ${(postgres * 100).toFixed(0)} %` +
          (v
            ? `; check ${v.ok ? 'OK' : 'FAILED'} (${v.acknowledgedMessages} acknowledged, ${v.storedMessages} stored, ${v.threadsChecked} threads, ${v.gapViolations} with gaps)`
            : ''),
      );
      if (v && !v.ok) log(`  !! CORRECTNESS CHECK FAILED: ${JSON.stringify(v)}`);
      if (res.errors > 0 && r.non2xx > 0) log(`  !! ${r.non2xx} responses were not 2xx`);
    };
    for (const s of selected) {
      const done = alternated.get(s.name);
      if (done) {
        record(s, null, done);
        continue;
      }
      const partner = s.alternateWith ? selected.find((x) => x.name === s.alternateWith) : undefined;
      if (partner) {
        log(
          `scenarios ${s.name} and ${partner.name} in ${ALTERNATE_ROUNDS} alternating rounds (${SECONDS} s each in all)`,
        );
        const both = await measureAlternating(s, partner);
        alternated.set(partner.name, both.b);
        record(s, null, both.a);
        continue;
      }
      let rate: number | null = null;
      if (s.pacedAt) {
        const ref = results.find((x) => x.name === s.pacedAt!.scenario);
        if (!ref) {
          log(`scenario ${s.name}: skipped (needs ${s.pacedAt.scenario} first)`);
          continue;
        }
        rate = Math.max(1, Math.floor(ref.requestsPerSecond * s.pacedAt.share));
      }
      log(`scenario ${s.name}: ${s.title}${rate ? `, paced at ${rate} req/s` : ''} (${SECONDS} s)`);
      record(s, rate, await measure(s, server, rate));
    }

    // The same loads with the other worker count / server kind, for WEB_CONCURRENCY and the build.
    const rps = (name: string) => results.find((x) => x.name === name)?.requestsPerSecond ?? 0;
    const workersComparison: Report['workersComparison'] = [
      { workers: WORKERS, appendRps: rps('append-spread'), readRps: rps('read-latest-50') },
    ];
    const rerun = async (label: string, workers: number, kind: 'tsx' | 'compiled', names: string[]) => {
      log(`${label}: restarting the service (${kind}, ${workers} worker(s))`);
      await stopChild(server!);
      server = await startServer(databaseUrl, port, null, workers, kind);
      await warmUp();
      const out: Record<string, number> = {};
      for (const name of names) {
        const s = byName.get(name)!;
        log(`  ${name} with ${kind}, ${workers} worker(s) (${SECONDS} s)`);
        const { r, verification } = await measure(s, server, null);
        if (verification && !verification.ok)
          throw new Error(`correctness check failed (${label}): ${JSON.stringify(verification)}`);
        out[name] = r.ok / r.seconds;
        log(`  ${out[name].toFixed(0)} req/s, p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms`);
      }
      return out;
    };
    if (env.BENCH_COMPARE_WORKERS !== '0' && results.some((x) => x.name === 'append-spread')) {
      const other = WORKERS === 1 ? 2 : 1;
      const out = await rerun('workers comparison', other, SERVER_KIND, ['append-spread', 'read-latest-50']);
      workersComparison.push({ workers: other, appendRps: out['append-spread'], readRps: out['read-latest-50'] });
    }
    let serverComparison: Report['serverComparison'] = [];
    if (env.BENCH_COMPARE_SERVER === '1') {
      const names = results.filter((x) => !byName.get(x.name)!.pacedAt).map((x) => x.name);
      const other = SERVER_KIND === 'tsx' ? 'compiled' : 'tsx';
      const out = await rerun('server comparison', WORKERS, other, names);
      serverComparison = names.map((name) => ({
        scenario: name,
        [SERVER_KIND]: rps(name),
        [other]: out[name],
      })) as Report['serverComparison'];
    }
    log('stopping the service');
    await stopChild(server);
    server = null;
    await db.end();

    if (profileDir && existsSync(profileDir)) {
      const files = readdirSync(profileDir)
        .filter((f) => f.endsWith('.cpuprofile'))
        .map((f) => path.join(profileDir, f));
      const profile = summarizeProfiles(files);
      writeFileSync(path.join(resultsDir, 'profile-summary.txt'), profile);
      log(`CPU profile summary (profile-summary.txt):\n${profile}`);
    }

    const report: Report = {
      when: new Date().toISOString(),
      command: [
        ...Object.entries(env)
          .filter(([k]) => k.startsWith('BENCH_') && k !== 'BENCH_RESULTS_DIR' && k !== 'BENCH_WRITE_DOCS')
          .map(([k, v]) => `${k}=${v}`),
        'npm run bench',
      ].join(' '),
      settings: {
        seconds: SECONDS,
        connections: CONNECTIONS,
        loadGenerator: `wrk ${WRK_THREADS} thread${WRK_THREADS > 1 ? 's' : ''} (paced scenarios: raw HTTP/1.1 client in a worker thread)`,
        wrkThreads: WRK_THREADS,
        workers: WORKERS,
        server: SERVER_KIND,
        rateLimiter: RATE_LIMIT,
        ceilingSeconds: script ? CEILING_SECONDS : 0,
        ceilingScript: script ? path.relative(root, script) : null,
        threads: THREADS,
        batch: BATCH,
        seed: { perThread: PER_THREAD, smallThread: SMALL, bigThread: BIG, seconds: seedSeconds },
      },
      machine: { ...machine, loadAverageAtEnd: loadavg().map((l) => Number(l.toFixed(2))) },
      framework,
      ceiling,
      scenarios: results,
      workersComparison: workersComparison.sort((a, b) => a.workers - b.workers),
      serverComparison,
    };
    writeFileSync(path.join(resultsDir, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
    const docs = env.BENCH_WRITE_DOCS === '0' ? null : path.join(root, 'BENCHMARKS.md');
    const md = writeReport(report, resultsDir, docs);
    process.stdout.write('\n' + md + '\n');
    log(
      `wrote ${path.relative(root, resultsDir) || '.'}/latest.json, latest.md, latency.svg, throughput.svg${docs ? ' and BENCHMARKS.md' : ''}`,
    );
    const failed = results.filter((r) => r.verification && !r.verification.ok);
    if (failed.length > 0) {
      process.exitCode = 1;
      log(`correctness check failed in: ${failed.map((f) => f.name).join(', ')}`);
    }
  } finally {
    await cleanup();
  }
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
