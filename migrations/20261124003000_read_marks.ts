import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- Each user's read marker per thread: the highest seq they have seen. Mutable and
    -- per-user (not part of the thread log); it only moves forward (greatest() on upsert).
    create table read_marks (
      project_id text not null,
      user_id text not null,
      thread_id text not null,
      seq bigint not null check (seq >= 0),
      updated_at timestamptz not null default now(),
      primary key (project_id, user_id, thread_id)
    );
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table read_marks;');
}
