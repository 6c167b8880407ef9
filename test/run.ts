/**
 * `npm test`: prepares PostgreSQL, then runs every test file with node's test runner.
 * - DATABASE_URL set: that server hosts a migrated template database for this run.
 * - otherwise: an embedded PostgreSQL is started under .test-data/ and removed afterwards.
 * Each test file clones its own database from the template (see test/helpers/db.ts).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { createDb } from '../src/lib/db';
import { startEmbeddedPostgres } from '../src/lib/embedded-postgres';
import { migrateLatest } from '../src/lib/migrate';
import { withDatabase, adminQuery as admin } from '../src/lib/pg-admin';

function findTests(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === 'helpers' ? [] : findTests(p);
    return e.name.endsWith('.test.ts') ? [p] : [];
  });
}

async function main() {
  const root = path.resolve(__dirname, '..');
  const filters = process.argv.slice(2);
  const files = findTests(path.join(root, 'test'))
    .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
    .sort();
  const dataDir = path.join(root, '.test-data', `run-${process.pid}`);
  // Tests that run their own PostgreSQL (restart faults) make temp dirs here, with or without DATABASE_URL.
  mkdirSync(path.join(root, '.test-data'), { recursive: true });
  const embedded = process.env.DATABASE_URL
    ? null
    : await startEmbeddedPostgres(dataDir, 20000 + Math.floor(Math.random() * 20000));
  const adminUrl = process.env.DATABASE_URL ?? embedded!.url;
  const template = `pdb_tpl_${randomBytes(4).toString('hex')}`;
  let code = 1;
  try {
    await admin(adminUrl, `create database ${template}`);
    const db = createDb(withDatabase(adminUrl, template), 2);
    await migrateLatest(db);
    await db.destroy();
    process.stdout.write(
      `test database: ${embedded ? 'embedded PostgreSQL' : 'DATABASE_URL'}, template ${template}, ${files.length} files\n`,
    );
    code = await new Promise<number>((resolve) => {
      const child = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          '--test',
          `--test-concurrency=${process.env.TEST_CONCURRENCY ?? 2}`,
          '--test-reporter=spec',
          ...files,
        ],
        {
          stdio: 'inherit',
          env: {
            ...process.env,
            PDB_TEST_ADMIN_URL: adminUrl,
            PDB_TEST_TEMPLATE: template,
            LOG_LEVEL: process.env.LOG_LEVEL ?? 'silent',
          },
        },
      );
      child.on('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0)));
    });
  } finally {
    // Only this run's databases: other runs may share the server (DATABASE_URL).
    await admin(
      adminUrl,
      `select pg_terminate_backend(pid) from pg_stat_activity where (datname = '${template}' or datname like 'pdb_t_${template.slice(8)}%') and pid <> pg_backend_pid()`,
    ).catch(() => undefined);
    const client = new pg.Client({ connectionString: adminUrl });
    await client.connect();
    const { rows } = await client.query(`select datname from pg_database where datname = $1 or datname like $2`, [
      template,
      `pdb_t_${template.slice(8)}%`,
    ]);
    for (const r of rows) await client.query(`drop database if exists ${r.datname}`).catch(() => undefined);
    await client.end();
    if (embedded) {
      await embedded.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }
  process.exit(code);
}

main().catch((e) => {
  process.stderr.write(`test harness failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
