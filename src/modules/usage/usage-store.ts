import type { Db } from '../../lib/db';

export interface UsageDelta {
  projectId: string;
  hour: string;
  requests: number;
  messages: number;
}

export function createUsageStore() {
  return {
    /** Adds the deltas to their hourly rows in one statement (rows sorted so replicas never deadlock). */
    async add(db: Db, deltas: UsageDelta[]) {
      if (deltas.length === 0) return;
      const sorted = [...deltas].sort((a, b) =>
        a.projectId === b.projectId ? a.hour.localeCompare(b.hour) : a.projectId < b.projectId ? -1 : 1,
      );
      await db.raw(
        `insert into usage_hourly (project_id, hour, requests, messages)
         select * from unnest(?::text[], ?::timestamptz[], ?::bigint[], ?::bigint[])
         on conflict (project_id, hour) do update set
           requests = usage_hourly.requests + excluded.requests,
           messages = usage_hourly.messages + excluded.messages`,
        [
          sorted.map((d) => d.projectId),
          sorted.map((d) => d.hour),
          sorted.map((d) => d.requests),
          sorted.map((d) => d.messages),
        ],
      );
    },

    /** One row per hour for the last `hours` hours (this hour included), zeros where idle. */
    async hourly(
      db: Db,
      projectId: string,
      hours: number,
    ): Promise<Array<{ hour: string; requests: number; messages: number }>> {
      const { rows } = await db.raw(
        `select h as hour, coalesce(u.requests, 0)::bigint as requests, coalesce(u.messages, 0)::bigint as messages
           from generate_series(date_trunc('hour', now()) - make_interval(hours => ?), date_trunc('hour', now()), interval '1 hour') h
           left join usage_hourly u on u.project_id = ? and u.hour = h
          order by h`,
        [hours - 1, projectId],
      );
      return rows;
    },
  };
}

export type UsageStore = ReturnType<typeof createUsageStore>;
