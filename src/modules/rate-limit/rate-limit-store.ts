import type { Knex } from 'knex';
import type { Db } from '../../lib/db';

export interface LeaseGrant {
  granted: number;
  /** Units counted in the window after this grant. */
  used: number;
  /** The lease row's identity, to write back what was really used; null when nothing was granted. */
  row: { grantedAt: string; id: number } | null;
  /** Milliseconds until the oldest counted unit ages out of the window. */
  resetMs: number;
  /** Milliseconds until one more unit can be admitted; 0 when granted. */
  retryMs: number;
}

export interface LeaseRequest {
  projectId: string;
  bucket: string;
  limit: number;
  windowMs: number;
  want: number;
}

type GrantRow = {
  granted: number;
  used: number | string;
  granted_at: string | null;
  lease_id: number | string | null;
  reset_ms: number;
  retry_ms: number;
};

const toGrant = (r: GrantRow): LeaseGrant => ({
  granted: r.granted,
  used: Number(r.used),
  row: r.lease_id === null || r.granted_at === null ? null : { grantedAt: r.granted_at, id: Number(r.lease_id) },
  resetMs: r.reset_ms,
  retryMs: r.retry_ms,
});

export interface LeaseRef {
  projectId: string;
  bucket: string;
  grantedAt: string;
  id: number;
}

interface PooledClient {
  query<R>(sql: string, params: unknown[]): Promise<{ rows: R[] }>;
}

/**
 * Runs one statement on a pooled connection without knex's query builder: lease requests sit
 * on the request path of quiet buckets, and knex costs about twice the CPU of the driver alone
 * per statement. (Such statements do not show in knex's slow-query events.)
 */
async function direct<R>(db: Knex, sql: string, params: unknown[]) {
  const conn = (await db.client.acquireConnection()) as PooledClient;
  try {
    return await conn.query<R>(sql, params);
  } finally {
    await db.client.releaseConnection(conn);
  }
}

/** Quota leases in PostgreSQL (migrations/20261124002000_rate_limit_leases.ts). */
export function createRateLimitStore() {
  return {
    async acquire(
      db: Knex,
      projectId: string,
      bucket: string,
      limit: number,
      windowMs: number,
      want: number,
    ): Promise<LeaseGrant> {
      const { rows } = await direct<GrantRow>(db, 'select * from rate_limit_acquire($1, $2, $3, $4, $5)', [
        projectId,
        bucket,
        limit,
        windowMs,
        want,
      ]);
      return toGrant(rows[0]);
    },

    /** Leases for many buckets in one round trip; grants come back in request order. */
    async acquireMany(db: Knex, reqs: LeaseRequest[]): Promise<LeaseGrant[]> {
      const { rows } = await direct<GrantRow & { idx: number }>(
        db,
        'select * from rate_limit_acquire_many($1::text[], $2::text[], $3::int[], $4::int[], $5::int[])',
        [
          reqs.map((r) => r.projectId),
          reqs.map((r) => r.bucket),
          reqs.map((r) => r.limit),
          reqs.map((r) => r.windowMs),
          reqs.map((r) => r.want),
        ],
      );
      const grants: LeaseGrant[] = new Array(reqs.length);
      for (const r of rows) grants[r.idx - 1] = toGrant(r);
      return grants;
    },

    /** Writes back how many units of a lease were really spent; the rest return to the window. */
    async settle(db: Db, lease: LeaseRef, used: number): Promise<void> {
      const where = { project_id: lease.projectId, bucket: lease.bucket, id: lease.id };
      const q = db('rate_limit_leases').where(where).whereRaw('granted_at = ?::timestamptz', [lease.grantedAt]);
      if (used > 0) await q.update({ units: used });
      else await q.delete();
    },

    /**
     * Drops leases that have aged out of their window (buckets nobody touches any more). Rows a
     * lease grant is deleting are skipped, never waited for: the sweep locks rows in scan order,
     * a grant in bucket order, and waiting on each other could deadlock.
     */
    async sweep(db: Db, batch = 5_000): Promise<number> {
      const { rowCount } = await db.raw(
        `delete from rate_limit_leases where ctid = any(array(select ctid from rate_limit_leases where expires_at < now() limit ? for update skip locked))`,
        [batch],
      );
      return rowCount ?? 0;
    },
  };
}

export type RateLimitStore = ReturnType<typeof createRateLimitStore>;
