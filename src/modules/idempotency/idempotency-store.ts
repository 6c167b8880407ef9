import type { Db } from '../../lib/db';

export interface IdempotencyScope {
  projectId: string;
  keyId: string;
  userId: string;
  key: string;
}

export function createIdempotencyStore() {
  return {
    async find(db: Db, scope: IdempotencyScope) {
      return (await db('idempotency_keys')
        .first('request_hash', 'status', 'response')
        .where({ project_id: scope.projectId, key_id: scope.keyId, user_id: scope.userId, idem_key: scope.key })) as
        { request_hash: string; status: number; response: unknown } | undefined;
    },

    /** Stores the first response; false when another request stored one for this key first. */
    async record(db: Db, scope: IdempotencyScope, requestHash: string, status: number, body: unknown) {
      const { rows } = await db.raw(
        `insert into idempotency_keys (project_id, key_id, user_id, idem_key, request_hash, status, response)
         values (?, ?, ?, ?, ?, ?, ?::jsonb) on conflict do nothing returning 1`,
        [scope.projectId, scope.keyId, scope.userId, scope.key, requestHash, status, JSON.stringify(body ?? null)],
      );
      return rows.length > 0;
    },
  };
}
