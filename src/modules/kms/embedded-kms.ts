import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Knex } from 'knex';
import type { Logger } from '../../lib/logger';
import { unwrapKey, wrapKey } from '../encryption/envelope';
import { createKeyring, type KekRecord, type KekStore } from './keyring';
import type { Kms } from './kms-types';

/** 32 bytes from base64 or hex text (the form KMS_MASTER_KEY and key files take). */
export function parseMasterKey(text: string): Buffer {
  const t = text.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(t) ? Buffer.from(t, 'hex') : Buffer.from(t, 'base64');
  if (key.length !== 32) throw new Error('the KMS master key must be 32 bytes, as 64 hex or 44 base64 characters');
  return key;
}

/**
 * The master key: KMS_MASTER_KEY, else the key file; when neither exists, a new key is
 * generated into the key file (mode 0600) — the development default of `npm start`.
 */
export function loadMasterKey(opts: { masterKey?: string; keyFile: string; logger: Logger }): Buffer {
  if (opts.masterKey) return parseMasterKey(opts.masterKey);
  try {
    return parseMasterKey(readFileSync(opts.keyFile, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  mkdirSync(path.dirname(opts.keyFile), { recursive: true, mode: 0o700 });
  try {
    writeFileSync(opts.keyFile, randomBytes(32).toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
    opts.logger.warn(
      { file: opts.keyFile },
      'generated a new KMS master key (embedded KMS); back it up: without it encrypted data is unreadable',
    );
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return parseMasterKey(readFileSync(opts.keyFile, 'utf8'));
}

const kekContext = (kekId: string, version: number) => `pdb-kek|${kekId}|${version}`;

/** KEKs in the kms_keks table (a project's KEK id is its project id), each wrapped by the master key (never stored there). */
function createDbKekStore(db: Knex, masterKey: () => Buffer): KekStore {
  return {
    async load(kekId) {
      const rows = await db('kms_keks')
        .select('version', 'state', 'wrapped_kek', 'created_at')
        .where({ project_id: kekId })
        .orderBy('version');
      return rows.map((r): KekRecord => ({
        version: Number(r.version),
        state: r.state,
        created_at: r.created_at,
        key: r.wrapped_kek ? unwrapKey(masterKey(), r.wrapped_kek, kekContext(kekId, Number(r.version))) : undefined,
      }));
    },
    async add(kekId, version, key) {
      const rows = await db('kms_keks')
        .insert({
          project_id: kekId,
          version,
          state: 'active',
          wrapped_kek: wrapKey(masterKey(), key, kekContext(kekId, version)),
        })
        .onConflict(['project_id', 'version'])
        .ignore()
        .returning('version');
      return rows.length > 0;
    },
    async retire(kekId, version) {
      await db('kms_keks')
        .where({ project_id: kekId, version })
        .update({ state: 'retired', wrapped_kek: null, retired_at: db.fn.now() });
    },
  };
}

/** KMS_MODE=embedded: the keyring runs in this process, KEKs live in PostgreSQL under the master key. */
export function createEmbeddedKms(deps: {
  db: Knex;
  logger: Logger;
  masterKey?: string;
  keyFile: string;
  refreshMs?: number;
}): Kms {
  let master: Buffer | undefined;
  // Loaded on first use: an instance whose projects encrypt nothing never needs (or creates) one.
  const masterKey = () =>
    (master ??= loadMasterKey({ masterKey: deps.masterKey, keyFile: deps.keyFile, logger: deps.logger }));
  const ring = createKeyring(createDbKekStore(deps.db, masterKey), deps.refreshMs);
  return { mode: 'embedded', ...ring, healthy: () => true, close: () => undefined };
}
