import { randomBytes } from 'node:crypto';
import { IntegrityError, unwrapKey, wrapKey } from '../encryption/envelope';
import { KmsRefused, type KekDescription, type WrappedKey } from './kms-types';

export interface KekRecord {
  version: number;
  state: 'active' | 'retired';
  created_at: string;
  /** Absent once retired (the material is destroyed). */
  key?: Buffer;
}

/** Where a keyring keeps its KEKs: the database (embedded KMS) or files (external KMS). */
export interface KekStore {
  load(kekId: string): Promise<KekRecord[]>;
  /** False when that version already exists (another process rotated first). */
  add(kekId: string, version: number, key: Buffer): Promise<boolean>;
  retire(kekId: string, version: number): Promise<void>;
}

const wrapContext = (kekId: string, version: number, context: string) => `pdb-dek|${kekId}|${version}|${context}`;

/**
 * KEK versions and the wrap/unwrap operations over them, shared by both KMS modes. Loaded
 * versions are cached for `refreshMs`, so several processes sharing one store converge on the
 * newest version within that time (rotation waits longer than that before its final scan).
 */
export function createKeyring(store: KekStore, refreshMs = 1_000) {
  const cache = new Map<string, { at: number; records: KekRecord[] }>();

  async function records(kekId: string, fresh = false): Promise<KekRecord[]> {
    const hit = cache.get(kekId);
    if (hit && !fresh && Date.now() - hit.at < refreshMs) return hit.records;
    const loaded = await store.load(kekId);
    cache.set(kekId, { at: Date.now(), records: loaded });
    return loaded;
  }

  const current = (rs: KekRecord[]) =>
    rs
      .filter((r) => r.state === 'active')
      .reduce<KekRecord | null>((a, r) => (!a || r.version > a.version ? r : a), null);

  async function currentVersion(kekId: string): Promise<KekRecord> {
    let cur = current(await records(kekId));
    if (!cur) {
      await store.add(kekId, 1, randomBytes(32));
      cur = current(await records(kekId, true));
    }
    if (!cur?.key) throw new KmsRefused(`KEK ${kekId} has no usable version`, 'unknown');
    return cur;
  }

  async function version(kekId: string, v: number): Promise<KekRecord> {
    let r = (await records(kekId)).find((x) => x.version === v);
    if (!r || (r.state === 'active' && !r.key)) r = (await records(kekId, true)).find((x) => x.version === v);
    if (!r) throw new KmsRefused(`KEK ${kekId} has no version ${v}`, 'unknown');
    if (r.state === 'retired' || !r.key) throw new KmsRefused(`KEK ${kekId} version ${v} is retired`, 'retired');
    return r;
  }

  async function wrap(kekId: string, key: Buffer, context: string): Promise<WrappedKey> {
    const cur = await currentVersion(kekId);
    return {
      kek_id: kekId,
      kek_version: cur.version,
      wrapped: wrapKey(cur.key!, key, wrapContext(kekId, cur.version, context)),
    };
  }

  async function unwrap(w: WrappedKey, context: string): Promise<Buffer> {
    const r = await version(w.kek_id, w.kek_version);
    try {
      return unwrapKey(r.key!, w.wrapped, wrapContext(w.kek_id, w.kek_version, context));
    } catch (err) {
      if (err instanceof IntegrityError) throw new KmsRefused('the wrapped key failed authentication', 'integrity');
      throw err;
    }
  }

  return {
    wrap,
    unwrap,
    async rewrap(w: WrappedKey, context: string) {
      return wrap(w.kek_id, await unwrap(w, context), context);
    },
    async rotate(kekId: string) {
      for (;;) {
        const rs = await records(kekId, true);
        const next = rs.reduce((m, r) => Math.max(m, r.version), 0) + 1;
        if (await store.add(kekId, next, randomBytes(32))) {
          await records(kekId, true);
          return { kek_id: kekId, version: next };
        }
      }
    },
    async retire(kekId: string, v: number) {
      const cur = current(await records(kekId, true));
      if (cur && cur.version === v) throw new KmsRefused('the current KEK version cannot be retired', 'invalid');
      await store.retire(kekId, v);
      await records(kekId, true);
    },
    async describe(kekId: string): Promise<KekDescription> {
      const rs = await records(kekId, true);
      return {
        kek_id: kekId,
        current: current(rs)?.version ?? null,
        versions: rs.map((r) => ({ version: r.version, state: r.state, created_at: r.created_at })),
      };
    },
  };
}

export type Keyring = ReturnType<typeof createKeyring>;
