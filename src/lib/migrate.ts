import path from 'node:path';
import type { Knex } from 'knex';
import { DEFAULT_RUNTIME_ROLE, grantRuntimeRole } from './db-roles';

export const migrationsDirectory = path.resolve(__dirname, '../../migrations');

const migrationConfig: Knex.MigratorConfig = {
  directory: migrationsDirectory,
  loadExtensions: ['.ts', '.js'],
  tableName: 'knex_migrations',
};

// Any fixed number: replicas starting together queue on it instead of racing.
const MIGRATION_LOCK_ID = 7_310_2024;

/**
 * Runs pending migrations once, even when many replicas start at the same moment, then grants
 * the runtime role what the service needs (db-roles.ts). Returns false when the role could not
 * be created by this connection (the grants were skipped).
 */
export async function migrateLatest(db: Knex, runtimeRole: string = DEFAULT_RUNTIME_ROLE): Promise<boolean> {
  // The lock lives on one held connection; knex runs the migrations on others.
  const conn = (await db.client.acquireConnection()) as { query(sql: string, params: unknown[]): Promise<unknown> };
  try {
    await conn.query('select pg_advisory_lock($1)', [MIGRATION_LOCK_ID]);
    try {
      await db.migrate.latest(migrationConfig);
      return await grantRuntimeRole(db, runtimeRole);
    } finally {
      await conn.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK_ID]);
    }
  } finally {
    await db.client.releaseConnection(conn);
  }
}

/** True when every migration file has been applied. */
export async function migrationsCurrent(db: Knex): Promise<boolean> {
  const [, pending] = (await db.migrate.list(migrationConfig)) as [unknown[], unknown[]];
  return pending.length === 0;
}
