/**
 * Webhooks: what the outbox costs the append path, and how fast deliveries flow.
 *
 *   npm run bench:webhooks -- [--modes without,outbox,separate,same] [--rounds 1] [--duration 10]
 *                             [--warmup 3] [--connections 64] [--cpu-prof]
 *
 * Three parties apart, each its own process, each with its CPU share reported (as `npm run bench`
 * does: wrk's from its own /proc stat, the others from /proc deltas):
 *  - the load: wrk (a separate C process, bench/wrk.ts), closed loop, one message appended to a
 *    random one of 1,000 threads (as `npm run bench`'s append-spread);
 *  - the service: src/server.ts child processes (NODE_ENV=production, rate limiter off) on a fresh
 *    database — `ingest` (WEBHOOK_WORKER_ENABLED=false), `same` (worker on: ingests and delivers)
 *    and `deliverer` (worker on, takes no load: the dedicated-delivery-replica layout). The ones a
 *    mode does not use are SIGSTOPped (no CPU, no claims) and resumed when needed;
 *  - the receiver: bench/webhooks-receiver.ts, a child process answering 204, recording per event
 *    commit → arrival (event created_at, the group transaction's now(), to arrival; same clock),
 *    and counting the connections it accepts (kept-alive reuse shows as far fewer than POSTs).
 * PostgreSQL's share is every `postgres` process's (the machine's, not only this database's: on a
 * shared server, other tenants' queries count too).
 *
 * Modes (--modes, in this order, each round):
 *  - without: the endpoint disabled (the outbox statement runs and finds no endpoint);
 *  - outbox: the endpoint enabled, no worker running — what writing the outbox costs the append
 *    path alone. Its backlog is then drained by the `deliverer` with nothing else running: the
 *    delivery capacity of one process (events/s, and CPU ms per delivered event per party);
 *  - separate: enabled, the ingesting server does not deliver, the `deliverer` process does;
 *  - same: enabled, the ingesting server also delivers (the default deployment).
 * For separate and same, after the load the harness waits until every queued event has reached
 * the receiver: delivered events/s over load + drain, the drain's length, and commit → receiver
 * p50/p99 over every event of the mode. `--worker same|separate|none` (the former flag) selects
 * without + outbox + that mode. WEBHOOK_* variables of the environment (e.g. WEBHOOK_CONCURRENCY,
 * WEBHOOK_CLAIM_INTERVAL_MS) reach the servers. --cpu-prof runs the servers with node --cpu-prof
 * and prints a summary per process (the deliverer's is the delivery path alone).
 * Prints progress lines, then markdown tables ready for BENCHMARKS.md.
 * DATABASE_URL names a PostgreSQL server (a scratch database is created and dropped on it);
 * without it an embedded PostgreSQL is started.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { createDb } from '../src/lib/db';
import { startEmbeddedPostgres } from '../src/lib/embedded-postgres';
import { migrateLatest } from '../src/lib/migrate';
import { withDatabase, adminQuery as admin } from '../src/lib/pg-admin';
import { createKeysStore } from '../src/modules/keys/keys-store';
import { createProjectsService } from '../src/modules/projects/projects-service';
import { createProjectsStore } from '../src/modules/projects/projects-store';
import { createSecretBox, newWebhookSecret, resolveWebhookKey } from '../src/modules/webhooks/webhook-secrets';
import { postgresCpu, postgresDelta, treeCpuSeconds } from './cpu';
import { stopChild } from './framework-servers';
import { summarizeProfiles } from './profile-summary';
import { findWrk, runWrk, WRK_INSTALL_HINT, type LoadResult, type WrkLoad } from './wrk';

const MODES = ['without', 'outbox', 'separate', 'same'] as const;
type Mode = (typeof MODES)[number];
const { values: args } = parseArgs({
  options: {
    modes: { type: 'string' },
    worker: { type: 'string' },
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    rounds: { type: 'string', default: '1' },
    connections: { type: 'string', default: '64' },
    'wrk-threads': { type: 'string' },
    'cpu-prof': { type: 'boolean', default: false },
  },
});
if (args.worker && !['same', 'separate', 'none'].includes(args.worker))
  throw new Error('--worker is same, separate or none');
const modes: Mode[] = args.modes
  ? (args.modes.split(',').map((m) => m.trim()) as Mode[])
  : args.worker
    ? ['without', 'outbox', ...(args.worker === 'none' ? [] : [args.worker as Mode])]
    : [...MODES];
for (const m of modes) if (!MODES.includes(m)) throw new Error(`unknown mode ${m}; known: ${MODES.join(', ')}`);
const duration = Number(args.duration);
const warmup = Number(args.warmup);
const rounds = Number(args.rounds);
const connections = Number(args.connections);
const NPROC = availableParallelism();
const wrkThreads = Number(args['wrk-threads'] ?? Math.max(1, Math.floor(NPROC / 2)));
const THREADS = 1000;
const root = path.resolve(__dirname, '..');
const say = (s: string) => process.stdout.write(s + '\n');
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
};
const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
const f0 = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : 'n/a');
const share = (n: number) => `${(n * 100).toFixed(0)} %`;

async function startServer(env: Record<string, string>, port: number, profileDir: string | null) {
  const child = spawn(
    process.execPath,
    [
      ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []),
      '--import',
      'tsx',
      path.join(root, 'src/server.ts'),
    ],
    {
      cwd: root,
      env: { ...process.env, ...env, PORT: String(port), HOST: '127.0.0.1' },
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/readyz`)).ok) return child;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL'); // not left running against a database about to be dropped
      throw new Error('server did not become ready in 30 s');
    }
    await sleep(200);
  }
}

interface ReceiverStats {
  events: number;
  posts: number;
  connections: number;
  firstAt: number;
  lastAt: number;
  latencies: number[];
}

function startReceiver(): Promise<{ child: ChildProcess; url: string; ask: <T>(cmd: string) => Promise<T> }> {
  const child = fork(path.join(__dirname, 'webhooks-receiver.ts'), [], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const ask = <T>(cmd: string) =>
    new Promise<T>((resolve) => {
      const on = (m: { cmd: string }) => {
        if (m.cmd !== cmd) return;
        child.off('message', on);
        resolve(m as T);
      };
      child.on('message', on);
      child.send({ cmd });
    });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`receiver exited with ${code}`)));
    child.on('message', (m: { cmd: string; port?: number }) => {
      if (m.cmd === 'ready') resolve({ child, url: `http://127.0.0.1:${m.port}/hook`, ask });
    });
  });
}

interface ModeResult {
  mode: Mode;
  load: LoadResult;
  queued: number;
  cpu: { wrk: number; ingest: number; deliverer: number; receiver: number; postgres: number };
  delivery: null | {
    events: number;
    posts: number;
    connections: number;
    deliveredDuringLoad: number;
    eventsPerSecond: number;
    drainSeconds: number;
    latencies: number[];
    dead: number;
  };
}

interface DrainResult {
  events: number;
  posts: number;
  connections: number;
  eventsPerSecond: number;
  cpuMsPerEvent: { deliverer: number; receiver: number; postgres: number };
  cpu: { deliverer: number; receiver: number; postgres: number };
}

async function main() {
  if (!findWrk()) throw new Error(WRK_INSTALL_HINT);
  const dataDir = path.join(root, '.bench-data', `webhooks-${process.pid}`);
  const embedded = process.env.DATABASE_URL
    ? null
    : await startEmbeddedPostgres(dataDir, 30000 + Math.floor(Math.random() * 20000));
  const adminUrl = process.env.DATABASE_URL ?? embedded!.url;
  const dbName = `pdb_bench_wh_${randomBytes(4).toString('hex')}`;
  await admin(adminUrl, `create database ${dbName}`);
  const databaseUrl = withDatabase(adminUrl, dbName);
  const db = createDb(databaseUrl, 4);
  const profileDir = args['cpu-prof'] ? mkdtempSync(path.join(tmpdir(), 'pdb-wh-prof-')) : null;
  const servers: Partial<Record<'ingest' | 'same' | 'deliverer', ChildProcess>> = {};
  const receiver = await startReceiver();

  try {
    await migrateLatest(db);
    const projects = createProjectsService({
      db,
      projectsStore: createProjectsStore(),
      keysStore: createKeysStore(),
      signingSecretGraceSeconds: 0,
    });
    const creds = await projects.createProject({ name: 'webhooks bench' });
    const key = creds.keys.secret;
    const webhookKey = randomBytes(32).toString('base64url');
    const box = createSecretBox(await resolveWebhookKey(db, webhookKey));
    await db('webhook_endpoints').insert({
      project_id: creds.project_id,
      id: 'we_bench',
      url: receiver.url,
      enabled: false,
      secret_ciphertext: box.seal(creds.project_id, 'we_bench', newWebhookSecret()),
    });
    const port = 18000 + Math.floor(Math.random() * 2000);
    const serverEnv = {
      NODE_ENV: 'production',
      DATABASE_URL: databaseUrl,
      LOG_LEVEL: 'warn',
      SEED_DEV_PROJECT: 'false',
      RATE_LIMIT_ENABLED: 'false',
      DB_POOL_MAX: process.env.DB_POOL_MAX ?? '20',
      SLOW_QUERY_MS: process.env.SLOW_QUERY_MS ?? '5000',
      WEBHOOK_SECRET_KEY: webhookKey,
      WEBHOOK_ALLOW_HTTP: 'true',
      WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true',
    };
    const ports = { ingest: port, same: port + 1, deliverer: port + 2 };
    const needSame = modes.includes('same');
    const needDeliverer = modes.some((m) => m === 'outbox' || m === 'separate');
    servers.ingest = await startServer({ ...serverEnv, WEBHOOK_WORKER_ENABLED: 'false' }, ports.ingest, profileDir);
    if (needSame)
      servers.same = await startServer({ ...serverEnv, WEBHOOK_WORKER_ENABLED: 'true' }, ports.same, profileDir);
    if (needDeliverer)
      servers.deliverer = await startServer(
        { ...serverEnv, WEBHOOK_WORKER_ENABLED: 'true' },
        ports.deliverer,
        profileDir,
      );
    const running = new Set(Object.keys(servers));
    const only = (names: Array<'same' | 'deliverer'>) => {
      for (const n of ['same', 'deliverer'] as const) {
        const child = servers[n];
        if (!child) continue;
        const want = names.includes(n);
        if (want && !running.has(n)) child.kill('SIGCONT');
        if (!want && running.has(n)) child.kill('SIGSTOP');
        if (want) running.add(n);
        else running.delete(n);
      }
    };
    const cpuOf = (n: 'ingest' | 'same' | 'deliverer') => (servers[n] ? treeCpuSeconds(servers[n].pid!) : 0);

    // Threads exist first (as in npm run bench), so every append takes the merged fast path.
    const base = `http://127.0.0.1:${ports.ingest}`;
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
    const load: WrkLoad = {
      method: 'POST',
      body: JSON.stringify({ body: { text: 'hello from the webhooks benchmark' } }),
      targets: Array.from({ length: THREADS }, (_, i) => ({
        path: `/v1/threads/t${i}/messages`,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'x-user-id': 'u' },
      })),
    };
    const wrk = (url: string, seconds: number) =>
      runWrk({ url, connections, threads: wrkThreads, seconds, load, timeoutSeconds: 30 });
    const setEndpoint = (enabled: boolean) =>
      db('webhook_endpoints').where({ project_id: creds.project_id, id: 'we_bench' }).update({ enabled });
    const counts = async () => {
      const { rows } = await db.raw<{ rows: Array<{ status: string; n: number }> }>(
        'select status, count(*)::int as n from webhook_deliveries where project_id = ? group by status',
        [creds.project_id],
      );
      const by = Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
      return { pending: by.pending ?? 0, delivered: by.delivered ?? 0, dead: by.dead ?? 0 };
    };
    const clearDeliveries = () => db('webhook_deliveries').where({ project_id: creds.project_id }).delete();
    /** Until nothing is pending and the receiver has every queued event (5 minutes at most). */
    const drained = async (queued: number) => {
      const deadline = Date.now() + 300_000;
      for (;;) {
        const c = await counts();
        const s = await receiver.ask<ReceiverStats>('stats');
        if (c.pending === 0 && s.events >= queued - c.dead) return { stats: s, dead: c.dead };
        if (Date.now() > deadline)
          throw new Error(`deliveries did not drain in 5 minutes: ${JSON.stringify(c)}, ${s.events} received`);
        await sleep(50);
      }
    };

    say(
      `webhooks bench: nproc=${NPROC} (${cpus()[0]?.model ?? 'unknown'}), load average ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}, node ${process.version}, ${embedded ? 'embedded PostgreSQL' : 'DATABASE_URL PostgreSQL'}; ` +
        `wrk ${wrkThreads} thread(s), closed loop, ${connections} connections, ${THREADS} threads; modes ${modes.join(', ')}; ` +
        `${rounds} round(s) × ${duration} s per mode (+${warmup} s warm-up per server)`,
    );
    // Warm-up: every server that will take load ingests, every worker delivers.
    if (warmup > 0) {
      await setEndpoint(true);
      if (needDeliverer || modes.includes('without') || modes.includes('outbox')) {
        only(['deliverer']);
        await wrk(base, warmup);
      }
      if (needSame) {
        only(['same']);
        await wrk(`http://127.0.0.1:${ports.same}`, warmup);
      }
      only(['same', 'deliverer']);
      const c = await counts();
      await drained(c.pending + c.delivered + c.dead);
      await clearDeliveries();
    }

    const results: ModeResult[] = [];
    const drains: DrainResult[] = [];
    for (let round = 1; round <= rounds; round++) {
      for (const mode of modes) {
        await setEndpoint(mode !== 'without');
        only(mode === 'same' ? ['same'] : mode === 'separate' ? ['deliverer'] : []);
        await clearDeliveries();
        await receiver.ask('reset');
        const url = `http://127.0.0.1:${mode === 'same' ? ports.same : ports.ingest}`;
        const cpu0 = {
          ingest: cpuOf(mode === 'same' ? 'same' : 'ingest'),
          deliverer: cpuOf('deliverer'),
          receiver: treeCpuSeconds(receiver.child.pid!),
          pg: postgresCpu(),
        };
        const t0 = performance.now();
        const r = await wrk(url, duration);
        const wall = (performance.now() - t0) / 1000;
        const cpu = {
          wrk: r.cpuShare,
          ingest: (cpuOf(mode === 'same' ? 'same' : 'ingest') - cpu0.ingest) / (wall * NPROC),
          deliverer: (cpuOf('deliverer') - cpu0.deliverer) / (wall * NPROC),
          receiver: (treeCpuSeconds(receiver.child.pid!) - cpu0.receiver) / (wall * NPROC),
          postgres: postgresDelta(cpu0.pg, postgresCpu()) / (wall * NPROC),
        };
        const atLoadEnd = await receiver.ask<ReceiverStats>('stats');
        const loadEndAt = performance.timeOrigin + performance.now();
        await sleep(200); // requests in flight at the end commit
        const c = await counts();
        const queued = c.pending + c.delivered + c.dead;
        let delivery: ModeResult['delivery'] = null;
        if (mode === 'same' || mode === 'separate') {
          const { stats: s, dead } = await drained(queued);
          const startAt = performance.timeOrigin + t0;
          delivery = {
            events: s.events,
            posts: s.posts,
            connections: s.connections,
            deliveredDuringLoad: atLoadEnd.events / r.seconds,
            eventsPerSecond: (s.events / (s.lastAt - startAt)) * 1000,
            drainSeconds: Math.max(0, (s.lastAt - loadEndAt) / 1000),
            latencies: s.latencies,
            dead,
          };
        }
        results.push({ mode, load: r, queued, cpu, delivery });
        const rps = r.ok / r.seconds;
        say(
          `round ${round} ${mode.padEnd(8)} ${f0(rps).padStart(6)} appends/s  p50 ${r.latency.p50} ms  p99 ${r.latency.p99} ms  ` +
            `non-2xx ${r.non2xx} errors ${r.errors.connect + r.errors.read + r.errors.write + r.errors.timeout}; ${queued} queued; ` +
            `CPU wrk ${share(cpu.wrk)}, service ${share(cpu.ingest)}${mode === 'separate' ? ` + deliverer ${share(cpu.deliverer)}` : ''}, receiver ${share(cpu.receiver)}, PostgreSQL ${share(cpu.postgres)}`,
        );
        if (delivery)
          say(
            `  delivered ${delivery.events} events in ${delivery.posts} POSTs over ${delivery.connections} new connection(s), ` +
              `${f0(delivery.deliveredDuringLoad)} events/s during the load, ${f0(delivery.eventsPerSecond)} events/s overall, ` +
              `drained ${delivery.drainSeconds.toFixed(1)} s after the load; commit → receiver p50 ${f0(pct(delivery.latencies, 50))} ms ` +
              `p99 ${f0(pct(delivery.latencies, 99))} ms${delivery.dead ? `; ${delivery.dead} DEAD` : ''}`,
          );
        if (mode === 'outbox' && servers.deliverer && queued > 0) {
          // The backlog, delivered by the dedicated deliverer with nothing else running.
          await receiver.ask('reset');
          const d0 = {
            deliverer: cpuOf('deliverer'),
            receiver: treeCpuSeconds(receiver.child.pid!),
            pg: postgresCpu(),
          };
          const s0 = performance.now();
          only(['deliverer']);
          const { stats: s } = await drained(queued);
          const wallD = (performance.now() - s0) / 1000;
          const used = {
            deliverer: cpuOf('deliverer') - d0.deliverer,
            receiver: treeCpuSeconds(receiver.child.pid!) - d0.receiver,
            postgres: postgresDelta(d0.pg, postgresCpu()),
          };
          only([]);
          const drain: DrainResult = {
            events: s.events,
            posts: s.posts,
            connections: s.connections,
            eventsPerSecond: (s.events / Math.max(1, s.lastAt - s.firstAt)) * 1000,
            cpuMsPerEvent: {
              deliverer: (used.deliverer * 1000) / s.events,
              receiver: (used.receiver * 1000) / s.events,
              postgres: (used.postgres * 1000) / s.events,
            },
            cpu: {
              deliverer: used.deliverer / (wallD * NPROC),
              receiver: used.receiver / (wallD * NPROC),
              postgres: used.postgres / (wallD * NPROC),
            },
          };
          drains.push(drain);
          say(
            `  backlog drain (deliverer alone): ${drain.events} events in ${drain.posts} POSTs over ${drain.connections} new connection(s), ` +
              `${f0(drain.eventsPerSecond)} events/s; CPU per event: deliverer ${drain.cpuMsPerEvent.deliverer.toFixed(2)} ms, ` +
              `PostgreSQL ${drain.cpuMsPerEvent.postgres.toFixed(2)} ms, receiver ${drain.cpuMsPerEvent.receiver.toFixed(2)} ms`,
          );
        }
      }
    }

    // Markdown for BENCHMARKS.md.
    const of = (m: Mode) => results.filter((x) => x.mode === m);
    const rpsOf = (m: Mode) => mean(of(m).map((x) => x.load.ok / x.load.seconds));
    const base0 = rpsOf('without');
    say('');
    say(
      `Appends at the spread rate (1 message to a random one of ${THREADS.toLocaleString('en-US')} threads), wrk ${wrkThreads} thread(s), ` +
        `${connections} connections, ${duration} s per mode, ${rounds} round(s), nproc ${NPROC}; CPU as a share of the machine.`,
    );
    say('');
    say(
      '| endpoint | appends/s | vs without | append p50 / p99 | delivered events/s (during load / overall) | drain after load | commit → receiver p50 / p99 | CPU: wrk / service / receiver / PostgreSQL |',
    );
    say('| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |');
    const label: Record<Mode, string> = {
      without: 'none subscribed (endpoint disabled)',
      outbox: 'one subscribed, no delivery running (outbox write only)',
      separate: 'one subscribed, delivered by a second server process',
      same: 'one subscribed, delivered by the ingesting server',
    };
    for (const m of modes) {
      const xs = of(m);
      if (!xs.length) continue;
      const rps = rpsOf(m);
      const d = xs.map((x) => x.delivery).filter((x) => x !== null);
      const lat = d.flatMap((x) => x.latencies);
      const c = (k: keyof ModeResult['cpu']) => mean(xs.map((x) => x.cpu[k]));
      const service = m === 'separate' ? `${share(c('ingest'))} + ${share(c('deliverer'))}` : share(c('ingest'));
      say(
        `| ${label[m]} | ${f0(rps)} | ${m === 'without' || !Number.isFinite(base0) ? '—' : `${(((rps - base0) / base0) * 100).toFixed(1)} %`} | ` +
          `${mean(xs.map((x) => x.load.latency.p50)).toFixed(1)} / ${mean(xs.map((x) => x.load.latency.p99)).toFixed(1)} ms | ` +
          (d.length
            ? `${f0(mean(d.map((x) => x.deliveredDuringLoad)))} / ${f0(mean(d.map((x) => x.eventsPerSecond)))} | ${mean(d.map((x) => x.drainSeconds)).toFixed(1)} s | ${f0(pct(lat, 50))} / ${f0(pct(lat, 99))} ms | `
            : '— | — | — | ') +
          `${share(c('wrk'))} / ${service} / ${share(c('receiver'))} / ${share(c('postgres'))} |`,
      );
    }
    if (drains.length) {
      say('');
      say(
        'Delivery capacity: the outbox backlog of the `outbox` rows, delivered by one server process with no load (one endpoint, one event per POST).',
      );
      say('');
      say(
        '| events | delivered events/s | POSTs / new connections | CPU ms per event: deliverer / PostgreSQL / receiver | CPU: deliverer / PostgreSQL / receiver |',
      );
      say('| ---: | ---: | ---: | ---: | --- |');
      for (const d of drains)
        say(
          `| ${d.events} | ${f0(d.eventsPerSecond)} | ${d.posts} / ${d.connections} | ${d.cpuMsPerEvent.deliverer.toFixed(2)} / ${d.cpuMsPerEvent.postgres.toFixed(2)} / ${d.cpuMsPerEvent.receiver.toFixed(2)} | ` +
            `${share(d.cpu.deliverer)} / ${share(d.cpu.postgres)} / ${share(d.cpu.receiver)} |`,
        );
    }
    say('');
    if (modes.includes('without'))
      for (const m of modes.filter((x) => x !== 'without'))
        say(`append throughput, ${m}: ${(((base0 - rpsOf(m)) / base0) * 100).toFixed(1)} % lower (target ≤ 15 %)`);
    say(
      `load average at the end ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    );
  } finally {
    for (const child of Object.values(servers)) {
      child.kill('SIGCONT'); // a stopped process would not see SIGTERM
      await stopChild(child);
    }
    receiver.child.disconnect();
    await db.destroy();
    await admin(adminUrl, `drop database if exists ${dbName} with (force)`).catch(() => undefined);
    if (embedded) {
      await embedded.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
    if (profileDir) {
      // CPU.<date>.<time>.<pid>.<tid>.<seq>.cpuprofile: one summary per server role.
      const files = readdirSync(profileDir).filter((f) => f.endsWith('.cpuprofile'));
      for (const [role, child] of Object.entries(servers)) {
        const mine = files.filter((f) => f.split('.')[3] === String(child.pid));
        if (mine.length)
          say(
            `\nCPU profile of the ${role} server (${profileDir}):\n${summarizeProfiles(mine.map((f) => path.join(profileDir, f)))}`,
          );
      }
    }
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
