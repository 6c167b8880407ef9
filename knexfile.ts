import type { Knex } from 'knex';
import { migrationsDirectory } from './src/lib/migrate';

// For the knex CLI. The service migrates itself on start (src/lib/migrate.ts), under an
// advisory lock, so replicas never race.
const config: Knex.Config = {
  client: 'pg',
  connection: process.env.DATABASE_URL,
  migrations: { directory: migrationsDirectory, loadExtensions: ['.ts'], tableName: 'knex_migrations' },
  seeds: { directory: './seeds', loadExtensions: ['.ts'] },
};

export default config;
