import type { Knex } from 'knex';
import { CHANNELS } from '../../lib/channels';
import type { Db } from '../../lib/db';
import { notFound } from '../../lib/errors';
import { newId } from '../../lib/ids';
import type { KeyKind } from '../../lib/key-kind';
import { displayPrefix, generateApiKey, hashApiKey } from './api-key';
import type { KeysStore } from './keys-store';

/** Creating, listing and revoking a project's API keys (only hashes are stored). */
export function createKeysService(deps: { db: Knex; keysStore: KeysStore }) {
  const { db, keysStore } = deps;

  /** Tells every replica to drop its cached keys and settings of this project. */
  async function notifyChanged(projectId: string) {
    await db.raw('select pg_notify(?, ?)', [CHANNELS.keys, projectId]);
  }

  return {
    /** A new key; the returned `key` is the only time it is readable. */
    async create(conn: Db, projectId: string, kind: KeyKind, name = '') {
      const key = generateApiKey(kind);
      const row = await keysStore.insert(conn, {
        project_id: projectId,
        id: newId('key'),
        kind,
        name,
        prefix: displayPrefix(key),
        key_hash: hashApiKey(key),
      });
      return { ...row, key };
    },

    list: (projectId: string) => keysStore.list(db, projectId),

    async revoke(projectId: string, keyId: string) {
      if (!(await keysStore.revoke(db, projectId, keyId))) throw notFound('key');
      // Every replica drops its cached keys of the project now, not when the cache TTL lapses.
      await notifyChanged(projectId);
    },

    notifyChanged,
  };
}

export type KeysService = ReturnType<typeof createKeysService>;
