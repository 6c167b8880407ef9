/**
 * Field-level encryption overhead: appends and latest-50 page reads, `body.text` encrypted vs
 * not, in the same run.
 *
 *   npm run bench:encryption -- [--rounds 3] [--duration 8] [--warmup 2] [--connections 32] [--threads 32]
 *
 * One real server process (src/server.ts, embedded KMS) against a fresh database holds two
 * projects: one with `encrypted_fields: ["body.text"]`, one without. Each round loads both at
 * the same time with autocannon (closed loop, half the connections each), so whatever else the
 * machine does hits both alike; the overhead is the throughput the encrypted project loses
 * against the plain one. Appends first, then reads of the newest 50 messages of prefilled
 * threads (each page opens 50 ciphertexts). DATABASE_URL names a PostgreSQL server (a scratch
 * database is created and dropped); without it an embedded PostgreSQL is started.
 */
import { randomBytes } from 'node:crypto';
import { availableParallelism, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { createDb } from '../src/lib/db';
import { scratchDatabase, startServer, type Server } from './common';

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '8' },
    warmup: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '32' },
    threads: { type: 'string', default: '32' },
  },
});
const duration = Number(args.duration);
const warmup = Number(args.warmup);
const rounds = Number(args.rounds);
const connections = Number(args.connections);
const threadCount = Number(args.threads);
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');

type Mode = 'plain' | 'encrypted';
interface Sample {
  rps: number;
  p50: number;
  p99: number;
  bad: number;
}

function run(url: string, key: string, seconds: number, conns: number, kind: 'append' | 'read', prefix: string) {
  let n = 0;
  const body = JSON.stringify({ author: 'bench', body: { text: 'hello from the encryption benchmark', n: 1 } });
  return new Promise<Sample>((resolve, reject) => {
    autocannon(
      {
        url,
        connections: conns,
        duration: seconds,
        requests: [
          {
            method: kind === 'append' ? 'POST' : 'GET',
            setupRequest: (req) => {
              const i = n++ % threadCount;
              return kind === 'append'
                ? {
                    ...req,
                    path: `/v1/threads/${prefix}-w-${i}/messages`,
                    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
                    body,
                  }
                : {
                    ...req,
                    path: `/v1/threads/${prefix}-r-${i}/messages?limit=50`,
                    headers: { authorization: `Bearer ${key}` },
                  };
            },
          },
        ],
      },
      (err, r) =>
        err
          ? reject(err)
          : resolve({ rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, bad: r.non2xx + r.errors }),
    );
  });
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

async function main() {
  const database = await scratchDatabase('enc', [
    { name: 'plain' },
    { name: 'enc', settings: { encrypted_fields: ['body.text'] } },
  ]);
  const databaseUrl = database.url;
  let server: Server | null = null;
  try {
    const keys: Record<Mode, string> = { plain: database.secretKeys[0], encrypted: database.secretKeys[1] };
    server = await startServer(databaseUrl, {
      KMS_MODE: 'embedded',
      KMS_MASTER_KEY: randomBytes(32).toString('base64'),
    });
    const base = server.url;

    // Threads to read: 60 messages each (the newest 50 are one page).
    for (const mode of ['plain', 'encrypted'] as Mode[])
      for (let i = 0; i < threadCount; i++) {
        const r = await fetch(`${base}/v1/threads/${mode}-r-${i}/messages/batch`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${keys[mode]}` },
          body: JSON.stringify({
            messages: Array.from({ length: 60 }, (_, k) => ({
              author: 'bench',
              body: { text: `message ${k} of ${i}` },
            })),
          }),
        });
        if (r.status !== 201) throw new Error(`prefill: ${r.status} ${await r.text()}`);
      }
    // The encrypted project really encrypts: its rows hold ciphertext.
    const check = createDb(databaseUrl, 1);
    const { rows } = await check.raw(
      `select body->>'text' as text from messages m join projects p on p.id = m.project_id where p.name = 'enc' limit 1`,
    );
    await check.destroy();
    if (!String(rows[0]?.text).startsWith('pdbenc:v1:')) throw new Error('the encrypted project stored plaintext');

    process.stdout.write(
      `encryption overhead: nproc=${availableParallelism()}, load average ${load()}, node ${process.version}, ${database.embedded ? 'embedded PostgreSQL' : 'DATABASE_URL PostgreSQL'}\n` +
        `one server, both projects loaded at once (closed loop, ${connections / 2} connections each), ${threadCount} threads, ${rounds} rounds × ${duration} s (+${warmup} s warm-up)\n\n`,
    );
    const lines: string[] = [];
    for (const kind of ['append', 'read'] as const) {
      const results: Record<Mode, Sample[]> = { plain: [], encrypted: [] };
      const both = (seconds: number) =>
        Promise.all(
          (['plain', 'encrypted'] as Mode[]).map((m) => run(base, keys[m], seconds, connections / 2, kind, m)),
        );
      await both(warmup);
      const overheads: number[] = [];
      for (let round = 0; round < rounds; round++) {
        const [plain, encrypted] = await both(duration);
        results.plain.push(plain);
        results.encrypted.push(encrypted);
        overheads.push(((plain.rps - encrypted.rps) / plain.rps) * 100);
        process.stdout.write(
          `${kind} round ${round + 1}: plain ${plain.rps.toFixed(0)} req/s (p50 ${plain.p50} ms, p99 ${plain.p99} ms), encrypted ${encrypted.rps.toFixed(0)} req/s (p50 ${encrypted.p50} ms, p99 ${encrypted.p99} ms), non-2xx+errors ${plain.bad + encrypted.bad}\n`,
        );
      }
      const avg = (m: Mode, f: (s: Sample) => number) => mean(results[m].map(f));
      const sorted = [...overheads].sort((a, b) => a - b);
      const median = sorted[Math.floor(sorted.length / 2)];
      for (const m of ['plain', 'encrypted'] as Mode[])
        lines.push(
          `| ${kind} | ${m} | ${avg(m, (s) => s.rps).toFixed(0)} | ${avg(m, (s) => s.p50).toFixed(1)} | ${avg(m, (s) => s.p99).toFixed(1)} | ${results[m].reduce((a, s) => a + s.bad, 0)} |`,
        );
      lines.push(
        `| ${kind} | **overhead** | median ${median.toFixed(1)} % (rounds ${overheads.map((o) => o.toFixed(1)).join(', ')}) | | | goal ≤ 15 % |`,
      );
    }
    process.stdout.write(
      [
        '',
        '| workload | project | req/s | p50 ms | p99 ms | non-2xx + errors |',
        '| --- | --- | ---: | ---: | ---: | ---: |',
        ...lines,
        '',
        `load average at the end ${load()}`,
        '',
      ].join('\n'),
    );
  } finally {
    await server?.stop();
    await database.drop();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
