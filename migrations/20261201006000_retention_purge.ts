import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  // The purge function runs as its owner (SECURITY DEFINER): pin its search_path to the schema
  // the tables live in, so a caller cannot redirect it with objects of their own.
  const { rows } = await knex.raw('select current_schema() as s');
  const schema = String(rows[0].s).replace(/"/g, '""');
  await knex.raw(`
    -- Each thread's retained horizon: events 1 … purged_through_seq were removed by retention;
    -- the log now starts at purged_through_seq + 1. 0 = nothing purged.
    alter table threads add column purged_through_seq bigint not null default 0;

    -- One row per purge batch, written in the purge's own transaction. Append-only.
    create table retention_audit (
      project_id text not null,
      id bigint generated always as identity,
      thread_id text not null,
      from_seq bigint not null,
      through_seq bigint not null,
      events_removed bigint not null,
      messages_removed bigint not null,
      reason text not null check (reason in ('policy', 'on_demand', 'thread_purge')),
      actor text not null,
      purged_at timestamptz not null default now(),
      primary key (project_id, id)
    );
    create index retention_audit_thread on retention_audit (project_id, thread_id, through_seq);
    create trigger retention_audit_append_only before update or delete on retention_audit
      for each row execute function progressdb_reject_change();
    create trigger retention_audit_no_truncate before truncate on retention_audit
      for each statement execute function progressdb_reject_change();

    -- Scheduled runs (any replica may lead one): when each started and finished, so a new
    -- leader knows whether a run is due or was interrupted.
    create table retention_runs (
      id bigint generated always as identity primary key,
      replica text not null,
      started_at timestamptz not null default now(),
      completed_at timestamptz,
      threads_purged integer not null default 0,
      events_removed bigint not null default 0,
      messages_removed bigint not null default 0
    );

    -- DELETE on the log tables is refused unless the deleting statement runs inside
    -- progressdb_purge_prefix(): it marks its own transaction and runs as the tables' owner.
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

    drop trigger events_append_only on events;
    create trigger events_no_update before update on events
      for each row execute function progressdb_reject_change();
    create trigger events_delete_only_by_purge before delete on events
      for each row execute function progressdb_reject_unless_purging();
    drop trigger messages_no_delete on messages;
    create trigger messages_delete_only_by_purge before delete on messages
      for each row execute function progressdb_reject_unless_purging();

    -- The one way rows leave the log: a prefix of one thread (horizon+1 … p_through), with
    -- its current-state rows and reactions, the audit row and the new horizon, all in the
    -- caller's transaction. The thread row is locked for the batch only (callers keep batches
    -- small), which orders the purge with appends, edits and reactions on that thread.
    create function progressdb_purge_prefix(
      p_project text, p_thread text, p_through bigint, p_reason text, p_actor text)
    returns table (from_seq bigint, through_seq bigint, events_removed bigint, messages_removed bigint)
    language plpgsql security definer set search_path = "${schema}", pg_temp as $fn$
    #variable_conflict use_column
    declare
      v_horizon bigint;
      v_last bigint;
      v_events bigint;
      v_messages bigint;
    begin
      if p_reason is null or p_reason not in ('policy', 'on_demand', 'thread_purge') then
        raise exception 'unknown purge reason %', p_reason using errcode = '22023';
      end if;
      if p_actor is null or length(p_actor) = 0 then
        raise exception 'a purge needs an actor' using errcode = '22023';
      end if;
      select t.purged_through_seq, t.last_seq into v_horizon, v_last
        from threads t where t.project_id = p_project and t.id = p_thread
         for no key update;
      if not found then
        raise exception 'thread % not found', p_thread using errcode = 'P0002';
      end if;
      if p_through > v_last then p_through := v_last; end if;
      if p_through <= v_horizon then return; end if;

      perform set_config('progressdb.purge', pg_current_xact_id()::text, true);
      delete from message_reactions r using messages m
       where m.project_id = p_project and m.thread_id = p_thread
         and m.seq > v_horizon and m.seq <= p_through
         and r.project_id = m.project_id and r.thread_id = m.thread_id and r.message_id = m.id;
      delete from messages m
       where m.project_id = p_project and m.thread_id = p_thread and m.seq > v_horizon and m.seq <= p_through;
      get diagnostics v_messages = row_count;
      delete from events e
       where e.project_id = p_project and e.thread_id = p_thread and e.seq > v_horizon and e.seq <= p_through;
      get diagnostics v_events = row_count;
      perform set_config('progressdb.purge', '', true);

      insert into retention_audit
        (project_id, thread_id, from_seq, through_seq, events_removed, messages_removed, reason, actor)
      values (p_project, p_thread, v_horizon + 1, p_through, v_events, v_messages, p_reason, p_actor);
      update threads set purged_through_seq = p_through where project_id = p_project and id = p_thread;
      return query select v_horizon + 1, p_through, v_events, v_messages;
    end $fn$;
    -- Functions are executable by PUBLIC by default; this one only by its owner and the roles
    -- granted it explicitly (the service's runtime role).
    revoke execute on function progressdb_purge_prefix(text, text, bigint, text, text) from public;
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`
    drop function progressdb_purge_prefix(text, text, bigint, text, text);
    drop trigger events_no_update on events;
    drop trigger events_delete_only_by_purge on events;
    create trigger events_append_only before update or delete on events
      for each row execute function progressdb_reject_change();
    drop trigger messages_delete_only_by_purge on messages;
    create trigger messages_no_delete before delete on messages
      for each row execute function progressdb_reject_change();
    drop function progressdb_reject_unless_purging();
    drop table retention_runs;
    drop table retention_audit;
    alter table threads drop column purged_through_seq;
  `);
}
