import type { Db } from '../../lib/db';
import type { KeyKind } from './api-key';

export interface ApiKeyRow {
  project_id: string;
  id: string;
  kind: KeyKind;
  name: string;
  prefix: string;
  created_at: string;
  last_used_at: string | null;
  revoked_at: string | null;
}

const PUBLIC_COLUMNS = ['project_id', 'id', 'kind', 'name', 'prefix', 'created_at', 'last_used_at', 'revoked_at'];

export function createKeysStore() {
  return {
    async insert(
      db: Db,
      row: { project_id: string; id: string; kind: KeyKind; name: string; prefix: string; key_hash: Buffer },
    ) {
      const [created] = await db('api_keys').insert(row).returning(PUBLIC_COLUMNS);
      return created as ApiKeyRow;
    },

    async list(db: Db, projectId: string): Promise<ApiKeyRow[]> {
      return db('api_keys').select(PUBLIC_COLUMNS).where({ project_id: projectId }).orderBy('created_at', 'desc');
    },

    /** Revokes a live key; false when there is no such live key in the project. */
    async revoke(db: Db, projectId: string, keyId: string): Promise<boolean> {
      const n = await db('api_keys')
        .where({ project_id: projectId, id: keyId })
        .whereNull('revoked_at')
        .update({ revoked_at: db.fn.now() });
      return n > 0;
    },

    /** The live key with this hash, with the project it belongs to. */
    async findByHash(db: Db, keyHash: Buffer) {
      return (await db('api_keys as k')
        .join('projects as p', 'p.id', 'k.project_id')
        .first(
          'k.id as key_id',
          'k.kind',
          'k.project_id',
          'p.signing_secret',
          'p.previous_signing_secret',
          'p.previous_signing_secret_expires_at',
          'p.settings',
        )
        .where('k.key_hash', keyHash)
        .whereNull('k.revoked_at')
        .whereNull('p.deleted_at')) as
        | {
            key_id: string;
            kind: KeyKind;
            project_id: string;
            signing_secret: string;
            previous_signing_secret: string | null;
            previous_signing_secret_expires_at: string | null;
            settings: Record<string, unknown>;
          }
        | undefined;
    },

    /** When the user's signed tokens start counting (epoch ms), or null if never revoked. */
    async userTokensNotBefore(db: Db, projectId: string, userId: string): Promise<number | null> {
      const row = (await db('user_token_revocations')
        .first('not_before')
        .where({ project_id: projectId, user_id: userId })) as { not_before: Date | string } | undefined;
      return row ? new Date(row.not_before).getTime() : null;
    },

    /** Refuses the user's tokens issued before now; returns the new not_before. */
    async revokeUserTokens(db: Db, projectId: string, userId: string): Promise<Date> {
      const { rows } = await db.raw(
        `insert into user_token_revocations (project_id, user_id, not_before) values (?, ?, now())
         on conflict (project_id, user_id) do update set not_before = greatest(user_token_revocations.not_before, excluded.not_before)
         returning not_before`,
        [projectId, userId],
      );
      return new Date((rows as Array<{ not_before: Date | string }>)[0].not_before);
    },

    async touch(db: Db, projectId: string, keyId: string) {
      await db('api_keys').where({ project_id: projectId, id: keyId }).update({ last_used_at: db.fn.now() });
    },
  };
}

export type KeysStore = ReturnType<typeof createKeysStore>;
