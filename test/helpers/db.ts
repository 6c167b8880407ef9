import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { withDatabase } from '../../src/lib/pg-admin';

const adminUrl = () => {
  const url = process.env.PDB_TEST_ADMIN_URL;
  if (!url) throw new Error('Run tests through `npm test` (test/run.ts prepares the database).');
  return url;
};

export const databaseUrl = (name: string): string => withDatabase(adminUrl(), name);

/** A fresh database cloned from the run's migrated template; drop() removes it. */
export async function createTestDatabase(): Promise<{ name: string; url: string; drop(): Promise<void> }> {
  const template = process.env.PDB_TEST_TEMPLATE!;
  const name = `pdb_t_${template.slice(8)}_${randomBytes(4).toString('hex')}`;
  const client = new pg.Client({ connectionString: adminUrl() });
  await client.connect();
  try {
    // CREATE DATABASE … TEMPLATE fails if anyone is connected to the template; retry briefly.
    for (let attempt = 0; ; attempt++) {
      try {
        await client.query(`create database ${name} template ${template}`);
        break;
      } catch (e) {
        if (attempt > 20) throw e;
        await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
      }
    }
  } finally {
    await client.end();
  }
  return {
    name,
    url: databaseUrl(name),
    async drop() {
      const c = new pg.Client({ connectionString: adminUrl() });
      await c.connect();
      try {
        await c.query(
          `select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()`,
          [name],
        );
        await c.query(`drop database if exists ${name}`);
      } finally {
        await c.end();
      }
    },
  };
}
