/**
 * The framework ceiling: the HTTP stack alone, no database. Bare node:http and a bare express 5
 * app with one route, each a child process of plain `node -e` (no tsx), answering `{"status":"ok"}`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const root = path.resolve(__dirname, '..');

export const BARE_SERVERS: Record<string, string> = {
  'node:http': `require('node:http').createServer((q, s) => { s.setHeader('content-type', 'application/json'); s.end('{"status":"ok"}'); }).listen(Number(process.env.PORT), '127.0.0.1', () => console.log('up'));`,
  'express 5': `const e = require('express'); const a = e(); a.get('/', (q, s) => s.json({ status: 'ok' })); a.get('/healthz', (q, s) => s.json({ status: 'ok' })); a.listen(Number(process.env.PORT), '127.0.0.1', () => console.log('up'));`,
  'express 5 + helmet': `const e = require('express'); const a = e(); a.use(require('helmet')()); a.get('/', (q, s) => s.json({ status: 'ok' })); a.get('/healthz', (q, s) => s.json({ status: 'ok' })); a.listen(Number(process.env.PORT), '127.0.0.1', () => console.log('up'));`,
};

export async function startBare(name: string, port: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['-e', BARE_SERVERS[name]], {
    cwd: root,
    env: { ...process.env, PORT: String(port), NODE_ENV: 'production' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/`)).ok) return child;
    } catch {
      /* not up yet */
    }
    await sleep(100);
  }
  child.kill('SIGKILL');
  throw new Error(`${name} did not start`);
}

export async function stopChild(child: ChildProcess) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(20_000)]);
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}
