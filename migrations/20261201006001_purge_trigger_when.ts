import type { Knex } from 'knex';

/**
 * The DELETE guard of the log tables as a trigger WHEN condition instead of a PL/pgSQL call per
 * row: the condition is evaluated without entering PL/pgSQL, so the purge (where it is false)
 * pays almost nothing per row, while every other DELETE still reaches progressdb_reject_change().
 * Same rule as before: a row may be deleted only in the transaction progressdb_purge_prefix()
 * marked, by a member of the owner role (the definer function runs as the owner).
 */
export async function up(knex: Knex): Promise<void> {
  const { rows } = await knex.raw('select current_user as u');
  const owner = String(rows[0].u).replace(/'/g, "''");
  const guard = `(coalesce(current_setting('progressdb.purge', true), '') <> pg_current_xact_id()::text
                  or not pg_has_role('${owner}', 'MEMBER'))`;
  await knex.raw(`
    drop trigger events_delete_only_by_purge on events;
    create trigger events_delete_only_by_purge before delete on events
      for each row when ${guard} execute function progressdb_reject_change();
    drop trigger messages_delete_only_by_purge on messages;
    create trigger messages_delete_only_by_purge before delete on messages
      for each row when ${guard} execute function progressdb_reject_change();
    drop function progressdb_reject_unless_purging();
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`
    create function progressdb_reject_unless_purging() returns trigger language plpgsql as $fn$
    begin
      if tg_op = 'DELETE'
         and current_setting('progressdb.purge', true) = pg_current_xact_id()::text
         and pg_has_role((select c.relowner from pg_class c where c.oid = tg_relid), 'MEMBER') then
        return old;
      end if;
      raise exception '% is append-only: % is not allowed', tg_table_name, tg_op
        using errcode = 'P0001', hint = 'append a new event instead; rows leave only through retention purge';
    end $fn$;
    drop trigger events_delete_only_by_purge on events;
    create trigger events_delete_only_by_purge before delete on events
      for each row execute function progressdb_reject_unless_purging();
    drop trigger messages_delete_only_by_purge on messages;
    create trigger messages_delete_only_by_purge before delete on messages
      for each row execute function progressdb_reject_unless_purging();
  `);
}
