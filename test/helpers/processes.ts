/**
 * Real server processes for fault tests: a replica must be a process of its own so that
 * `kill -9` means what it means in production (no flush, no goodbye, sockets torn down).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import path from 'node:path';

export const repoRoot = path.resolve(__dirname, '../..');

/** A port nobody listens on right now (the OS picks it; we release it immediately). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export interface Replica {
  name: string;
  url: string;
  port: number;
  child: ChildProcess;
  /** Everything the process wrote (bounded), for failure messages. */
  output(): string;
  /** Resolves with the exit code/signal once the process is gone. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly alive: boolean;
  kill9(): Promise<void>;
  stop(): Promise<void>;
}

const MAX_OUTPUT = 64 * 1024;

/** Spawns `node --import tsx src/server.ts` on a free loopback port and waits for /readyz. */
export async function spawnReplica(
  name: string,
  env: Record<string, string>,
  readyTimeoutMs = 60_000,
): Promise<Replica> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: repoRoot,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      NODE_ENV: 'test',
      HOST: '127.0.0.1',
      PORT: String(port),
      LOG_LEVEL: 'warn',
      SEED_DEV_PROJECT: 'false',
      DB_POOL_MAX: '10',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const collect = (chunk: Buffer) => {
    out += chunk.toString('utf8');
    if (out.length > MAX_OUTPUT) out = out.slice(-MAX_OUTPUT);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  let alive = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      alive = false;
      resolve({ code, signal });
    }),
  );
  const url = `http://127.0.0.1:${port}`;
  const replica: Replica = {
    name,
    url,
    port,
    child,
    exited,
    output: () => out,
    get alive() {
      return alive;
    },
    async kill9() {
      if (!alive) return;
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (!alive) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    if (!alive) throw new Error(`replica ${name} exited before it was ready:\n${out}`);
    try {
      const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2_000) });
      if (res.status === 200) return replica;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      await replica.kill9();
      throw new Error(`replica ${name} not ready within ${readyTimeoutMs} ms:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Runs the operator CLI (`src/cli.ts`) and parses its --json output. */
export async function runCli<T = unknown>(args: string[], env: Record<string, string>): Promise<T> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  if (code !== 0) throw new Error(`cli ${args.join(' ')} exited ${code}: ${stderr}`);
  return JSON.parse(stdout.trim().split('\n').pop()!) as T;
}

export interface KmsProcess {
  url: string;
  child: ChildProcess;
  output(): string;
  kill9(): Promise<void>;
}

/** The external KMS (`src/kms.ts`) as its own process, on `port`, keeping its state in `dataDir`. */
export async function spawnKms(opts: { port: number; dataDir: string; callers: string }): Promise<KmsProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/kms.ts'], {
    cwd: repoRoot,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      LOG_LEVEL: 'warn',
      KMS_HOST: '127.0.0.1',
      KMS_PORT: String(opts.port),
      KMS_DATA_DIR: opts.dataDir,
      KMS_CALLERS: opts.callers,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${opts.port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`KMS exited before it was ready:\n${out}`);
    try {
      if ((await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1_000) })).ok) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`KMS not ready:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    child,
    output: () => out,
    async kill9() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}
