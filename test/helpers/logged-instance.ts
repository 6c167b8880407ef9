import type { AddressInfo } from 'node:net';
import { createApp } from '../../src/app';
import { loadConfig } from '../../src/config';
import { createDb } from '../../src/lib/db';
import { createLogger } from '../../src/lib/logger';
import { createTestDatabase } from './db';

/** One JSON log line. */
export type LogLine = Record<string, unknown> & { msg?: string };

export type LoggedInstance = Awaited<ReturnType<typeof startLoggedInstance>>;

/** An app instance on its own database whose JSON log lines are captured instead of printed. */
export async function startLoggedInstance(env: Record<string, string>) {
  const database = await createTestDatabase();
  const raw: string[] = [];
  const config = loadConfig({}, { NODE_ENV: 'test', DATABASE_URL: database.url, DB_POOL_MAX: '5', ...env });
  const db = createDb(database.url, config.DB_POOL_MAX);
  const logger = createLogger(config.LOG_LEVEL, 'progressdb', { write: (s: string) => void raw.push(s) });
  const app = createApp({ config, db, logger, databaseUrl: database.url });
  await app.start();
  const server = app.app.listen(0, '127.0.0.1');
  app.attach(server);
  await new Promise<void>((r) => server.once('listening', () => r()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    app,
    db,
    raw,
    lines: () =>
      raw
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as LogLine),
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await app.close();
      await db.destroy();
      await database.drop();
    },
  };
}

/** Polls `find` every 20 ms until it returns something (log lines are written asynchronously). */
export async function waitFor<T>(find: () => T | undefined, what: string, timeoutMs = 3_000): Promise<T> {
  for (let waited = 0; waited < timeoutMs; waited += 20) {
    const v = find();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}
