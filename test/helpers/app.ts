import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { createApp, type App } from '../../src/app';
import { loadConfig, type Config } from '../../src/config';
import { createDb } from '../../src/lib/db';
import { createLogger } from '../../src/lib/logger';
import type { ProjectCredentials } from '../../src/modules/projects/projects-service';
import { createTestDatabase } from './db';
import type { Knex } from 'knex';

export interface TestInstance {
  url: string;
  app: App;
  db: Knex;
  config: Config;
  server: Server;
  close(): Promise<void>;
}

/** The real app, in-process, listening on a loopback port, against `databaseUrl`. */
export async function startInstance(databaseUrl: string, env: Record<string, string> = {}): Promise<TestInstance> {
  const config = loadConfig(
    {},
    {
      NODE_ENV: 'test',
      DATABASE_URL: databaseUrl,
      LOG_LEVEL: process.env.LOG_LEVEL ?? 'silent',
      DB_POOL_MAX: '10',
      ...env,
    },
  );
  const db = createDb(databaseUrl, config.DB_POOL_MAX);
  const app = createApp({ config, db, logger: createLogger(config.LOG_LEVEL), databaseUrl });
  await app.start();
  const server = app.app.listen(0, '127.0.0.1');
  // Longer than fetch's (undici's) idle keep-alive, so the client always closes an idle socket
  // first: with Node's 5 s default, a loaded machine's late timers let undici reuse a socket
  // the server was closing, and the request fails with ECONNRESET (seen in the fuzz suite).
  server.keepAliveTimeout = 65_000;
  app.attach(server);
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    app,
    db,
    config,
    server,
    async close() {
      server.closeAllConnections();
      const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
      // app.close() also closes WebSockets, which keep the server from closing until they end.
      await app.close();
      await serverClosed;
      await db.destroy();
    },
  };
}

export interface TestContext extends TestInstance {
  databaseUrl: string;
  /** A new project with one key of each kind. */
  project(name?: string): Promise<ProjectCredentials>;
  /** Closes the app and drops the database. */
  stop(): Promise<void>;
}

/** One fresh database (cloned from the migrated template) and one app instance on it. */
export async function startTestApp(env: Record<string, string> = {}): Promise<TestContext> {
  const database = await createTestDatabase();
  const instance = await startInstance(database.url, env);
  return {
    ...instance,
    databaseUrl: database.url,
    project: (name = 'test project') => instance.app.projects.createProject({ name }),
    async stop() {
      await instance.close();
      await database.drop();
    },
  };
}

export interface ApiResponse<T = any> {
  status: number;
  headers: Headers;
  body: T;
  text: string;
}

/** fetch with JSON conveniences; `key` goes in Authorization, `user` in X-User-ID. */
export async function api<T = any>(
  baseUrl: string,
  method: string,
  path: string,
  opts: {
    key?: string;
    user?: string;
    signature?: string;
    body?: unknown;
    raw?: string;
    contentType?: string;
    headers?: Record<string, string>;
  } = {},
): Promise<ApiResponse<T>> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.key) headers.authorization = `Bearer ${opts.key}`;
  if (opts.user !== undefined) headers['x-user-id'] = opts.user;
  if (opts.signature !== undefined) headers['x-user-signature'] = opts.signature;
  let body: string | undefined;
  if (opts.raw !== undefined) {
    body = opts.raw;
    headers['content-type'] = opts.contentType ?? 'application/json';
  } else if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers['content-type'] = opts.contentType ?? 'application/json';
  }
  const res = await fetch(baseUrl + path, { method, headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  if ((res.headers.get('content-type') ?? '').includes('json') && text) parsed = JSON.parse(text);
  return { status: res.status, headers: res.headers, body: parsed as T, text };
}
