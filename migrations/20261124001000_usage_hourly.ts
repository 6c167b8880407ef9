import type { Knex } from 'knex';

// Per-project usage in hourly buckets. Replicas accumulate in memory and upsert-add every few
// seconds, so a busy project costs one row write per replica per flush, not one per request.
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create table usage_hourly (
      project_id text not null references projects(id),
      hour timestamptz not null,
      requests bigint not null default 0,
      messages bigint not null default 0,
      primary key (project_id, hour)
    );
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table usage_hourly;');
}
