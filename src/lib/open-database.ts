import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Knex } from 'knex';
import type { Config } from '../config';
import { createDb } from './db';
import { connectionPrivileges, enableRuntimeLogin, type ConnectionPrivileges } from './db-roles';
import { startEmbeddedPostgres } from './embedded-postgres';
import { migrateLatest, migrationsCurrent } from './migrate';

export interface Database {
  db: Knex;
  /** The runtime connection's URL (what replicas and the LISTEN connection use). */
  url: string;
  embedded: boolean;
  /** Who the service is connected as; `superuser`/`ownsLog` mean it could disable the append-only triggers. */
  privileges: ConnectionPrivileges;
  close(): Promise<void>;
}

/**
 * DATABASE_URL when given, else the embedded PostgreSQL under DATA_DIR; migrated either way.
 * - embedded: migrations run as the cluster's superuser (the owner); the service connects as
 *   DATABASE_RUNTIME_ROLE with a password kept beside the data, owner-readable only.
 * - DATABASE_MIGRATION_URL: migrations run there (the owner), the service uses DATABASE_URL.
 * - DATABASE_URL alone: migrated through it when it may (an owner or superuser); a runtime role
 *   that may not only checks that the migrations are current.
 */
export async function openDatabase(config: Config, onLog: (line: string) => void = () => undefined): Promise<Database> {
  const role = config.DATABASE_RUNTIME_ROLE;
  const embedded = config.DATABASE_URL
    ? null
    : await startEmbeddedPostgres(path.join(config.DATA_DIR), config.EMBEDDED_PG_PORT, onLog);
  let db: Knex | null = null;
  try {
    let url: string;
    const ownerUrl = embedded?.url ?? config.DATABASE_MIGRATION_URL;
    if (ownerUrl) {
      const owner = createDb(ownerUrl, 2, 'progressdb-migrate');
      try {
        const granted = await migrateLatest(owner, role);
        if (embedded) {
          if (!granted) throw new Error(`could not create the runtime role ${role}`);
          const password = runtimePassword(config.DATA_DIR);
          await enableRuntimeLogin(owner, role, password);
          const u = new URL(embedded.url);
          u.username = role;
          u.password = password;
          url = u.toString();
        } else url = config.DATABASE_URL!;
      } finally {
        await owner.destroy();
      }
      db = createDb(url, config.DB_POOL_MAX);
    } else {
      url = config.DATABASE_URL!;
      db = createDb(url, config.DB_POOL_MAX);
    }
    const privileges = await connectionPrivileges(db);
    if (!ownerUrl) {
      if (privileges.superuser || privileges.ownsLog || !(await tableExists(db, 'knex_migrations')))
        await migrateLatest(db, role);
      else if (!(await migrationsCurrent(db)))
        throw new Error(
          `migrations are pending and ${privileges.user} may not run them: run \`npm run migrate\` with the owner's DATABASE_URL, or set DATABASE_MIGRATION_URL`,
        );
    }
    const pool = db;
    return {
      db: pool,
      url,
      embedded: Boolean(embedded),
      privileges,
      async close() {
        await pool.destroy();
        await embedded?.stop();
      },
    };
  } catch (e) {
    await db?.destroy();
    await embedded?.stop();
    throw e;
  }
}

async function tableExists(db: Knex, table: string): Promise<boolean> {
  const { rows } = await db.raw<{ rows: Array<{ ok: boolean }> }>('select to_regclass(?) is not null as ok', [table]);
  return rows[0].ok;
}

/** The runtime role's password on the embedded database: random once, kept beside pg-password. */
function runtimePassword(dataDir: string): string {
  const file = path.join(path.resolve(dataDir), 'pg-app-password');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const password = randomBytes(18).toString('hex');
  writeFileSync(file, password, { mode: 0o600 });
  return password;
}

/** The line logged at start when the service's own connection could switch off the append-only guard. */
export function privilegeWarning(p: ConnectionPrivileges): string | null {
  if (!p.superuser && !p.ownsLog) return null;
  return `connected to PostgreSQL as ${p.user}, ${p.superuser ? 'a superuser' : 'the owner of the log tables'}: this process could disable the append-only triggers. Connect as a runtime role (docs/SECURITY.md, "Database roles")`;
}
