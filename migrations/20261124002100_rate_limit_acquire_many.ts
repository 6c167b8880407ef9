import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- Many lease requests in one round trip (a replica batches the buckets that need a lease at
    -- the same moment, e.g. many quiet end users). Buckets are locked in the order of their lock
    -- keys, the same order in every batch, so two replicas' batches can never deadlock.
    create function rate_limit_acquire_many(p_projects text[], p_buckets text[], p_limits integer[], p_windows integer[], p_wants integer[])
    returns table (idx integer, granted integer, used bigint, granted_at text, lease_id bigint, reset_ms integer, retry_ms integer)
    language plpgsql as $fn$
    declare
      i integer;
      r record;
    begin
      for i in
        select s.i from generate_subscripts(p_buckets, 1) as s(i)
         order by hashtext(p_projects[s.i] || '/' || p_buckets[s.i]), s.i
      loop
        select * into r from rate_limit_acquire(p_projects[i], p_buckets[i], p_limits[i], p_windows[i], p_wants[i]);
        idx := i;
        granted := r.granted;
        used := r.used;
        granted_at := r.granted_at;
        lease_id := r.lease_id;
        reset_ms := r.reset_ms;
        retry_ms := r.retry_ms;
        return next;
      end loop;
    end
    $fn$;
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop function rate_limit_acquire_many(text[], text[], integer[], integer[], integer[]);');
}
