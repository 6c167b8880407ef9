import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- Per-user revocation of signed user tokens (X-User-Token): a token issued (iat) before
    -- not_before is refused. The backend bumps it through POST /v1/users/{user_id}/revoke-tokens.
    create table user_token_revocations (
      project_id text not null references projects (id) on delete cascade,
      user_id text not null,
      not_before timestamptz not null,
      primary key (project_id, user_id)
    );
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table user_token_revocations;');
}
