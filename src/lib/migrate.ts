import path from 'node:path';
import type { Knex } from 'knex';

export const migrationsDirectory = path.resolve(__dirname, '../../migrations');

const migrationConfig: Knex.MigratorConfig = {
  directory: migrationsDirectory,
  loadExtensions: ['.ts', '.js'],
  tableName: 'knex_migrations',
};

// Any fixed number: replicas starting together queue on it instead of racing.
const MIGRATION_LOCK_ID = 7_310_2024;

/** Runs pending migrations once, even when many replicas start at the same moment. */
export async function migrateLatest(db: Knex): Promise<void> {
  // The lock lives on one held connection; knex runs the migrations on others.
  const conn = (await db.client.acquireConnection()) as { query(sql: string, params: unknown[]): Promise<unknown> };
  try {
    await conn.query('select pg_advisory_lock($1)', [MIGRATION_LOCK_ID]);
    try {
      await db.migrate.latest(migrationConfig);
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
