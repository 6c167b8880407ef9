/**
 * `npm run bench:framework`: what the HTTP layer alone sustains on this machine, with no
 * database: a bare node:http server, a bare express app, express + helmet, and our own
 * /healthz (the full middleware chain, no query). Same load shape as `npm run bench`
 * (autocannon, 64 connections, closed loop, load generator on the same machine).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';

const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const root = path.resolve(__dirname, '..');

const servers: Record<string, string> = {
  'node:http': `require('node:http').createServer((q, s) => { s.setHeader('content-type', 'application/json'); s.end('{"status":"ok"}'); }).listen(Number(process.env.PORT), '127.0.0.1', () => console.log('up'));`,
  'express 5': `const e = require('express'); const a = e(); a.get('/healthz', (q, s) => s.json({ status: 'ok' })); a.listen(Number(process.env.PORT), '127.0.0.1', () => console.log('up'));`,
  'express 5 + helmet': `const e = require('express'); const a = e(); a.use(require('helmet')()); a.get('/healthz', (q, s) => s.json({ status: 'ok' })); a.listen(Number(process.env.PORT), '127.0.0.1', () => console.log('up'));`,
};

async function start(name: string, port: number): Promise<ChildProcess> {
  const env = { ...process.env, PORT: String(port) };
  const child =
    name === 'ProgressDB /healthz'
      ? spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
          cwd: root,
          env: { ...env, LOG_LEVEL: 'warn', NODE_ENV: 'production', RATE_LIMIT_ENABLED: 'false' },
          stdio: ['ignore', 'pipe', 'inherit'],
        })
      : spawn(process.execPath, ['-e', servers[name]], { cwd: root, env, stdio: ['ignore', 'pipe', 'inherit'] });
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/healthz`)).ok) return child;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  child.kill('SIGKILL');
  throw new Error(`${name} did not start`);
}

async function measure(name: string, port: number) {
  const child = await start(name, port);
  try {
    await autocannon({ url: `http://127.0.0.1:${port}/healthz`, connections: 64, duration: 2 }); // warm-up
    const r = await autocannon({ url: `http://127.0.0.1:${port}/healthz`, connections: 64, duration: seconds });
    return {
      name,
      rps: Math.round(r.requests.average),
      p50: r.latency.p50,
      p99: r.latency.p99,
      errors: r.errors + r.non2xx,
    };
  } finally {
    child.kill('SIGTERM');
    await once(child, 'exit');
  }
}

async function main() {
  if (!process.env.DATABASE_URL) process.env.DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/postgres';
  const rows = [];
  for (const [i, name] of [...Object.keys(servers), 'ProgressDB /healthz'].entries()) {
    process.stderr.write(`measuring ${name} (${seconds} s)…\n`);
    rows.push(await measure(name, 18400 + i));
  }
  console.log(
    `nproc = ${os.cpus().length}, Node ${process.version}, autocannon 64 connections, ${seconds} s, GET /healthz\n`,
  );
  console.log('| server | req/s | p50 ms | p99 ms | errors |\n| --- | ---: | ---: | ---: | ---: |');
  for (const r of rows)
    console.log(`| ${r.name} | ${r.rps.toLocaleString('en-US')} | ${r.p50} | ${r.p99} | ${r.errors} |`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
