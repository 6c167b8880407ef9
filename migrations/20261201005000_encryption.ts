import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- A thread's data keys (DEKs), only ever stored wrapped by the project's KEK in the KMS.
    -- Rotation rewraps (wrapped_dek, kek_version change; the DEK itself never does, so every
    -- ciphertext stays readable). Shredding nulls wrapped_dek and sets destroyed_at: the row
    -- stays as the record that the key existed. One live DEK per thread.
    create table thread_keys (
      project_id text not null,
      thread_id text not null,
      dek_id text not null,
      kek_id text not null,
      kek_version int not null,
      wrapped_dek text,
      created_at timestamptz not null default now(),
      destroyed_at timestamptz,
      primary key (project_id, thread_id, dek_id),
      check ((wrapped_dek is null) = (destroyed_at is not null))
    );
    create unique index thread_keys_live on thread_keys (project_id, thread_id) where destroyed_at is null;
    create index thread_keys_kek on thread_keys (project_id, kek_version) where destroyed_at is null;

    -- The embedded KMS's KEKs (KMS_MODE=embedded), each wrapped by the master key, which is
    -- never stored here. A project's KEK id is its project id. The external KMS keeps its own
    -- in its data directory instead.
    create table kms_keks (
      project_id text not null,
      version int not null,
      wrapped_kek text,
      state text not null check (state in ('active', 'retired')),
      created_at timestamptz not null default now(),
      retired_at timestamptz,
      primary key (project_id, version)
    );

    -- Rotation jobs: progress is visible through the admin API while the rewrap runs.
    create table encryption_rotations (
      project_id text not null,
      id text not null,
      kek_id text not null,
      kek_version int not null,
      state text not null check (state in ('running', 'done', 'failed')),
      total int not null default 0,
      rewrapped int not null default 0,
      retired_versions int[] not null default '{}',
      error text,
      started_at timestamptz not null default now(),
      finished_at timestamptz,
      primary key (project_id, id)
    );

    -- Audit of key destruction and rotation requests: append-only like the log.
    create table encryption_audit (
      project_id text not null,
      id bigint generated always as identity,
      action text not null,
      thread_id text,
      key_id text,
      detail jsonb not null default '{}'::jsonb,
      created_at timestamptz not null default now(),
      primary key (project_id, id)
    );
    create trigger encryption_audit_append_only before update or delete on encryption_audit
      for each row execute function progressdb_reject_change();
    create trigger encryption_audit_no_truncate before truncate on encryption_audit
      for each statement execute function progressdb_reject_change();
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(
    'drop table encryption_audit; drop table encryption_rotations; drop table kms_keks; drop table thread_keys;',
  );
}
