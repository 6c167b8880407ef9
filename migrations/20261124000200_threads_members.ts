import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- threads is the one mutable row per conversation: it allocates seqs (last_seq) and
    -- carries the read-optimised summary. Everything it holds is rebuildable from events.
    create table threads (
      project_id text not null references projects(id),
      id text not null,
      type text not null check (type in ('dm', 'group', 'channel')),
      title text,
      attributes jsonb not null default '{}'::jsonb,
      read_policy text not null default 'members' check (read_policy in ('public', 'members', 'owners')),
      write_policy text not null default 'members' check (write_policy in ('public', 'members', 'owners')),
      created_by text,
      dm_key text,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      last_seq bigint not null default 0,
      last_activity_at timestamptz not null default now(),
      deleted_at timestamptz,
      primary key (project_id, id)
    );
    create unique index threads_dm on threads (project_id, dm_key) where dm_key is not null;
    create index threads_activity on threads (project_id, last_activity_at desc, id desc);

    create table thread_members (
      project_id text not null,
      thread_id text not null,
      user_id text not null,
      role text not null check (role in ('owner', 'admin', 'member')),
      added_at timestamptz not null default now(),
      primary key (project_id, thread_id, user_id),
      foreign key (project_id, thread_id) references threads (project_id, id)
    );
    create index thread_members_by_user on thread_members (project_id, user_id, thread_id);
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table thread_members; drop table threads;');
}
