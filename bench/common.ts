/**
 * Shared plumbing for the benchmarks that start the real service: a scratch database with its
 * projects, server child processes, an inspector session to them, WebSocket clients.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { createDb } from '../src/lib/db';
import { startEmbeddedPostgres } from '../src/lib/embedded-postgres';
import { migrateLatest } from '../src/lib/migrate';
import { createKeysStore } from '../src/modules/keys/keys-store';
import {
  createProjectsService,
  type ProjectCredentials,
  type ProjectsService,
} from '../src/modules/projects/projects-service';
import { createProjectsStore } from '../src/modules/projects/projects-store';
import { adminQuery as admin, withDatabase } from '../src/lib/pg-admin';

export const root = path.resolve(__dirname, '..');

/** A project a scratch database starts with. */
export type BenchProject = Parameters<ProjectsService['createProject']>[0];

/**
 * A migrated scratch database with its projects (by default one, "bench <name>"): on
 * DATABASE_URL's server (created and dropped), or on an embedded PostgreSQL started for the run.
 * `projects[i]` and `secretKeys[i]` belong to `projects[i]`; `secretKey` is the first one's.
 */
export async function scratchDatabase(name: string, projects: BenchProject[] = [{ name: `bench ${name}` }]) {
  const dataDir = path.join(root, '.test-data', `bench-${name}-${process.pid}`);
  const embedded = process.env.DATABASE_URL
    ? null
    : await startEmbeddedPostgres(dataDir, 30000 + Math.floor(Math.random() * 20000));
  const adminUrl = process.env.DATABASE_URL ?? embedded!.url;
  const dbName = `pdb_bench_${name.replace(/\W/g, '_')}_${randomBytes(3).toString('hex')}`;
  await admin(adminUrl, `create database ${dbName}`);
  const url = withDatabase(adminUrl, dbName);
  const db = createDb(url, 2);
  const created: ProjectCredentials[] = [];
  try {
    await migrateLatest(db);
    const service = createProjectsService({
      db,
      projectsStore: createProjectsStore(),
      keysStore: createKeysStore(),
      signingSecretGraceSeconds: 0,
    });
    for (const p of projects) created.push(await service.createProject(p));
  } finally {
    await db.destroy();
  }
  return {
    url,
    projects: created,
    secretKeys: created.map((c) => c.keys.secret),
    secretKey: created[0]?.keys.secret,
    embedded: Boolean(embedded),
    async drop() {
      await admin(
        adminUrl,
        `select pg_terminate_backend(pid) from pg_stat_activity where datname = '${dbName}' and pid <> pg_backend_pid()`,
      ).catch(() => undefined);
      await admin(adminUrl, `drop database if exists ${dbName}`).catch(() => undefined);
      if (embedded) {
        await embedded.stop();
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
  };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export interface Server {
  url: string;
  child: ChildProcess;
  /** The child's inspector port, when started with `inspect: true` (see `inspector`). */
  inspectorPort?: number;
  stop(): Promise<void>;
}

/** The V8 flags `npm start` and the Dockerfile run the service with (docs/OPERATIONS.md). */
export const SERVICE_NODE_FLAGS = ['--max-semi-space-size=64'];

/** src/server.ts as a child process (one node process, so /proc figures are the server's own). */
export async function startServer(
  databaseUrl: string,
  env: Record<string, string> = {},
  options: { inspect?: boolean } = {},
): Promise<Server> {
  const port = await freePort();
  const inspectorPort = options.inspect ? await freePort() : undefined;
  const inspect = inspectorPort ? [`--inspect=127.0.0.1:${inspectorPort}`, '--inspect-publish-uid=http'] : [];
  const child = spawn(
    process.execPath,
    [...SERVICE_NODE_FLAGS, ...inspect, '--import', 'tsx', path.join(root, 'src/server.ts')],
    {
      cwd: root,
      env: {
        ...process.env,
        NODE_ENV: 'production',
        DATABASE_URL: databaseUrl,
        PORT: String(port),
        HOST: '127.0.0.1',
        LOG_LEVEL: 'warn',
        SEED_DEV_PROJECT: 'false',
        RATE_LIMIT_ENABLED: 'false',
        // Subscribers share a few users and one key: lift the per-user connection cap (default 20).
        REALTIME_MAX_CONNECTIONS_PER_USER: '1000000',
        ...env,
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    try {
      if ((await fetch(`${url}/readyz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error('server did not become ready in 60 s');
    await sleep(200);
  }
  return {
    url,
    child,
    inspectorPort,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(15_000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

/** Resident set size of a process in bytes, from /proc (Linux). */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

export async function request(base: string, key: string, method: string, p: string, body?: unknown) {
  const r = await fetch(base + p, {
    method,
    headers: {
      authorization: `Bearer ${key}`,
      'x-user-id': 'bench',
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  if (r.status >= 300) throw new Error(`${method} ${p}: ${r.status} ${text}`);
  return JSON.parse(text || 'null');
}

/** Opens a socket, subscribes to one thread (live only) and resolves once it is ready. */
export function subscribedSocket(
  base: string,
  key: string,
  threadId: string,
  onMessage?: (data: string) => void,
): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/v1/ws`, {
      headers: { authorization: `Bearer ${key}` },
      perMessageDeflate: false,
    });
    const timer = setTimeout(() => reject(new Error('subscribe timed out')), 60_000);
    ws.once('error', reject);
    ws.once('open', () => ws.send(JSON.stringify({ type: 'subscribe', thread_id: threadId })));
    ws.on('message', (raw) => {
      const data = raw.toString();
      if (data.startsWith('{"type":"ready"')) {
        clearTimeout(timer);
        resolve(ws);
      }
      onMessage?.(data);
    });
  });
}

export function percentile(sorted: number[], p: number) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/**
 * A DevTools-protocol session to a server started with `inspect: true` (bench-only: the inspector
 * listens on loopback in the benchmark's child process; nothing is added to the server itself).
 */
export async function inspector(server: Server) {
  if (!server.inspectorPort) throw new Error('start the server with { inspect: true }');
  const [target] = (await (await fetch(`http://127.0.0.1:${server.inspectorPort}/json/list`)).json()) as {
    webSocketDebuggerUrl: string;
  }[];
  const ws = new WebSocket(target.webSocketDebuggerUrl, { perMessageDeflate: false, maxPayload: 0 });
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  let ids = 0;
  const pending = new Map<number, (r: { result?: unknown; error?: unknown }) => void>();
  const events = new Map<string, (params: Record<string, unknown>) => void>();
  ws.on('message', (raw) => {
    const m = JSON.parse(raw.toString()) as { id?: number; method?: string; params?: Record<string, unknown> };
    if (m.id !== undefined) pending.get(m.id)?.(m as { result?: unknown; error?: unknown });
    else if (m.method) events.get(m.method)?.(m.params ?? {});
  });
  const call = (method: string, params: object = {}) =>
    new Promise<unknown>((resolve, reject) => {
      const id = ++ids;
      pending.set(id, (r) => {
        pending.delete(id);
        if (r.error) reject(new Error(`${method}: ${JSON.stringify(r.error)}`));
        else resolve(r.result);
      });
      ws.send(JSON.stringify({ id, method, params }));
    });
  return {
    /** Forces full collections (twice: finalizers of the first may free more). */
    async gc() {
      await call('HeapProfiler.collectGarbage');
      await call('HeapProfiler.collectGarbage');
    },
    /** process.memoryUsage() of the server. */
    async memoryUsage() {
      const r = (await call('Runtime.evaluate', { expression: 'process.memoryUsage()', returnByValue: true })) as {
        result: { value: NodeJS.MemoryUsage };
      };
      return r.result.value;
    },
    /** A heap snapshot (.heapsnapshot JSON text). */
    async heapSnapshot() {
      const chunks: string[] = [];
      events.set('HeapProfiler.addHeapSnapshotChunk', (p) => chunks.push(p.chunk as string));
      await call('HeapProfiler.takeHeapSnapshot', { reportProgress: false });
      events.delete('HeapProfiler.addHeapSnapshotChunk');
      return chunks.join('');
    },
    close: () => ws.close(),
  };
}
