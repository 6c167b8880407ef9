import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { loadConfig } from '../src/config';
import { createDb } from '../src/lib/db';
import { grantRuntimeRole } from '../src/lib/db-roles';
import { openDatabase, privilegeWarning } from '../src/lib/open-database';
import { api, startInstance, type TestInstance } from './helpers/app';
import { createTestDatabase } from './helpers/db';

/** The runtime role's refusals: permission denied (42501) or "must be owner" (42501). */
async function refused(c: pg.Client, sql: string) {
  await assert.rejects(c.query(sql), (e: { code?: string; message: string }) => {
    assert.equal(e.code, '42501', `${sql}: ${e.message}`);
    return true;
  });
}

describe('least privilege in PostgreSQL: the service connects as a runtime role', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let admin: pg.Client;
  // A login role of this test only, member of the runtime role (roles are cluster-wide).
  const login = `pdb_t_login_${randomBytes(4).toString('hex')}`;
  const password = randomBytes(12).toString('hex');
  let runtimeUrl: string;
  let runtime: pg.Client;

  before(async () => {
    database = await createTestDatabase();
    admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
    await admin.query(`create role ${login} login password '${password}' in role progressdb_app`);
    const u = new URL(database.url);
    u.username = login;
    u.password = password;
    runtimeUrl = u.toString();
    runtime = new pg.Client({ connectionString: runtimeUrl });
    await runtime.connect();
  });
  after(async () => {
    await runtime.end();
    await admin.end();
    await database.drop();
    const c = new pg.Client({ connectionString: process.env.PDB_TEST_ADMIN_URL });
    await c.connect();
    await c.query(`drop role if exists ${login}`);
    await c.end();
  });

  test('the runtime role cannot disable the triggers, alter, delete from or truncate the log tables', async () => {
    await refused(runtime, 'alter table events disable trigger all');
    await refused(runtime, 'alter table messages disable trigger all');
    await refused(runtime, 'alter table events add column x int');
    await refused(runtime, 'drop trigger events_no_update on events');
    for (const table of ['events', 'messages', 'retention_audit', 'encryption_audit']) {
      await refused(runtime, `delete from ${table}`);
      await refused(runtime, `truncate ${table}`);
    }
    await refused(runtime, 'update events set type = type');
    await refused(runtime, 'truncate threads');
    await refused(runtime, 'delete from knex_migrations');
  });

  test('the service works end to end as the runtime role, and its retention purge still removes log rows', async () => {
    const app: TestInstance = await startInstance(runtimeUrl);
    try {
      const p = await app.app.projects.createProject({ name: 'least privilege' });
      const key = p.keys.secret;
      for (let i = 0; i < 3; i++) {
        const r = await api(app.url, 'POST', '/v1/threads/t1/messages', { key, user: 'ann', body: { body: { i } } });
        assert.equal(r.status, 201, r.text);
      }
      const first = (await api(app.url, 'GET', '/v1/threads/t1/messages', { key, user: 'ann' })).body;
      const id = first.data.at(-1).id;
      const edit = await api(app.url, 'PATCH', `/v1/threads/t1/messages/${id}`, {
        key,
        user: 'ann',
        body: { body: { i: 'edited' } },
      });
      assert.equal(edit.status, 200, edit.text);
      const del = await api(app.url, 'DELETE', `/v1/threads/t1/messages/${id}`, { key, user: 'ann' });
      assert.ok(del.status < 300, del.text);
      assert.equal((await runtime.query('select current_user as u')).rows[0].u, login);

      const before = Number(
        (await admin.query(`select count(*) from events where project_id = $1`, [p.project_id])).rows[0].count,
      );
      const purged = await runtime.query(`select * from progressdb_purge_prefix($1, 't1', 2, 'on_demand', 'test')`, [
        p.project_id,
      ]);
      assert.equal(Number(purged.rows[0].events_removed), 2);
      const after = Number(
        (await admin.query(`select count(*) from events where project_id = $1`, [p.project_id])).rows[0].count,
      );
      assert.equal(after, before - 2);
      const audit = await admin.query(`select actor from retention_audit where project_id = $1`, [p.project_id]);
      assert.deepEqual(audit.rows, [{ actor: 'test' }]);
    } finally {
      await app.close();
    }
  });

  test('openDatabase on a superuser DATABASE_URL still works, with a warning; on the runtime role, without', async () => {
    const su = await openDatabase(loadConfig({}, { DATABASE_URL: database.url }));
    try {
      assert.equal(su.privileges.superuser, true);
      assert.match(
        privilegeWarning(su.privileges) ?? '',
        /superuser: this process could disable the append-only triggers/,
      );
    } finally {
      await su.close();
    }
    const rt = await openDatabase(loadConfig({}, { DATABASE_URL: runtimeUrl }));
    try {
      assert.deepEqual(rt.privileges, { user: login, superuser: false, ownsLog: false });
      assert.equal(privilegeWarning(rt.privileges), null);
    } finally {
      await rt.close();
    }
  });

  test('the runtime role is created idempotently, even by concurrent migrations', async () => {
    const role = `pdb_t_rt_${randomBytes(4).toString('hex')}`;
    const dbs = Array.from({ length: 4 }, () => createDb(database.url, 2));
    try {
      assert.deepEqual(await Promise.all(dbs.map((db) => grantRuntimeRole(db, role))), [true, true, true, true]);
      assert.equal(await grantRuntimeRole(dbs[0], role), true);
      const { rows } = await admin.query(
        `select has_table_privilege($1, 'events', 'INSERT') as ins,
        has_table_privilege($1, 'events', 'DELETE') as del, has_table_privilege($1, 'threads', 'DELETE') as tdel`,
        [role],
      );
      assert.deepEqual(rows[0], { ins: true, del: false, tdel: true });
    } finally {
      await Promise.all(dbs.map((db) => db.destroy()));
      await admin.query(`drop owned by ${role}`);
      await admin.query(`drop role ${role}`);
    }
  });

  test('the embedded database (on EMBEDDED_PG_PORT) is migrated by its superuser and served as progressdb_app', async () => {
    const dir = mkdtempSync(path.join(__dirname, '..', '.test-data', 'roles-'));
    const port = 20000 + Math.floor(Math.random() * 20000);
    try {
      const db = await openDatabase(loadConfig({}, { DATA_DIR: dir, EMBEDDED_PG_PORT: String(port) }));
      try {
        assert.equal(new URL(db.url).port, String(port));
        assert.deepEqual(db.privileges, { user: 'progressdb_app', superuser: false, ownsLog: false });
        await assert.rejects(db.db.raw('alter table events disable trigger all'), /must be owner/);
        assert.equal(statSync(path.join(dir, 'pg-app-password')).mode & 0o777, 0o600);
      } finally {
        await db.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
