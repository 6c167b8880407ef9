import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create function progressdb_reject_change() returns trigger language plpgsql as $$
    begin
      raise exception '% is append-only: % is not allowed', tg_table_name, tg_op
        using errcode = 'P0001', hint = 'append a new event instead';
    end $$;

    -- The thread log: the source of truth. One row per change, seq 1, 2, 3 … per thread.
    -- Message events carry the full body so that replaying the log rebuilds every message.
    create table events (
      project_id text not null,
      thread_id text not null,
      seq bigint not null,
      type text not null,
      message_id text,
      actor text,
      data jsonb not null default '{}'::jsonb,
      created_at timestamptz not null default now(),
      primary key (project_id, thread_id, seq)
    );
    create trigger events_append_only before update or delete on events
      for each row execute function progressdb_reject_change();
    create trigger events_no_truncate before truncate on events
      for each statement execute function progressdb_reject_change();

    -- Every version of every message, oldest first: a read-only window on the log.
    create view message_versions as
      select project_id, thread_id, message_id, (data->>'version')::int as version, seq,
             actor, data->'body' as body, type = 'message.deleted' as deleted, created_at
        from events
       where type in ('message.created', 'message.edited', 'message.deleted');

    -- Current state of each message (derived, read-optimised, rebuildable from events).
    -- Keyed by seq so that a page of the newest N is one backward index scan.
    create table messages (
      project_id text not null,
      thread_id text not null,
      seq bigint not null,
      id text not null,
      author text not null,
      body jsonb,
      version int not null default 1,
      version_seqs bigint[] not null,
      created_at timestamptz not null,
      edited_at timestamptz,
      deleted boolean not null default false,
      reactions jsonb not null default '{}'::jsonb,
      primary key (project_id, thread_id, seq)
    );
    create unique index messages_id on messages (project_id, thread_id, id);
    -- Rows leave only through retention purge; a soft delete is a new version.
    create trigger messages_no_delete before delete on messages
      for each row execute function progressdb_reject_change();
    create trigger messages_no_truncate before truncate on messages
      for each statement execute function progressdb_reject_change();

    -- Who reacted with what (derived from reaction.* events), so a reaction toggles once.
    create table message_reactions (
      project_id text not null,
      thread_id text not null,
      message_id text not null,
      reaction text not null,
      user_id text not null,
      created_at timestamptz not null default now(),
      primary key (project_id, thread_id, message_id, reaction, user_id)
    );
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`
    drop table message_reactions; drop table messages; drop view message_versions;
    drop table events; drop function progressdb_reject_change();
  `);
}
