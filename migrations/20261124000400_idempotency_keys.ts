import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- The first response to a POST carrying an Idempotency-Key, written in the same
    -- transaction as the change it describes.
    create table idempotency_keys (
      project_id text not null,
      key_id text not null,
      user_id text not null default '',
      idem_key text not null,
      request_hash text not null,
      status int not null,
      response jsonb,
      created_at timestamptz not null default now(),
      primary key (project_id, key_id, user_id, idem_key)
    );
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table idempotency_keys;');
}
