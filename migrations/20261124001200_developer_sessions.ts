import type { Knex } from 'knex';

// Console sessions are JWTs, but each names a row here (jti), so signing out ends the session
// on every replica at once instead of when the token would have expired.
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create table developer_sessions (
      developer_id text not null references developers(id),
      id text not null,
      created_at timestamptz not null default now(),
      expires_at timestamptz not null,
      revoked_at timestamptz,
      primary key (developer_id, id)
    );
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table developer_sessions;');
}
