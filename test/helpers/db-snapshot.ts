import type { Knex } from 'knex';

/**
 * Columns and tables that change on their own and say nothing about whether a request wrote
 * data: key last-use stamps (advisory, once a minute), per-request usage counters, the
 * rate limiter's sliding windows, the retention scheduler's run log (its leader records a
 * run every interval, whether or not anything was due), and the server-wide secrets a replica
 * generates on first use (realtime-token MAC key, webhook secret key): no tenant's data.
 */
export const VOLATILE_COLUMNS = ['last_used_at'];
export const TELEMETRY_TABLES = [
  'usage_hourly',
  'rate_limit_leases',
  'retention_runs',
  'server_secrets',
  'knex_migrations',
  'knex_migrations_lock',
];

export type Snapshot = Record<string, { rows: number; checksum: string }>;

/** Row count and an md5 over every row's content (ordered) of every table in the public schema. */
export async function snapshotDatabase(
  db: Knex,
  opts: { where?: (table: string, columns: string[]) => string | null } = {},
): Promise<Snapshot> {
  const { rows: tables } = await db.raw<{ rows: Array<{ table_name: string }> }>(
    `select table_name from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE' order by table_name`,
  );
  const out: Snapshot = {};
  for (const { table_name: t } of tables) {
    if (TELEMETRY_TABLES.includes(t)) continue;
    const { rows: cols } = await db.raw<{ rows: Array<{ column_name: string }> }>(
      `select column_name from information_schema.columns where table_schema = 'public' and table_name = ?`,
      [t],
    );
    const filter =
      opts.where?.(
        t,
        cols.map((c) => c.column_name),
      ) ?? 'true';
    const strip = VOLATILE_COLUMNS.map((c) => ` - '${c}'`).join('');
    const { rows } = await db.raw<{ rows: Array<{ n: string; sum: string | null }> }>(
      `select count(*) n, md5(coalesce(string_agg(r, E'\\n' order by r), '')) sum
         from (select (to_jsonb(x)${strip})::text r from "${t}" x where ${filter}) s`,
    );
    out[t] = { rows: Number(rows[0].n), checksum: rows[0].sum ?? '' };
  }
  return out;
}

/** Only the rows of one project (tables without project_id are kept whole). */
export const projectRows = (projectId: string) => (table: string, columns: string[]) => {
  const safe = projectId.replace(/'/g, "''");
  if (columns.includes('project_id')) return `x.project_id = '${safe}'`;
  if (table === 'projects') return `x.id = '${safe}'`;
  return null;
};
