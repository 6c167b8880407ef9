import type { Knex } from 'knex';
import { pgCode } from './db';

/** The role the service connects as, unless DATABASE_RUNTIME_ROLE names another. */
export const DEFAULT_RUNTIME_ROLE = 'progressdb_app';

/**
 * Tables the runtime role may read and add to but never rewrite or empty: the log and its
 * audit trails. `messages` is the current-state projection of the log, updated by edits.
 * Rows leave them only through progressdb_purge_prefix (SECURITY DEFINER, run as the owner).
 */
const APPEND_ONLY: Record<string, string> = {
  events: 'update, delete',
  messages: 'delete',
  retention_audit: 'update, delete',
  encryption_audit: 'update, delete',
  // Migrations are the owner's business; the runtime role only checks that they are current.
  knex_migrations: 'insert, update, delete',
  knex_migrations_lock: 'insert, update, delete',
};

const GRANT_LOCK_ID = 7_310_2025;

const PURGE_FUNCTION = 'progressdb_purge_prefix(text, text, bigint, text, text)';

export function assertRoleName(role: string): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(role)) throw new Error(`invalid role name ${JSON.stringify(role)}`);
  return role;
}

/**
 * Run by the owner after migrations, under the migration lock: creates the runtime role if it
 * is missing (roles are cluster-wide, so another database's migration may create it at the same
 * moment) and grants it exactly what the service needs. Never TRUNCATE, TRIGGER or REFERENCES,
 * never ownership: ALTER TABLE … DISABLE TRIGGER needs ownership, so the append-only triggers
 * hold against the service's own connection. Idempotent. Returns false when this connection may
 * not create the missing role (a managed database without CREATEROLE): the grants are skipped.
 */
export async function grantRuntimeRole(db: Knex, role: string = DEFAULT_RUNTIME_ROLE): Promise<boolean> {
  const r = `"${assertRoleName(role)}"`;
  const exists = async () =>
    (await db.raw<{ rowCount: number }>('select 1 from pg_roles where rolname = ?', [role])).rowCount > 0;
  if (!(await exists())) {
    try {
      await db.raw(`create role ${r} nologin`);
    } catch (e) {
      // 42710 duplicate_object, 23505: a concurrent CREATE ROLE won the race on pg_authid.
      if (pgCode(e) === '42501') return false;
      if (!['42710', '23505'].includes(pgCode(e) ?? '') || !(await exists())) throw e;
    }
  }
  await db.transaction(async (tx) => {
    // Concurrent GRANTs on one object fail ("tuple concurrently updated"): one at a time per database.
    await tx.raw('select pg_advisory_xact_lock(?)', [GRANT_LOCK_ID]);
    const schema = (await tx.raw<{ rows: Array<{ s: string }> }>('select current_schema() as s')).rows[0].s;
    const quotedSchema = () => `"${schema.replace(/"/g, '""')}"`;
    const { rows } = await tx.raw<{ rows: Array<{ relname: string }> }>(
      `select c.relname from pg_class c
        where c.relnamespace = current_schema()::regnamespace and c.relkind in ('r', 'p')`,
    );
    const tables = new Set(rows.map((x) => x.relname));
    await tx.raw(`grant usage on schema ${quotedSchema()} to ${r}`);
    await tx.raw(`grant select, insert, update, delete on all tables in schema ${quotedSchema()} to ${r}`);
    await tx.raw(`revoke truncate, references, trigger on all tables in schema ${quotedSchema()} from ${r}`);
    for (const [table, denied] of Object.entries(APPEND_ONLY)) {
      if (tables.has(table)) await tx.raw(`revoke ${denied} on "${table}" from ${r}`);
    }
    await tx.raw(`grant usage, select on all sequences in schema ${quotedSchema()} to ${r}`);
    const purge = await tx.raw<{ rows: Array<{ f: unknown }> }>(`select to_regprocedure(?) as f`, [PURGE_FUNCTION]);
    if (purge.rows[0]?.f) await tx.raw(`grant execute on function ${PURGE_FUNCTION} to ${r}`);
  });
  return true;
}

export interface ConnectionPrivileges {
  user: string;
  superuser: boolean;
  ownsLog: boolean;
}

/** Who the service is connected as, and whether it could switch off the append-only triggers. */
export async function connectionPrivileges(db: Knex): Promise<ConnectionPrivileges> {
  const { rows } = await db.raw<{ rows: Array<{ user: string; superuser: boolean; owns_log: boolean }> }>(
    `select current_user as user,
            (select rolsuper from pg_roles where rolname = current_user) as superuser,
            coalesce(pg_has_role(current_user, (select relowner from pg_class where oid = to_regclass('events')), 'USAGE'), false) as owns_log`,
  );
  const row = rows[0];
  return { user: row.user, superuser: row.superuser, ownsLog: row.owns_log };
}

/** Sets the role's password and lets it log in (the embedded database, where we own the cluster). */
export async function enableRuntimeLogin(db: Knex, role: string, password: string): Promise<void> {
  // DDL takes no bind parameters; the password is ours (hex), checked before it is inlined.
  if (!/^[0-9a-f]{16,}$/.test(password)) throw new Error('the runtime role password must be hex');
  await db.raw(`alter role "${assertRoleName(role)}" login password '${password}'`);
}
