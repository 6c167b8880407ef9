/**
 * Webhooks: what the outbox costs the append path, and how fast deliveries flow.
 *
 *   npm run bench:webhooks -- [--rounds 2] [--duration 10] [--warmup 3] [--connections 64]
 *
 * Starts the real service (src/server.ts, one process, NODE_ENV=production, rate limiter off)
 * against a fresh database, and a webhook receiver (HTTP on loopback, answers 204) in this
 * process. Closed-loop appends at the spread rate (one message to a random one of 1,000 threads,
 * as `npm run bench`'s append-spread) alternate between two modes:
 *  - without: the project's endpoint is disabled (the outbox statement runs, finds no endpoint);
 *  - with: one endpoint subscribed to every event, delivered by the same server while it ingests.
 * Where deliveries are sent (--worker): `same` (default: the ingesting server also delivers),
 * `separate` (the ingesting server runs with WEBHOOK_WORKER_ENABLED=false and a second server
 * process on the same database only delivers: the dedicated-delivery-replica layout), `none` (no
 * worker at all: what the outbox INSERT … SELECT alone costs; deliveries are not sent and are
 * cleared between rounds). WEBHOOK_* variables of the environment (e.g. WEBHOOK_CONCURRENCY,
 * WEBHOOK_CLAIM_INTERVAL_MS) reach the servers.
 * Reports append req/s per mode and the difference; for the "with" rounds, delivered events/s
 * (from the first append until the receiver has everything) and commit → receiver latency (from
 * the client seeing the 201 to the receiver getting the POST; both clocks are this process's).
 * DATABASE_URL names a PostgreSQL server (a scratch database is created and dropped on it);
 * without it an embedded PostgreSQL is started.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { availableParallelism, loadavg } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { createDb } from '../src/lib/db';
import { startEmbeddedPostgres } from '../src/lib/embedded-postgres';
import { migrateLatest } from '../src/lib/migrate';
import { withDatabase, adminQuery as admin } from '../src/lib/pg-admin';
import { createKeysStore } from '../src/modules/keys/keys-store';
import { createProjectsService } from '../src/modules/projects/projects-service';
import { createProjectsStore } from '../src/modules/projects/projects-store';
import { createSecretBox, newWebhookSecret, resolveWebhookKey } from '../src/modules/webhooks/webhook-secrets';

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    rounds: { type: 'string', default: '2' },
    connections: { type: 'string', default: '64' },
    worker: { type: 'string', default: 'same' },
  },
});
const worker = args.worker as 'same' | 'separate' | 'none';
if (!['same', 'separate', 'none'].includes(worker)) throw new Error('--worker is same, separate or none');
const duration = Number(args.duration);
const warmup = Number(args.warmup);
const rounds = Number(args.rounds);
const connections = Number(args.connections);
const THREADS = 1000;
const root = path.resolve(__dirname, '..');
const say = (s: string) => process.stdout.write(s + '\n');
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
};

async function startServer(env: Record<string, string>, port: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/server.ts')], {
    cwd: root,
    env: { ...process.env, ...env, PORT: String(port), HOST: '127.0.0.1' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
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

async function main() {
  const dataDir = path.join(root, '.bench-data', `webhooks-${process.pid}`);
  const embedded = process.env.DATABASE_URL
    ? null
    : await startEmbeddedPostgres(dataDir, 30000 + Math.floor(Math.random() * 20000));
  const adminUrl = process.env.DATABASE_URL ?? embedded!.url;
  const dbName = `pdb_bench_wh_${randomBytes(4).toString('hex')}`;
  await admin(adminUrl, `create database ${dbName}`);
  const databaseUrl = withDatabase(adminUrl, dbName);
  const db = createDb(databaseUrl, 4);
  let server: ChildProcess | null = null;
  let deliverer: ChildProcess | null = null;

  // The receiver: records when each (thread, seq) arrived.
  const arrived = new Map<string, number>();
  let received = 0;
  const receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const at = performance.now();
      const { data } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
        data: { thread_id: string; seq: number };
      };
      const k = `${data.thread_id}#${data.seq}`;
      if (!arrived.has(k)) arrived.set(k, at);
      received++;
      res.writeHead(204).end();
    });
  });
  receiver.keepAliveTimeout = 30_000;
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', () => r()));
  const receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;

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
      url: receiverUrl,
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
      WEBHOOK_SECRET_KEY: webhookKey,
      WEBHOOK_ALLOW_HTTP: 'true',
      WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true',
    };
    server = await startServer({ ...serverEnv, WEBHOOK_WORKER_ENABLED: String(worker === 'same') }, port);
    if (worker === 'separate')
      deliverer = await startServer({ ...serverEnv, WEBHOOK_WORKER_ENABLED: 'true' }, port + 1);
    const base = `http://127.0.0.1:${port}`;
    // Threads exist first (as in npm run bench), so every append takes the merged fast path.
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

    const acked = new Map<string, number>();
    const load = (seconds: number, record: boolean) =>
      new Promise<{ rps: number; p50: number; p99: number; non2xx: number; errors: number }>((resolve, reject) => {
        const body = JSON.stringify({ body: { text: 'hello from the webhooks benchmark' } });
        autocannon(
          {
            url: base,
            connections,
            duration: seconds,
            requests: [
              {
                method: 'POST',
                setupRequest: (req) => ({
                  ...req,
                  path: `/v1/threads/t${Math.floor(Math.random() * THREADS)}/messages`,
                  headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'x-user-id': 'u' },
                  body,
                }),
                onResponse: (status, resBody) => {
                  if (!record || status !== 201) return;
                  const m = JSON.parse(resBody) as { thread_id: string; seq: number };
                  acked.set(`${m.thread_id}#${m.seq}`, performance.now());
                },
              },
            ],
          },
          (err, r) =>
            err
              ? reject(err)
              : resolve({
                  rps: r.requests.average,
                  p50: r.latency.p50,
                  p99: r.latency.p99,
                  non2xx: r.non2xx,
                  errors: r.errors,
                }),
        );
      });
    const setEndpoint = (enabled: boolean) =>
      db('webhook_endpoints').where({ project_id: creds.project_id, id: 'we_bench' }).update({ enabled });
    const pending = async () =>
      Number(
        (await db('webhook_deliveries').where({ project_id: creds.project_id, status: 'pending' }).count('* as n'))[0]
          .n,
      );

    say(
      `webhooks bench: nproc=${availableParallelism()}, load average ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}, node ${process.version}, ${embedded ? 'embedded PostgreSQL' : 'DATABASE_URL PostgreSQL'}, ` +
        `closed loop, ${connections} connections, ${THREADS} threads, ${rounds} rounds × ${duration} s per mode (+${warmup} s warm-up), worker: ${worker}`,
    );
    await load(warmup, false);
    const rps = { without: [] as number[], with: [] as number[] };
    const latencies: number[] = [];
    const deliveredRates: number[] = [];
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? (['without', 'with'] as const) : (['with', 'without'] as const);
      for (const mode of order) {
        await setEndpoint(mode === 'with');
        acked.clear();
        arrived.clear();
        received = 0;
        const t0 = performance.now();
        const r = await load(duration, mode === 'with');
        rps[mode].push(r.rps);
        let extra = '';
        if (mode === 'with' && worker === 'none') {
          const queued = await pending();
          await db('webhook_deliveries').where({ project_id: creds.project_id }).delete();
          extra = `  ${queued} deliveries queued (not sent: --worker none), cleared`;
        } else if (mode === 'with') {
          // Until the receiver has every acknowledged event (and the queue is empty).
          const deadline = Date.now() + 300_000;
          while ([...acked.keys()].some((k) => !arrived.has(k)) || (await pending()) > 0) {
            if (Date.now() > deadline) throw new Error('deliveries did not drain within 5 minutes');
            await sleep(50);
          }
          const last = Math.max(...arrived.values());
          const rate = (arrived.size / (last - t0)) * 1000;
          deliveredRates.push(rate);
          const lat = [...acked.entries()].map(([k, at]) => arrived.get(k)! - at);
          latencies.push(...lat);
          extra = `  delivered ${arrived.size} events (${received} POSTs) at ${rate.toFixed(0)} events/s, drained ${((last - t0) / 1000 - duration).toFixed(1)} s after the load; commit → receiver p50 ${pct(lat, 50).toFixed(0)} ms p99 ${pct(lat, 99).toFixed(0)} ms`;
        }
        say(
          `round ${round + 1} ${mode.padEnd(7)} endpoint  ${r.rps.toFixed(0).padStart(6)} appends/s  p50 ${r.p50} ms  p99 ${r.p99} ms  non-2xx ${r.non2xx} errors ${r.errors}${extra}`,
        );
      }
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const diff = ((mean(rps.without) - mean(rps.with)) / mean(rps.without)) * 100;
    say('');
    say('| endpoint | appends/s (mean of rounds) |');
    say('| --- | ---: |');
    say(`| none subscribed | ${mean(rps.without).toFixed(0)} |`);
    say(`| one subscribed (delivering meanwhile) | ${mean(rps.with).toFixed(0)} |`);
    say('');
    say(`append throughput with one endpoint: ${diff.toFixed(1)}% lower (target ≤ 15%)`);
    if (worker !== 'none')
      say(
        `delivered: ${mean(deliveredRates).toFixed(0)} events/s (mean of rounds); commit → receiver p50 ${pct(latencies, 50).toFixed(0)} ms, p99 ${pct(latencies, 99).toFixed(0)} ms over ${latencies.length} events`,
      );
    say(
      `load average at the end ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    );
  } finally {
    for (const child of [server, deliverer]) {
      if (!child || child.exitCode !== null) continue;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(15_000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    receiver.closeAllConnections();
    receiver.close();
    await db.destroy();
    await admin(adminUrl, `drop database if exists ${dbName} with (force)`).catch(() => undefined);
    if (embedded) {
      await embedded.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
