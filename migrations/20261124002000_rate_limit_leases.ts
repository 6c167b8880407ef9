import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- Sliding-window rate limits as a log of quota leases. A replica reserves a few units at a
    -- time (one row), spends them locally, and on expiry writes back what it really used, so a
    -- hot key costs one row per lease instead of one update of a shared counter per request.
    -- The window's usage is the sum of the rows granted within it. project_id is '' for
    -- per-client-IP limits, which belong to no project.
    create table rate_limit_leases (
      project_id text not null,
      bucket text not null,
      granted_at timestamptz not null,
      id bigint generated always as identity,
      units integer not null check (units >= 0),
      expires_at timestamptz not null,
      primary key (project_id, bucket, granted_at, id)
    );

    -- One round trip per lease. Grants for one bucket are serialised by a transaction-scoped
    -- advisory lock (two-int4 key space, class 21068 = 'RL'), so two replicas can never both
    -- take the last units; the clock is the database's, shared by every replica.
    create function rate_limit_acquire(p_project text, p_bucket text, p_limit integer, p_window_ms integer, p_want integer)
    returns table (granted integer, used bigint, granted_at text, lease_id bigint, reset_ms integer, retry_ms integer)
    language plpgsql as $fn$
    declare
      v_now timestamptz;
      v_window interval := make_interval(secs => p_window_ms / 1000.0);
      v_used bigint;
      v_oldest timestamptz;
      v_grant integer;
      v_id bigint;
      v_retry_at timestamptz;
    begin
      perform pg_advisory_xact_lock(21068, hashtext(p_project || '/' || p_bucket));
      v_now := clock_timestamp();
      delete from rate_limit_leases l
       where l.project_id = p_project and l.bucket = p_bucket and l.granted_at <= v_now - v_window;
      select coalesce(sum(l.units), 0), min(l.granted_at) into v_used, v_oldest
        from rate_limit_leases l where l.project_id = p_project and l.bucket = p_bucket;
      v_grant := greatest(0, least(p_want::bigint, p_limit - v_used))::integer;
      if v_grant > 0 then
        insert into rate_limit_leases (project_id, bucket, granted_at, units, expires_at)
        values (p_project, p_bucket, v_now, v_grant, v_now + v_window)
        returning id into v_id;
        v_used := v_used + v_grant;
        v_oldest := coalesce(v_oldest, v_now);
        retry_ms := 0;
      else
        -- The first moment at which enough old units have aged out to admit one more.
        select x.granted_at + v_window into v_retry_at from (
          select l.granted_at, sum(l.units) over (order by l.granted_at, l.id) as cum
            from rate_limit_leases l where l.project_id = p_project and l.bucket = p_bucket
        ) x where x.cum >= v_used - p_limit + 1 order by x.granted_at limit 1;
        retry_ms := greatest(1, ceil(extract(epoch from (coalesce(v_retry_at, v_now + v_window) - v_now)) * 1000))::integer;
      end if;
      granted := v_grant;
      used := v_used;
      granted_at := case when v_grant > 0 then v_now::text end;
      lease_id := v_id;
      reset_ms := case when v_oldest is null then 0
                  else greatest(0, ceil(extract(epoch from (v_oldest + v_window - v_now)) * 1000))::integer end;
      return next;
    end
    $fn$;
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(
    'drop function rate_limit_acquire(text, text, integer, integer, integer); drop table rate_limit_leases;',
  );
}
