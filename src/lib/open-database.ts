import path from 'node:path';
import type { Knex } from 'knex';
import type { Config } from '../config';
import { createDb } from './db';
import { startEmbeddedPostgres } from './embedded-postgres';
import { migrateLatest } from './migrate';

export interface Database {
  db: Knex;
  url: string;
  embedded: boolean;
  close(): Promise<void>;
}

/** DATABASE_URL when given, else the embedded PostgreSQL under DATA_DIR; migrated either way. */
export async function openDatabase(config: Config, onLog: (line: string) => void = () => undefined): Promise<Database> {
  const embedded = config.DATABASE_URL
    ? null
    : await startEmbeddedPostgres(path.join(config.DATA_DIR), config.EMBEDDED_PG_PORT, onLog);
  const url = config.DATABASE_URL ?? embedded!.url;
  const db = createDb(url, config.DB_POOL_MAX);
  try {
    await migrateLatest(db);
  } catch (e) {
    await db.destroy();
    await embedded?.stop();
    throw e;
  }
  return {
    db,
    url,
    embedded: Boolean(embedded),
    async close() {
      await db.destroy();
      await embedded?.stop();
    },
  };
}
