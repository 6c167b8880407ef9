import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create table developers (
      id text primary key,
      google_sub text not null unique,
      email text,
      name text,
      avatar_url text,
      created_at timestamptz not null default now(),
      last_login_at timestamptz not null default now()
    );

    create table projects (
      id text primary key,
      name text not null,
      owner_id text references developers(id),
      -- The signing secret must be readable to verify HMACs, so it cannot be hashed.
      signing_secret text not null,
      previous_signing_secret text,
      previous_signing_secret_expires_at timestamptz,
      settings jsonb not null default '{}'::jsonb,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      deleted_at timestamptz
    );
    create index projects_owner on projects (owner_id, created_at) where deleted_at is null;

    create table api_keys (
      project_id text not null references projects(id),
      id text not null,
      kind text not null check (kind in ('secret', 'publishable', 'admin')),
      name text not null default '',
      prefix text not null,
      key_hash bytea not null,
      created_at timestamptz not null default now(),
      last_used_at timestamptz,
      revoked_at timestamptz,
      primary key (project_id, id)
    );
    create unique index api_keys_hash on api_keys (key_hash);
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table api_keys; drop table projects; drop table developers;');
}
