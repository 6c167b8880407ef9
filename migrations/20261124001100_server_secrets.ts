import type { Knex } from 'knex';

// Secrets the server generates for itself and every replica must share (the console session
// signing key when SESSION_SECRET is not set). First writer wins; the rest read it.
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create table server_secrets (
      name text primary key,
      value text not null,
      created_at timestamptz not null default now()
    );
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table server_secrets;');
}
