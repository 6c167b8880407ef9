import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { createDb } from '../src/lib/db';
import { migrateLatest, migrationsCurrent, migrationsDirectory } from '../src/lib/migrate';
import { databaseUrl } from './helpers/db';
import { adminQuery } from '../src/lib/pg-admin';

const admin = (sql: string) => adminQuery(databaseUrl('postgres'), sql);

test('two replicas migrating a fresh, empty database at the same moment both succeed, each migration applied once', async () => {
  const name = `pdb_t_migrate_${randomBytes(4).toString('hex')}`;
  await admin(`create database ${name}`);
  const a = createDb(databaseUrl(name), 4, 'replica-a');
  const b = createDb(databaseUrl(name), 4, 'replica-b');
  try {
    // Without the advisory lock one of these fails with knex's "Migration table is already locked".
    await Promise.all([migrateLatest(a), migrateLatest(b)]);
    assert.equal(await migrationsCurrent(a), true);
    assert.equal(await migrationsCurrent(b), true);
    const files = readdirSync(migrationsDirectory).filter((f) => /\.(ts|js)$/.test(f) && !f.endsWith('.d.ts'));
    const { rows } = await a.raw('select name, count(*)::int as n from knex_migrations group by name order by name');
    assert.equal(rows.length, files.length);
    assert.ok(
      rows.every((r: { n: number }) => r.n === 1),
      'no migration recorded twice',
    );
    // The schema is really there, append-only triggers included.
    const triggers = await a.raw(`select count(*)::int as n from pg_trigger where not tgisinternal`);
    assert.ok(triggers.rows[0].n > 0);
  } finally {
    await a.destroy();
    await b.destroy();
    await admin(`drop database if exists ${name} with (force)`);
  }
});
