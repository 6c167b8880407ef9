/**
 * `npm run bench`: the service's throughput and latency, measured beside the PostgreSQL ceiling.
 *
 * Starts the real service (src/server.ts, WEB_CONCURRENCY workers) as a child process on a
 * fresh database, drives it with autocannon from this process, checks after every write
 * scenario that each thread's seqs are gapless and every acknowledged message is stored exactly
 * once, runs /work/shared/bench/pg-ceiling/run.sh in the same run, and writes
 * bench/results/latest.{json,md}, bench/results/latency.svg and the generated part of
 * BENCHMARKS.md. Then it stops its server and drops its database.
 *
 * Environment (all optional):
 *   DATABASE_URL           PostgreSQL server to use (a scratch database is created on it and dropped);
 *                          default postgres://postgres@127.0.0.1:5432/postgres
 *   BENCH_EMBEDDED=1       use an embedded PostgreSQL instead (the ceiling is then skipped)
 *   BENCH_SECONDS=15       duration of each scenario
 *   BENCH_CONNECTIONS=64   autocannon connections (closed loop)
 *   BENCH_WORKERS=1        WEB_CONCURRENCY of the server under test (the other of 1/2 is compared)
 *   BENCH_CEILING_SECONDS=10  seconds per pgbench scenario of the ceiling; 0 skips it
 *   BENCH_RATE_LIMIT=off   on: keep the rate limiter on (project limits set far above the load)
 *   BENCH_CPU_PROF=1       run the server with node --cpu-prof; a summary is printed and saved
 *   BENCH_COMPARE_WORKERS=0  skip re-running append and read with the other worker count (1 vs 2)
 *   BENCH_WRITE_DOCS=0     do not update BENCHMARKS.md
 *   BENCH_SERVER_LOG_LEVEL=warn  log level of the server under test
 *   BENCH_RESULTS_DIR      write latest.json/md, latency.svg elsewhere (default bench/results)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import pg from 'pg';
import { createDb } from '../src/lib/db';
import { startEmbeddedPostgres } from '../src/lib/embedded-postgres';
import { migrateLatest } from '../src/lib/migrate';
import { createKeysStore } from '../src/modules/keys/keys-store';
import { createProjectsService } from '../src/modules/projects/projects-service';
import { createProjectsStore } from '../src/modules/projects/projects-store';
import { renderLatencySvg } from './latency-chart';
import { summarizeProfiles } from './profile-summary';
import { runCeiling, type CeilingRow } from './pg-ceiling';
import { renderMarkdown, updateBenchmarksMd, type Report, type ScenarioResult, type Verification } from './report';
import { withDatabase, adminQuery as admin } from '../src/lib/pg-admin';

const env = process.env;
const SECONDS = Number(env.BENCH_SECONDS ?? 15);
const CONNECTIONS = Number(env.BENCH_CONNECTIONS ?? 64);
const WORKERS = Number(env.BENCH_WORKERS ?? 1);
const CEILING_SECONDS = Number(env.BENCH_CEILING_SECONDS ?? 10);
const RATE_LIMIT = env.BENCH_RATE_LIMIT === 'on';
const CPU_PROF = env.BENCH_CPU_PROF === '1';
const THREADS = 1000;
const BATCH = 100;
const root = path.resolve(__dirname, '..');
const resultsDir = env.BENCH_RESULTS_DIR ? path.resolve(env.BENCH_RESULTS_DIR) : path.join(root, 'bench', 'results');
const started = Date.now();

const log = (msg: string) =>
  process.stdout.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${msg}\n`);

async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function startServer(
  databaseUrl: string,
  port: number,
  profileDir: string | null,
  workers = WORKERS,
): Promise<ChildProcess> {
  const args = [
    ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []),
    '--import',
    'tsx',
    path.join(root, 'src/server.ts'),
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

async function stopServer(child: ChildProcess) {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(20_000)]);
  if (child.exitCode === null) child.kill('SIGKILL');
}

/** What a write scenario got acknowledged: per thread, message id → seq. */
class Acks {
  readonly byThread = new Map<string, Map<string, number>>();
  duplicates = 0;
  count = 0;
  add(threadId: string, id: string, seq: number) {
    let m = this.byThread.get(threadId);
    if (!m) this.byThread.set(threadId, (m = new Map()));
    if (m.has(id)) this.duplicates++;
    else this.count++;
    m.set(id, seq);
  }
}

interface Load {
  name: string;
  title: string;
  messagesPerWrite: number;
  /** Share of requests that are writes (1 = all, 0 = reads only). */
  writeShare: number;
  writePath: () => string;
  writeBody: () => string;
  readPath?: () => string;
  overallRate?: number;
  seconds?: number;
}

const rnd = (n: number) => Math.floor(Math.random() * n);
const threadId = (i: number) => `t-${String(i).padStart(4, '0')}`;

function runLoad(
  url: string,
  key: string,
  load: Load,
  acks: Acks,
): Promise<{ result: autocannon.Result; writes: number; reads: number }> {
  let writes = 0;
  let reads = 0;
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'x-user-id': 'bench-user' };
  const readHeaders = { authorization: `Bearer ${key}`, 'x-user-id': 'bench-user' };
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url,
        connections: CONNECTIONS,
        duration: load.seconds ?? SECONDS,
        overallRate: load.overallRate,
        timeout: 10,
        requests: [
          {
            setupRequest: (req) => {
              if (load.writeShare < 1 && (load.writeShare === 0 || Math.random() >= load.writeShare)) {
                reads++;
                return { ...req, method: 'GET', path: load.readPath!(), headers: readHeaders, body: undefined };
              }
              writes++;
              return { ...req, method: 'POST', path: load.writePath(), headers, body: load.writeBody() };
            },
            onResponse: (status, body) => {
              if (status !== 201) return;
              const parsed = JSON.parse(body) as {
                id?: string;
                thread_id: string;
                seq: number;
                data?: Array<{ id: string; thread_id: string; seq: number }>;
              };
              for (const m of parsed.data ?? [parsed]) acks.add(m.thread_id, m.id!, m.seq);
            },
          },
        ],
      },
      (err, result) => (err ? reject(err) : resolve({ result, writes, reads })),
    );
    let last = Date.now();
    instance.on('tick', () => {
      if (Date.now() - last >= 5_000) {
        last = Date.now();
        process.stdout.write(`        … ${load.name}: ${writes + reads} requests sent\n`);
      }
    });
  });
}

type GroupTotals = Map<string, { sum: number; count: number; commitSum: number }>;

/** One scrape of GET /metrics on a fresh connection (the cluster hands each to a worker in turn). */
function scrape(base: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get(`${base}/metrics`, { agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}

/**
 * The ingest group-size and commit-time histograms of every worker, keyed by the worker's
 * start time (workers are separate registries; a delta across two of them would be noise).
 */
async function groupStats(base: string, workers: number): Promise<GroupTotals> {
  const out: GroupTotals = new Map();
  for (let i = 0; i < workers * 6 && out.size < workers; i++) {
    try {
      const text = await scrape(base);
      const num = (name: string) => Number(new RegExp(`^${name} ([0-9.e+-]+)$`, 'm').exec(text)?.[1] ?? NaN);
      const id = String(num('progressdb_process_start_time_seconds'));
      const r = {
        sum: num('progressdb_ingest_group_size_sum'),
        count: num('progressdb_ingest_group_size_count'),
        commitSum: num('progressdb_ingest_commit_seconds_sum'),
      };
      if (Number.isFinite(r.count)) out.set(id, r);
    } catch {
      // metrics are a nicety here
    }
  }
  return out;
}

function groupDelta(a: GroupTotals, b: GroupTotals): { meanSize: number; meanCommitMs: number } | null {
  let sum = 0;
  let count = 0;
  let commit = 0;
  for (const [id, y] of b) {
    const x = a.get(id);
    if (!x) continue;
    sum += y.sum - x.sum;
    count += y.count - x.count;
    commit += y.commitSum - x.commitSum;
  }
  return count > 0 ? { meanSize: sum / count, meanCommitMs: (1000 * commit) / count } : null;
}

/** After a write scenario: every thread's log is gapless, and each acknowledged message is stored once, with its acknowledged seq. */
async function verify(db: pg.Client, projectId: string, acks: Acks, messagesBefore: number): Promise<Verification> {
  const gaps = await db.query(
    `select count(*)::int as bad, (select count(*)::int from threads where project_id = $1) as threads from (
       select t.id, t.last_seq, count(e.seq) as n, min(e.seq) as lo, max(e.seq) as hi
         from threads t left join events e on e.project_id = t.project_id and e.thread_id = t.id
        where t.project_id = $1 group by t.id, t.last_seq) s
      where not (n = last_seq and coalesce(lo, 1) = 1 and coalesce(hi, 0) = last_seq)`,
    [projectId],
  );
  const t: string[] = [];
  const ids: string[] = [];
  const seqs: number[] = [];
  for (const [thread, m] of acks.byThread) {
    for (const [id, seq] of m) {
      t.push(thread);
      ids.push(id);
      seqs.push(seq);
    }
  }
  const found = await db.query(
    `select count(*)::int as n from unnest($2::text[], $3::text[], $4::bigint[]) a(thread_id, id, seq)
       join messages m on m.project_id = $1 and m.thread_id = a.thread_id and m.id = a.id and m.seq = a.seq`,
    [projectId, t, ids, seqs],
  );
  const total = await db.query(`select count(*)::int as n from messages where project_id = $1`, [projectId]);
  const v: Verification = {
    ok: false,
    threadsChecked: gaps.rows[0].threads,
    acknowledged: acks.count,
    storedOfAcknowledged: found.rows[0].n,
    duplicateAcks: acks.duplicates,
    gapViolations: gaps.rows[0].bad,
    storedUnacknowledged: total.rows[0].n - messagesBefore - found.rows[0].n,
  };
  v.ok = v.gapViolations === 0 && v.duplicateAcks === 0 && v.storedOfAcknowledged === v.acknowledged;
  return v;
}

function toScenario(
  load: Load,
  r: autocannon.Result,
  writes: number,
  reads: number,
  verification: Verification | null,
): ScenarioResult {
  const secs = r.duration;
  const ok = r.requests.total - r.non2xx;
  const writeShare = writes + reads > 0 ? writes / (writes + reads) : 0;
  return {
    name: load.name,
    title: load.title,
    connections: CONNECTIONS,
    seconds: secs,
    overallRate: load.overallRate ?? null,
    requestsPerSecond: ok / secs,
    messagesPerSecond: load.writeShare > 0 ? (ok * writeShare * load.messagesPerWrite) / secs : 0,
    readsPerSecond: load.writeShare < 1 ? (ok * (1 - writeShare)) / secs : 0,
    latency: {
      p50: r.latency.p50,
      p75: r.latency.p75,
      p90: r.latency.p90,
      p97_5: r.latency.p97_5,
      p99: r.latency.p99,
      p99_9: r.latency.p99_9,
      max: r.latency.max,
    },
    errors: r.errors + r.timeouts + r.non2xx,
    non2xx: r.non2xx,
    statuses: Object.fromEntries(
      Object.entries(r.statusCodeStats ?? {}).map(([code, v]) => [code, (v as { count: number }).count]),
    ),
    verification,
  };
}

async function main() {
  mkdirSync(resultsDir, { recursive: true });
  const embeddedWanted = env.BENCH_EMBEDDED === '1';
  const dataDir = path.join(root, '.bench-data', `main-${process.pid}`);
  const embedded = embeddedWanted ? await startEmbeddedPostgres(dataDir, 30000 + rnd(20000)) : null;
  const adminUrl = embedded?.url ?? env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const dbName = `pdb_bench_${randomBytes(4).toString('hex')}`;
  const databaseUrl = withDatabase(adminUrl, dbName);
  const profileDir = CPU_PROF ? path.join(resultsDir, 'profiles') : null;
  let server: ChildProcess | null = null;
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    if (server) await stopServer(server);
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
    log('interrupted: stopping the server and dropping the bench database');
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    const machine = {
      nproc: availableParallelism(),
      cpu: cpus()[0]?.model ?? 'unknown',
      node: process.version,
      loadAverageAtStart: loadavg().map((l) => Number(l.toFixed(2))),
      postgres: '',
      database: embedded ? 'embedded PostgreSQL' : adminUrl.replace(/\/\/[^@]*@/, '//…@'),
    };
    log(
      `ProgressDB benchmark: nproc=${machine.nproc}, node ${machine.node}, load average ${machine.loadAverageAtStart.join(' ')}`,
    );
    log(
      `${SECONDS} s per scenario, ${CONNECTIONS} connections, ${WORKERS} worker(s), rate limiter ${RATE_LIMIT ? 'on' : 'off'}, ceiling ${CEILING_SECONDS > 0 && !embedded ? `${CEILING_SECONDS} s per pgbench run` : 'skipped'}`,
    );

    // 1. The ceiling first, while nothing else of ours runs.
    let ceiling: CeilingRow[] = [];
    if (CEILING_SECONDS > 0 && !embedded) {
      const pgurl = env.BENCH_PGURL ?? withDatabase(adminUrl, 'postgres');
      log(
        `PostgreSQL ceiling: ../shared/bench/pg-ceiling/run.sh ${CEILING_SECONDS} (6 pgbench runs, ~${CEILING_SECONDS * 6 + 5} s)`,
      );
      ceiling = await runCeiling(
        path.resolve(root, '../shared/bench/pg-ceiling/run.sh'),
        pgurl,
        CEILING_SECONDS,
        (line) => log(`  ceiling ${line}`),
      );
    }

    // 2. A fresh database, migrated; a project; 1,000 threads and a hot one.
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
    const key = creds.keys.secret;

    const port = await freePort();
    log(
      `starting the service (${WORKERS} worker(s)) on 127.0.0.1:${port}, database ${dbName}${CPU_PROF ? ', with --cpu-prof' : ''}`,
    );
    if (profileDir) rmSync(profileDir, { recursive: true, force: true });
    server = await startServer(databaseUrl, port, profileDir);
    const base = `http://127.0.0.1:${port}`;

    log(`creating ${THREADS} threads and the hot thread`);
    const ids = [...Array.from({ length: THREADS }, (_, i) => threadId(i)), 'hot'];
    for (let i = 0; i < ids.length; i += 50) {
      await Promise.all(
        ids.slice(i, i + 50).map(async (id) => {
          const r = await fetch(`${base}/v1/threads`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
            body: JSON.stringify({ id, type: 'channel' }),
          });
          if (r.status !== 201) throw new Error(`creating thread ${id}: ${r.status} ${await r.text()}`);
        }),
      );
    }

    const db = new pg.Client({ connectionString: databaseUrl });
    await db.connect();
    const messageCount = async () =>
      (await db.query(`select count(*)::int as n from messages where project_id = $1`, [creds.project_id])).rows[0]
        .n as number;
    const single = () => JSON.stringify({ body: { text: `hello ${rnd(1e9)}` } });
    const batch = JSON.stringify({
      messages: Array.from({ length: BATCH }, (_, i) => ({ body: { text: `batched message ${i}` } })),
    });
    const spread: Load = {
      name: 'append-spread',
      title: 'append 1 message, random one of 1,000 threads',
      messagesPerWrite: 1,
      writeShare: 1,
      writePath: () => `/v1/threads/${threadId(rnd(THREADS))}/messages`,
      writeBody: single,
    };
    const scenarios: Load[] = [
      spread,
      {
        name: 'append-hot',
        title: 'append 1 message, one hot thread',
        messagesPerWrite: 1,
        writeShare: 1,
        writePath: () => '/v1/threads/hot/messages',
        writeBody: single,
      },
      {
        name: 'append-batch',
        title: `batch append, ${BATCH} messages per request, random thread`,
        messagesPerWrite: BATCH,
        writeShare: 1,
        writePath: () => `/v1/threads/${threadId(rnd(THREADS))}/messages/batch`,
        writeBody: () => batch,
      },
      {
        name: 'read-latest-50',
        title: 'read the latest 50 messages of a random thread',
        messagesPerWrite: 0,
        writeShare: 0,
        writePath: () => '',
        writeBody: () => '',
        readPath: () => `/v1/threads/${threadId(rnd(THREADS))}/messages?limit=50`,
      },
      {
        name: 'mixed-90-10',
        title: '90% read latest 50 / 10% append, random thread',
        messagesPerWrite: 1,
        writeShare: 0.1,
        writePath: spread.writePath,
        writeBody: single,
        readPath: () => `/v1/threads/${threadId(rnd(THREADS))}/messages?limit=50`,
      },
    ];

    log('warm-up: 3 s of appends');
    await runLoad(base, key, { ...spread, seconds: 3 }, new Acks());

    const results: ScenarioResult[] = [];
    const runScenario = async (load: Load) => {
      log(
        `scenario ${load.name}: ${load.title}${load.overallRate ? `, paced at ${load.overallRate} req/s` : ''} (${load.seconds ?? SECONDS} s)`,
      );
      const acks = new Acks();
      const before = await messageCount();
      const g0 = load.writeShare > 0 ? await groupStats(base, WORKERS) : null;
      const { result, writes, reads } = await runLoad(base, key, load, acks);
      const groups = g0 ? groupDelta(g0, await groupStats(base, WORKERS)) : null;
      let verification: Verification | null = null;
      if (load.writeShare > 0) {
        // Let in-flight requests finish (autocannon stops sending at the deadline, not answering).
        await sleep(500);
        verification = await verify(db, creds.project_id, acks, before);
        if (!verification.ok) log(`  !! CORRECTNESS CHECK FAILED: ${JSON.stringify(verification)}`);
      }
      const s = { ...toScenario(load, result, writes, reads, verification), groups };
      results.push(s);
      log(
        `  ${s.requestsPerSecond.toFixed(0)} req/s, ${s.messagesPerSecond.toFixed(0)} msg/s, p50 ${s.latency.p50} ms, p99 ${s.latency.p99} ms, max ${s.latency.max} ms, errors ${s.errors}` +
          (groups
            ? `; groups of ${groups.meanSize.toFixed(1)} writes, ${groups.meanCommitMs.toFixed(1)} ms each`
            : '') +
          (verification
            ? `; check ${verification.ok ? 'OK' : 'FAILED'} (${verification.acknowledged} acknowledged, all stored once, ${verification.threadsChecked} threads gapless)`
            : ''),
      );
      return s;
    };
    for (const load of scenarios) {
      const s = await runScenario(load);
      if (load === spread) {
        // Latency at half the maximum rate: paced, not closed loop.
        await runScenario({
          ...spread,
          name: 'append-spread-half-rate',
          title: 'append 1 message, random thread, paced at half the maximum rate',
          overallRate: Math.max(1, Math.floor(s.requestsPerSecond / 2)),
        });
      }
    }

    log('stopping the service');
    await stopServer(server);
    server = null;

    // The same append and read loads with the other worker count, for the WEB_CONCURRENCY choice.
    const workersComparison: Report['workersComparison'] = [];
    const current = {
      workers: WORKERS,
      appendRps: results[0].requestsPerSecond,
      readRps: results.find((r) => r.name === 'read-latest-50')!.requestsPerSecond,
    };
    workersComparison.push(current);
    if (env.BENCH_COMPARE_WORKERS !== '0') {
      const other = WORKERS === 1 ? 2 : 1;
      log(`workers comparison: restarting the service with ${other} worker(s)`);
      server = await startServer(databaseUrl, port, null, other);
      const cmp = { workers: other, appendRps: 0, readRps: 0 };
      await runLoad(base, key, { ...spread, seconds: 2 }, new Acks());
      for (const load of [spread, scenarios.find((x) => x.name === 'read-latest-50')!]) {
        const acks = new Acks();
        const before = await messageCount();
        log(`  ${load.name} with ${other} worker(s) (${SECONDS} s)`);
        const { result } = await runLoad(base, key, load, acks);
        const ok = (result.requests.total - result.non2xx) / result.duration;
        if (load === spread) {
          cmp.appendRps = ok;
          await sleep(500);
          const v = await verify(db, creds.project_id, acks, before);
          if (!v.ok) throw new Error(`correctness check failed with ${other} worker(s): ${JSON.stringify(v)}`);
        } else cmp.readRps = ok;
        log(`  ${ok.toFixed(0)} req/s, p99 ${result.latency.p99} ms`);
      }
      workersComparison.push(cmp);
      await stopServer(server);
      server = null;
    }
    await db.end();
    let profile: string | null = null;
    if (profileDir && existsSync(profileDir)) {
      const files = readdirSync(profileDir)
        .filter((f) => f.endsWith('.cpuprofile'))
        .map((f) => path.join(profileDir, f));
      profile = summarizeProfiles(files);
      writeFileSync(path.join(resultsDir, 'profile-summary.txt'), profile);
      log(`CPU profile summary (bench/results/profile-summary.txt):\n${profile}`);
    }

    const report: Report = {
      when: new Date().toISOString(),
      command: 'npm run bench',
      settings: {
        seconds: SECONDS,
        connections: CONNECTIONS,
        workers: WORKERS,
        rateLimiter: RATE_LIMIT,
        ceilingSeconds: CEILING_SECONDS,
        threads: THREADS,
        batch: BATCH,
      },
      machine: { ...machine, loadAverageAtEnd: loadavg().map((l) => Number(l.toFixed(2))) },
      scenarios: results,
      ceiling,
      workersComparison: workersComparison.sort((a, b) => a.workers - b.workers),
    };
    writeFileSync(path.join(resultsDir, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
    const md = renderMarkdown(report);
    writeFileSync(path.join(resultsDir, 'latest.md'), md);
    writeFileSync(path.join(resultsDir, 'latency.svg'), renderLatencySvg(results));
    if (env.BENCH_WRITE_DOCS !== '0') updateBenchmarksMd(path.join(root, 'BENCHMARKS.md'), md);
    process.stdout.write('\n' + md + '\n');
    log(
      `wrote ${path.relative(root, resultsDir) || '.'}/latest.json, latest.md, latency.svg${env.BENCH_WRITE_DOCS !== '0' ? ' and BENCHMARKS.md' : ''}`,
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
