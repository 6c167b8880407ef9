/**
 * `npm run bench:framework`: what the HTTP layer alone sustains on this machine, with no
 * database: bare node:http, bare express 5, express 5 + helmet, and our own /healthz (the full
 * middleware chain, no query). Same load shape as `npm run bench` (wrk, BENCH_CONNECTIONS=64,
 * BENCH_DURATION=10s, closed loop, load generator on the same machine); `npm run bench` measures
 * node:http and express 5 itself, in the same run as its scenarios.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BARE_SERVERS, startBare, stopChild } from './framework-servers';
import { findWrk, runWrk, WRK_INSTALL_HINT } from './wrk';

const seconds = Math.max(1, Number.parseFloat(process.env.BENCH_DURATION ?? process.env.BENCH_SECONDS ?? '10'));
const connections = Number(process.env.BENCH_CONNECTIONS ?? 64);
const threads = Number(process.env.BENCH_WRK_THREADS ?? Math.max(1, Math.floor(availableParallelism() / 2)));
const root = path.resolve(__dirname, '..');

async function startOurs(port: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: root,
    env: {
      ...process.env,
      PORT: String(port),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
      NODE_ENV: 'production',
      RATE_LIMIT_ENABLED: 'false',
      SEED_DEV_PROJECT: 'false',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  for (let i = 0; i < 150; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/healthz`)).ok) return child;
    } catch {
      /* not up yet */
    }
    await sleep(200);
  }
  child.kill('SIGKILL');
  throw new Error('ProgressDB did not start');
}

async function main() {
  if (!findWrk()) throw new Error(WRK_INSTALL_HINT);
  if (!process.env.DATABASE_URL) process.env.DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/postgres';
  const rows = [];
  for (const [i, name] of [...Object.keys(BARE_SERVERS), 'ProgressDB /healthz'].entries()) {
    const port = 18400 + i;
    process.stderr.write(`measuring ${name} (${seconds} s)…\n`);
    const child = name === 'ProgressDB /healthz' ? await startOurs(port) : await startBare(name, port);
    try {
      const shape = { url: `http://127.0.0.1:${port}`, connections, threads };
      const load = { method: 'GET' as const, targets: [{ path: '/healthz', headers: {} }] };
      await runWrk({ ...shape, seconds: 2, load }); // warm-up
      const r = await runWrk({ ...shape, seconds, load });
      rows.push({
        name,
        rps: Math.round(r.ok / r.seconds),
        p50: r.latency.p50,
        p99: r.latency.p99,
        errors: r.requests - r.ok,
        lg: r.cpuShare,
      });
    } finally {
      await stopChild(child);
    }
  }
  console.log(
    `nproc = ${availableParallelism()}, Node ${process.version}, wrk ${threads} thread(s), ${connections} connections, ${seconds} s, GET /healthz\n`,
  );
  console.log('| server | req/s | p50 ms | p99 ms | errors | wrk CPU |\n| --- | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows)
    console.log(
      `| ${r.name} | ${r.rps.toLocaleString('en-US')} | ${r.p50} | ${r.p99} | ${r.errors} | ${(r.lg * 100).toFixed(0)} % |`,
    );
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
