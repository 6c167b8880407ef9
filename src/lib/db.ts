import knex, { type Knex } from 'knex';
import pg from 'pg';

export type Db = Knex | Knex.Transaction;

// Timestamps leave the database as RFC 3339 strings with microseconds (JS Dates keep only
// milliseconds), and bigint seqs as numbers (a thread would need 2^53 events to overflow).
pg.types.setTypeParser(pg.types.builtins.TIMESTAMPTZ, (s) => toRfc3339(s));
pg.types.setTypeParser(pg.types.builtins.INT8, (s) => Number(s));

/** '2026-11-24 06:14:01.1234+00' → '2026-11-24T06:14:01.123400Z' (session time zone is UTC). */
export function toRfc3339(pgText: string): string {
  const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?([+-]\d\d(?::?\d\d)?)?$/.exec(pgText);
  if (!m) return pgText;
  const fraction = (m[3] ?? '').padEnd(6, '0');
  const offset = !m[4] || /^[+-]00(:?00)?$/.test(m[4]) ? 'Z' : m[4];
  return `${m[1]}T${m[2]}.${fraction}${offset}`;
}

export function createDb(url: string, poolMax: number, applicationName = 'progressdb'): Knex {
  return knex({
    client: 'pg',
    connection: { connectionString: url, application_name: applicationName },
    pool: {
      min: 0,
      max: poolMax,
      afterCreate: (conn: pg.Client, done: (err: Error | null, conn: pg.Client) => void) => {
        conn.query("SET TIME ZONE 'UTC'", (err) => done(err ?? null, conn));
      },
    },
    acquireConnectionTimeout: 5_000,
  });
}

/** The PostgreSQL error code of a driver error, if it has one. */
export function pgCode(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string' ? e.code : undefined;
}

/** Errors that mean "the database is not reachable right now", as opposed to a bad query. */
export function isConnectionError(e: unknown): boolean {
  const code = pgCode(e);
  if (code && /^(08|57P0[1-3]|53300)/.test(code)) return true;
  const msg = e instanceof Error ? e.message : '';
  return /ECONNREFUSED|ECONNRESET|Connection terminated|timeout exceeded when trying to connect|Knex: Timeout acquiring a connection|EPIPE|is not queryable|Connection ended unexpectedly|the database system is (starting up|shutting down|in recovery mode)/i.test(
    msg,
  );
}

interface DirectClient {
  query<R>(statement: { name?: string; text: string; values: unknown[] }): Promise<{ rows: R[] }>;
}

/**
 * Runs one statement on a pooled connection through the driver alone, without knex's query
 * builder: for the hottest look-ups (every read authorizes), where building and compiling a
 * query costs about as much CPU as the driver itself. With a `name`, the statement is prepared
 * once per connection and then only executed. Such statements do not show in knex's query
 * events, so the slow-query log does not see them.
 */
export async function queryDirect<R>(
  db: Knex,
  statement: { name?: string; text: string; values: unknown[] },
): Promise<R[]> {
  const conn = (await db.client.acquireConnection()) as DirectClient;
  try {
    return (await conn.query<R>(statement)).rows;
  } finally {
    await db.client.releaseConnection(conn);
  }
}
