import pg from 'pg';

/** The same server URL, pointing at database `name`. */
export function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

/**
 * One statement on its own short-lived connection, outside any pool: for CREATE/DROP DATABASE
 * and other administration that must not run inside a transaction (test and bench harnesses).
 */
export async function adminQuery(url: string, sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await client.query(sql, params);
  } finally {
    await client.end();
  }
}
