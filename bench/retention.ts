/**
 * `npm run bench:retention`: purge 1,000,000 messages while the append-spread and read-latest-50
 * scenarios run, against the same load without a purge.
 *
 * Seeds (SQL insert … select, not HTTP) RETENTION_BENCH_THREADS threads holding
 * RETENTION_BENCH_MESSAGES messages dated 60 days ago and 1,000 live threads of 50 recent
 * messages, in one project whose policy keeps 30 days. The seed writes what the append path would:
 * per thread a thread.created event at seq 1 and one message.created event plus its messages row
 * per message at seq 2, 3, … with `threads.last_seq` at the last one (no gaps, so the purge's
 * prefix rule and the horizon hold); it goes in statements of RETENTION_BENCH_SEED_BATCH messages
 * (whole threads, one transaction each, synchronous_commit off), printing its rate, so 1,000,000
 * messages seed in about a minute on a quiet machine. The append-only triggers fire on UPDATE and
 * DELETE only; the seed only inserts. Then, on the real service (src/server.ts as a child process):
 *   1. baseline: append-spread (1 message to a random live thread) and read-latest-50 (newest
 *      page of a random live thread) together, BENCH_SECONDS;
 *   2. purge: POST /v1/admin/retention/run, with the same load running until the purge returns.
 * Reports the purge rate (rows/s) and each scenario's throughput and p99 in both phases, and
 * checks the purge removed exactly the old rows.
 *
 * Environment: DATABASE_URL (a scratch database is created on that server and dropped; default:
 * an embedded PostgreSQL), BENCH_SECONDS=20, BENCH_CONNECTIONS=32 (per scenario),
 * RETENTION_BENCH_MESSAGES=1000000 (old name BENCH_PURGE_MESSAGES still read),
 * RETENTION_BENCH_THREADS=100, RETENTION_BENCH_SEED_BATCH=100000, RETENTION_BATCH_SIZE (the
 * server's purge batch, default 1000). A smoke run: RETENTION_BENCH_MESSAGES=20000 BENCH_SECONDS=3
 * (bench/results/retention.* are rewritten only by runs of 1,000,000 messages or more, or with
 * RETENTION_BENCH_WRITE_RESULTS=true).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';
import pg from 'pg';
import { root, scratchDatabase, startServer } from './common';

const env = process.env;
const SECONDS = Number(env.BENCH_SECONDS ?? 20);
const CONNECTIONS = Number(env.BENCH_CONNECTIONS ?? 32);
const PURGE_MESSAGES = Number(env.RETENTION_BENCH_MESSAGES ?? env.BENCH_PURGE_MESSAGES ?? 1_000_000);
const PURGE_THREADS = Number(env.RETENTION_BENCH_THREADS ?? 100);
const SEED_BATCH = Number(env.RETENTION_BENCH_SEED_BATCH ?? 100_000);
for (const [name, v] of Object.entries({ PURGE_MESSAGES, PURGE_THREADS, SEED_BATCH }))
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer (got ${v})`);
const LIVE_THREADS = 1_000;
const started = Date.now();
const log = (msg: string) =>
  process.stdout.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${msg}\n`);
const rnd = (n: number) => Math.floor(Math.random() * n);
const live = (i: number) => `live-${String(i).padStart(6, '0')}`;

interface Phase {
  seconds: number;
  append: { rps: number; p50: number; p99: number; errors: number };
  read: { rps: number; p50: number; p99: number; errors: number };
}

/** Runs append-spread and read-latest-50 side by side until `until` resolves (or for `seconds`). */
async function load(base: string, key: string, seconds: number, until?: Promise<unknown>): Promise<Phase> {
  const t0 = Date.now();
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'x-user-id': 'bench' };
  const run = (setup: (req: autocannon.Request) => autocannon.Request) => {
    let instance: autocannon.Instance | undefined;
    const done = new Promise<autocannon.Result>((resolve, reject) => {
      instance = autocannon(
        {
          url: base,
          connections: CONNECTIONS,
          duration: until ? 3_600 : seconds,
          timeout: 10,
          requests: [{ setupRequest: setup }],
        },
        (err, result) => (err ? reject(err) : resolve(result)),
      );
    });
    return { done, stop: () => instance?.stop() };
  };
  const append = run((req) => ({
    ...req,
    method: 'POST',
    path: `/v1/threads/${live(rnd(LIVE_THREADS))}/messages`,
    headers,
    body: JSON.stringify({ body: { text: `hello ${rnd(1e9)}` } }),
  }));
  const read = run((req) => ({
    ...req,
    method: 'GET',
    path: `/v1/threads/${live(rnd(LIVE_THREADS))}/messages?limit=50`,
    headers: { authorization: headers.authorization, 'x-user-id': 'bench' },
    body: undefined,
  }));
  if (until) {
    await until;
    append.stop();
    read.stop();
  }
  const [a, r] = await Promise.all([append.done, read.done]);
  if (env.BENCH_DEBUG)
    process.stdout.write(JSON.stringify({ append: a.statusCodeStats, read: r.statusCodeStats, rr: r.requests }) + '\n');
  const elapsed = (Date.now() - t0) / 1000;
  const summary = (x: autocannon.Result) => ({
    rps: (x.requests.total - x.non2xx - x.errors) / elapsed,
    p50: x.latency.p50,
    p99: x.latency.p99,
    errors: x.non2xx + x.errors,
  });
  return { seconds: elapsed, append: summary(a), read: summary(r) };
}

async function main() {
  const database = await scratchDatabase('retention');
  const { url, embedded } = database;
  const db = new pg.Client({ connectionString: url });
  let server: Awaited<ReturnType<typeof startServer>> | null = null;
  try {
    const [creds] = database.projects;
    const p = creds.project_id;
    await db.connect();
    await db.query(`update projects set settings = '{"retention_days": 30}'::jsonb where id = $1`, [p]);

    const perThread = Math.ceil(PURGE_MESSAGES / PURGE_THREADS);
    await db.query('set synchronous_commit = off');
    /** Threads first..first+count-1 of `prefix`, each with `messages` messages from `start`, 1 ms apart. */
    const seedThreads = async (prefix: string, first: number, count: number, messages: number, start: string) => {
      const name = `$2 || lpad((${first} + t)::text, 6, '0')`;
      await db.query('begin');
      try {
        await db.query(
          `insert into threads (project_id, id, type, created_at, updated_at, last_seq, last_activity_at)
           select $1, ${name}, 'channel', $4::timestamptz, $4::timestamptz, $3 + 1,
                  $4::timestamptz + $3 * interval '1 millisecond'
             from generate_series(0, $5 - 1) t`,
          [p, prefix, messages, start, count],
        );
        await db.query(
          `insert into events (project_id, thread_id, seq, type, actor, data, created_at)
           select $1, ${name}, 1, 'thread.created', null,
                  jsonb_build_object('id', ${name}, 'type', 'channel'), $3::timestamptz
             from generate_series(0, $4 - 1) t`,
          [p, prefix, start, count],
        );
        await db.query(
          `with g as (
             select ${name} as thread_id, i, 'm' || i as id,
                    $3::timestamptz + i * interval '1 millisecond' as at
               from generate_series(0, $4 - 1) t, generate_series(1, $5) i
           ), e as (
             insert into events (project_id, thread_id, seq, type, message_id, actor, data, created_at)
             select $1, thread_id, i + 1, 'message.created', id, 'seed',
                    jsonb_build_object('id', id, 'author', 'seed', 'body', jsonb_build_object('text', 'old message ' || i), 'version', 1), at
               from g
           )
           insert into messages (project_id, thread_id, seq, id, author, body, version, version_seqs, created_at)
           select $1, thread_id, i + 1, id, 'seed', jsonb_build_object('text', 'old message ' || i), 1, array[i + 1]::bigint[], at
             from g`,
          [p, prefix, start, count, messages],
        );
        await db.query('commit');
      } catch (err) {
        await db.query('rollback');
        throw err;
      }
    };
    /** `threads` threads of `messages` each, in statements of about SEED_BATCH messages (whole threads). */
    const seed = async (prefix: string, threads: number, messages: number, start: string) => {
      const step = Math.max(1, Math.floor(SEED_BATCH / messages));
      const t0 = Date.now();
      for (let first = 0; first < threads; first += step) {
        const count = Math.min(step, threads - first);
        await seedThreads(prefix, first, count, messages, start);
        const done = (first + count) * messages;
        if (threads > step)
          log(
            `  ${prefix}: ${done.toLocaleString('en-US')} / ${(threads * messages).toLocaleString('en-US')} messages, ${Math.round(done / Math.max(0.001, (Date.now() - t0) / 1000)).toLocaleString('en-US')}/s`,
          );
      }
      return (Date.now() - t0) / 1000;
    };
    log(
      `seeding ${PURGE_THREADS} threads × ${perThread} messages dated 60 days ago (SQL insert … select, ${SEED_BATCH.toLocaleString('en-US')} messages per statement)`,
    );
    const seedSeconds = await seed(
      'old-',
      PURGE_THREADS,
      perThread,
      new Date(Date.now() - 60 * 86_400_000).toISOString(),
    );
    log(
      `seeded ${(PURGE_THREADS * perThread).toLocaleString('en-US')} old messages in ${seedSeconds.toFixed(1)} s (${Math.round((PURGE_THREADS * perThread) / seedSeconds).toLocaleString('en-US')} messages/s)`,
    );
    log(`seeding ${LIVE_THREADS} live threads × 50 recent messages`);
    await seed('live-', LIVE_THREADS, 50, new Date().toISOString());
    await db.query('vacuum analyze events');
    await db.query('vacuum analyze messages');

    // Rate limits off like every other bench: the load is far above a project's default limits.
    server = await startServer(url, { RETENTION_ENABLED: 'false', RATE_LIMIT_ENABLED: 'false', DB_POOL_MAX: '20' });
    const base = server.url;
    const before = loadavg();
    log(`nproc ${availableParallelism()}, load average ${before.map((x) => x.toFixed(2)).join(' ')}`);

    log('warm-up: 3 s');
    await load(base, creds.keys.secret, 3);
    log(`baseline: append-spread + read-latest-50, ${CONNECTIONS} connections each, ${SECONDS} s`);
    const baseline = await load(base, creds.keys.secret, SECONDS);

    log(`purge: POST /v1/admin/retention/run with the same load running until it returns`);
    const t0 = Date.now();
    const purge = fetch(`${base}/v1/admin/retention/run`, {
      method: 'POST',
      headers: { authorization: `Bearer ${creds.keys.admin}`, 'content-type': 'application/json' },
      body: '{}',
      signal: AbortSignal.timeout(3_600_000),
    }).then(async (r) => {
      const body = (await r.json()) as { totals: { events: number; messages: number; threads: number } };
      if (r.status !== 200) throw new Error(`retention run: ${r.status} ${JSON.stringify(body)}`);
      return { ...body, seconds: (Date.now() - t0) / 1000 };
    });
    const during = await load(base, creds.keys.secret, SECONDS, purge);
    const purged = await purge;
    const after = loadavg();

    // The purge removed exactly the old threads' logs and nothing of the live ones.
    const left = (
      await db.query(
        `select (select count(*) from events where project_id = $1 and thread_id like 'old-%')::int as old_events,
                (select count(*) from messages where project_id = $1 and thread_id like 'old-%')::int as old_messages,
                (select min(seq) from events where project_id = $1 and thread_id like 'live-%')::int as live_min_seq,
                (select count(*) from retention_audit where project_id = $1)::int as audit_rows`,
        [p],
      )
    ).rows[0] as { old_events: number; old_messages: number; live_min_seq: number; audit_rows: number };
    const ok =
      left.old_events === 0 &&
      left.old_messages === 0 &&
      left.live_min_seq === 1 &&
      purged.totals.messages === perThread * PURGE_THREADS;

    const pct = (a: number, b: number) => `${(((a - b) / b) * 100).toFixed(1)} %`;
    const row = (name: string, b: Phase['append'], d: Phase['append']) =>
      `| ${name} | ${b.rps.toFixed(0)} | ${d.rps.toFixed(0)} | ${pct(d.rps, b.rps)} | ${b.p99} | ${d.p99} | ${(d.p99 / Math.max(1, b.p99)).toFixed(2)}× | ${b.errors + d.errors} |`;
    const md = [
      `Purge: ${purged.totals.messages.toLocaleString('en-US')} messages (${purged.totals.events.toLocaleString('en-US')} events, ${purged.totals.threads} threads, ${left.audit_rows} audited batches) in ${purged.seconds.toFixed(1)} s = **${Math.round(purged.totals.events / purged.seconds).toLocaleString('en-US')} events/s** (${Math.round(purged.totals.messages / purged.seconds).toLocaleString('en-US')} messages/s; ${Math.round((purged.totals.events + purged.totals.messages) / purged.seconds).toLocaleString('en-US')} rows/s of events + messages). Check: ${ok ? 'old threads empty, live threads untouched' : `FAILED ${JSON.stringify(left)}`}.`,
      '',
      `| scenario (${CONNECTIONS} connections each, together) | req/s without purge | req/s during purge | change | p99 ms without | p99 ms during | p99 ratio | errors |`,
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      row('append-spread', baseline.append, during.append),
      row('read-latest-50', baseline.read, during.read),
      '',
      `Baseline ${baseline.seconds.toFixed(0)} s; during purge ${during.seconds.toFixed(0)} s. nproc ${availableParallelism()}; load average before ${before.map((x) => x.toFixed(2)).join(' ')}, after ${after.map((x) => x.toFixed(2)).join(' ')}; database ${embedded ? 'embedded PostgreSQL 18' : 'DATABASE_URL'}.`,
    ].join('\n');
    process.stdout.write('\n' + md + '\n');
    // Only a run of the evidence's size replaces the recorded results (a smoke run does not).
    if (PURGE_MESSAGES >= 1_000_000 || env.RETENTION_BENCH_WRITE_RESULTS === 'true') {
      const dir = path.join(root, 'bench', 'results');
      mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, 'retention.md'), md + '\n');
      writeFileSync(
        path.join(dir, 'retention.json'),
        JSON.stringify({ purged, baseline, during, left, nproc: availableParallelism(), before, after }, null, 2) +
          '\n',
      );
    } else log('results not written to bench/results (fewer than 1,000,000 messages: a smoke run)');
    if (!ok) process.exitCode = 1;
  } finally {
    await server?.stop();
    await db.end().catch(() => undefined);
    await database.drop();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
