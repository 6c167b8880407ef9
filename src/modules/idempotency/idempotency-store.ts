import type { Knex } from 'knex';
import { queryDirect, type Db } from '../../lib/db';

export interface IdempotencyScope {
  projectId: string;
  keyId: string;
  userId: string;
  key: string;
}

export interface StoredResponse {
  request_hash: string;
  status: number;
  response: unknown;
}

export function createIdempotencyStore() {
  return {
    /**
     * The stored responses of many keys in one statement, by position (undefined: none, or
     * older than `ttlSeconds`: an expired key is a new key). Keyed writes ask this before they
     * are submitted, batched per turn of the event loop (`createIdempotency`).
     */
    async findMany(db: Knex, scopes: ReadonlyArray<IdempotencyScope>, ttlSeconds: number) {
      const n = scopes.length;
      const projects = new Array<string>(n);
      const keyIds = new Array<string>(n);
      const users = new Array<string>(n);
      const keys = new Array<string>(n);
      for (let i = 0; i < n; i++) {
        projects[i] = scopes[i].projectId;
        keyIds[i] = scopes[i].keyId;
        users[i] = scopes[i].userId;
        keys[i] = scopes[i].key;
      }
      const rows = await queryDirect<StoredResponse & { i: number }>(db, {
        name: 'progressdb_idempotency_find_many',
        text: `select k.i, s.request_hash, s.status, s.response
                 from unnest($1::text[], $2::text[], $3::text[], $4::text[])
                        with ordinality as k(project_id, key_id, user_id, idem_key, i)
                 join idempotency_keys s
                   on s.project_id = k.project_id and s.key_id = k.key_id and s.user_id = k.user_id
                  and s.idem_key = k.idem_key and s.created_at > now() - make_interval(secs => $5)`,
        values: [projects, keyIds, users, keys, ttlSeconds],
      });
      const answers = new Array<StoredResponse | undefined>(n).fill(undefined);
      for (const { i, ...row } of rows) answers[Number(i) - 1] = row;
      return answers;
    },

    /** One key's stored response (see `findMany`). */
    async find(db: Knex, scope: IdempotencyScope, ttlSeconds: number): Promise<StoredResponse | undefined> {
      return (await this.findMany(db, [scope], ttlSeconds))[0];
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
