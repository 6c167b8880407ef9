import type { Knex } from 'knex';
import { queryDirect, type Db } from '../../lib/db';

export interface IdempotencyScope {
  projectId: string;
  keyId: string;
  userId: string;
  key: string;
}

export function createIdempotencyStore() {
  return {
    /**
     * The stored response, unless it is older than `ttlSeconds` (an expired key is a new key).
     * Every keyed write asks this before it is submitted: one prepared statement on the driver.
     */
    async find(db: Knex, scope: IdempotencyScope, ttlSeconds: number) {
      const rows = await queryDirect<{ request_hash: string; status: number; response: unknown }>(db, {
        name: 'progressdb_idempotency_find',
        text: `select request_hash, status, response from idempotency_keys
                where project_id = $1 and key_id = $2 and user_id = $3 and idem_key = $4
                  and created_at > now() - make_interval(secs => $5)`,
        values: [scope.projectId, scope.keyId, scope.userId, scope.key, ttlSeconds],
      });
      return rows[0];
    },

    /**
     * Deletes up to `limit` expired rows; rows another replica's sweep holds are skipped, so
     * concurrent sweeps split the work instead of waiting on each other.
     */
    async sweepExpired(db: Db, ttlSeconds: number, limit: number): Promise<number> {
      const { rowCount } = await db.raw<{ rowCount: number }>(
        `delete from idempotency_keys where ctid = any(array(
           select ctid from idempotency_keys where created_at <= now() - make_interval(secs => ?)
            order by created_at limit ? for update skip locked))`,
        [ttlSeconds, limit],
      );
      return rowCount;
    },

    /**
     * Stores the first response of each key, in one statement; returns the positions stored —
     * a position left out is a key another request stored first (keys must be distinct here).
     */
    async recordMany(
      db: Db,
      rows: Array<{ scope: IdempotencyScope; requestHash: string; status: number; body: unknown }>,
      ttlSeconds: number,
    ): Promise<Set<number>> {
      const id = (s: IdempotencyScope) => JSON.stringify([s.projectId, s.keyId, s.userId, s.key]);
      const col = <V>(f: (r: (typeof rows)[number]) => V) => rows.map(f);
      // An expired row not swept yet is replaced, as if it were gone.
      const { rows: stored } = await db.raw<{
        rows: Array<{ project_id: string; key_id: string; user_id: string; idem_key: string }>;
      }>(
        `insert into idempotency_keys (project_id, key_id, user_id, idem_key, request_hash, status, response)
         select project_id, key_id, user_id, idem_key, request_hash, status, response::jsonb
           from unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::int[], ?::text[])
                  as r(project_id, key_id, user_id, idem_key, request_hash, status, response)
         on conflict (project_id, key_id, user_id, idem_key) do update
           set request_hash = excluded.request_hash, status = excluded.status, response = excluded.response,
               created_at = now()
         where idempotency_keys.created_at <= now() - make_interval(secs => ?)
         returning project_id, key_id, user_id, idem_key`,
        [
          col((r) => r.scope.projectId),
          col((r) => r.scope.keyId),
          col((r) => r.scope.userId),
          col((r) => r.scope.key),
          col((r) => r.requestHash),
          col((r) => r.status),
          col((r) => JSON.stringify(r.body ?? null)),
          ttlSeconds,
        ],
      );
      const got = new Set(
        stored.map((r) => id({ projectId: r.project_id, keyId: r.key_id, userId: r.user_id, key: r.idem_key })),
      );
      return new Set(rows.flatMap((r, k) => (got.has(id(r.scope)) ? [k] : [])));
    },

    /** Stores the first response; false when another request stored one for this key first. */
    async record(
      db: Db,
      scope: IdempotencyScope,
      requestHash: string,
      status: number,
      body: unknown,
      ttlSeconds: number,
    ) {
      return (await this.recordMany(db, [{ scope, requestHash, status, body }], ttlSeconds)).size > 0;
    },
  };
}
