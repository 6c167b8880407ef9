import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { badRequest, integrityFailure, notFound, unavailable } from '../../lib/errors';
import { newId } from '../../lib/ids';
import { jsonEqual } from '../../lib/json-equal';
import type { ApiPrincipal } from '../../lib/http/route';
import type { Logger } from '../../lib/logger';
import type { PgListener } from '../../lib/pg-listener';
import type { EventView } from '../events/events-schemas';
import type { LogIngest, ThreadLog } from '../thread-log/thread-log';
import { KmsRefused, KmsUnavailable, type Kms } from '../kms/kms-types';
import { createDekCache } from './dek-cache';
import {
  associatedData,
  ENVELOPE_PREFIX,
  envelopeKeyId,
  IntegrityError,
  isEnvelope,
  openValue,
  sealValue,
} from './envelope';
import { createEncryptionStore, type RotationRow, type ThreadKeyRow } from './encryption-store';
import { encryptedPaths, mapStrings, sealPaths, someString } from './field-paths';

/** What a read shows in place of a value whose thread key was destroyed. */
export const ERASED = Object.freeze({ $erased: 'key_destroyed' });
/** What a live stream shows in place of a value that failed its integrity check (REST answers an error). */
export const TAMPERED = Object.freeze({ $unreadable: 'integrity_check_failed' });

const DEK_CHANNEL = 'progressdb_deks';
const DESTROYED = 'destroyed' as const;

export interface EncryptionOptions {
  cacheTtlMs: number;
  cacheMax: number;
  rotationBatch: number;
  rotationGraceMs: number;
}

/** Encrypts a thread's new bodies with its live data key (sync, so it can run inside a transaction). */
export interface Sealer {
  seal(messageId: string, version: number, body: unknown): unknown;
  /** Whether a stored body (as this sealer's key sealed it) holds `plain`; false when it cannot tell. */
  matches(messageId: string, version: number, stored: unknown, plain: unknown): boolean;
}

interface Opened {
  project_id?: string;
  messageId: string;
  version: number;
  body: unknown;
}

const threadKey = (p: string, t: string) => `${p}\u0000${t}\u0000`;
const wrapContext = (p: string, t: string, dekId: string) => `${p}/${t}/${dekId}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function kmsError(err: unknown): Error {
  if (err instanceof KmsUnavailable)
    return unavailable('The key management service is not reachable; retry shortly. Nothing was stored.', 2);
  return err as Error;
}

/**
 * Field-level envelope encryption: a data key (DEK) per thread, wrapped by the project's KEK in
 * the KMS; configured body paths sealed with AES-256-GCM before a write reaches the ingest
 * pipeline, opened on every read. Unwrapped DEKs live in a bounded TTL cache per replica.
 */
export function createEncryptionService(deps: {
  db: Knex;
  kms: Kms;
  logger: Logger;
  listener?: PgListener;
  ingest?: LogIngest;
  log?: ThreadLog;
  options: EncryptionOptions;
}) {
  const { db, kms, logger, options } = deps;
  const store = createEncryptionStore();
  const keys = createDekCache<Buffer | typeof DESTROYED>({ ttlMs: options.cacheTtlMs, max: options.cacheMax });
  const live = createDekCache<{ dekId: string; key: Buffer }>({ ttlMs: options.cacheTtlMs, max: options.cacheMax });
  const running = new Set<Promise<void>>();
  let closed = false;

  function evictThread(projectId: string, threadId: string) {
    const prefix = threadKey(projectId, threadId);
    live.deletePrefix(prefix);
    keys.deletePrefix(prefix);
  }

  async function unwrapRow(row: ThreadKeyRow): Promise<Buffer> {
    try {
      return await kms.unwrap(row, wrapContext(row.project_id, row.thread_id, row.dek_id));
    } catch (err) {
      throw kmsError(err);
    }
  }

  /** The thread's live DEK, created (and wrapped by the KMS) on the thread's first encrypted write. */
  async function liveDek(projectId: string, threadId: string) {
    // A write to an encrypting project is refused while the KMS is known to be down, even when
    // this replica still holds the key: the operator sees the outage at once, nothing is half-done.
    if (!kms.healthy()) throw kmsError(new KmsUnavailable('KMS unhealthy'));
    const k = threadKey(projectId, threadId);
    const hit = live.get(k);
    if (hit) return hit;
    let row = await store.live(db, projectId, threadId);
    let key: Buffer;
    if (row) key = await unwrapRow(row);
    else {
      key = randomBytes(32);
      const dekId = newId('dek');
      let wrapped;
      try {
        wrapped = await kms.wrap(projectId, key, wrapContext(projectId, threadId, dekId));
      } catch (err) {
        throw kmsError(err);
      }
      row = { project_id: projectId, thread_id: threadId, dek_id: dekId, ...wrapped };
      if (!(await store.insert(db, row))) {
        row = await store.live(db, projectId, threadId);
        if (!row) throw unavailable('The thread key changed concurrently; retry.', 1);
        key = await unwrapRow(row);
      }
    }
    const entry = { dekId: row.dek_id, key };
    live.set(k, entry);
    keys.set(k + row.dek_id, key);
    return entry;
  }

  /** A DEK by id for reading; DESTROYED once shredded; integrity failure if it is not this thread's. */
  async function keyFor(projectId: string, threadId: string, dekId: string): Promise<Buffer | typeof DESTROYED> {
    const k = threadKey(projectId, threadId) + dekId;
    const hit = keys.get(k);
    if (hit) return hit;
    for (let attempt = 0; ; attempt++) {
      const row = await store.get(db, projectId, threadId, dekId);
      if (!row) throw new IntegrityError(`key ${dekId} does not belong to this thread`);
      if (row.destroyed) {
        keys.set(k, DESTROYED);
        return DESTROYED;
      }
      try {
        const key = await kms.unwrap(row, wrapContext(projectId, threadId, dekId));
        keys.set(k, key);
        return key;
      } catch (err) {
        // A rotation may have rewrapped and retired the version between our read and the unwrap.
        if (err instanceof KmsRefused && err.reason === 'retired' && attempt === 0) continue;
        if (err instanceof KmsRefused) throw new IntegrityError(`the KMS refused key ${dekId}: ${err.reason}`);
        throw kmsError(err);
      }
    }
  }

  function hasEnvelope(body: unknown) {
    return body !== null && body !== undefined && someString(body, isEnvelope);
  }

  /**
   * Opens the bodies of one thread's items. strict: an altered value throws (REST answers a
   * problem); lenient: it becomes TAMPERED (live streams cannot answer an error mid-stream).
   */
  async function openItems<T extends Opened>(
    projectId: string,
    threadId: string,
    items: T[],
    mode: 'strict' | 'lenient',
  ): Promise<T[]> {
    const ids = new Set<string>();
    for (const it of items)
      if (hasEnvelope(it.body))
        someString(it.body, (s) => {
          if (isEnvelope(s)) ids.add(envelopeKeyId(s) ?? '');
          return false;
        });
    if (ids.size === 0) return items;
    const found = new Map<string, Buffer | typeof DESTROYED | IntegrityError>();
    for (const id of ids) {
      try {
        found.set(id, await keyFor(projectId, threadId, id));
      } catch (err) {
        if (!(err instanceof IntegrityError)) throw err;
        found.set(id, err);
      }
    }
    return items.map((it) => {
      if (!hasEnvelope(it.body)) return it;
      const open = (s: string, at: string[]): unknown => {
        const key = found.get(envelopeKeyId(s) ?? '');
        if (key === DESTROYED) return ERASED;
        try {
          if (!key || key instanceof IntegrityError) throw key ?? new IntegrityError('malformed envelope');
          const value = openValue(key, s, associatedData(projectId, threadId, it.messageId, it.version, at));
          // A sealed value may itself hold sealed values (nested paths): open those too.
          return mapStrings(value, isEnvelope, open, at);
        } catch (err) {
          if (!(err instanceof IntegrityError)) throw err;
          logger.error(
            {
              project_id: projectId,
              thread_id: threadId,
              message_id: it.messageId,
              version: it.version,
              path: at.join('.'),
              reason: err.message,
            },
            'encrypted value failed its integrity check',
          );
          if (mode === 'lenient') return TAMPERED;
          throw integrityFailure(
            `An encrypted value of message ${it.messageId} (version ${it.version}, ${at.join('.')}) failed its integrity check: it was altered or moved, so it is not returned. The incident is logged.`,
          );
        }
      };
      return { ...it, body: mapStrings(it.body, isEnvelope, open) };
    });
  }

  type MessageLike = { id: string; version: number; body: unknown };
  async function openMessages<M extends MessageLike>(projectId: string, threadId: string, views: M[]): Promise<M[]> {
    if (!views.some((v) => hasEnvelope(v.body))) return views;
    const opened = await openItems(
      projectId,
      threadId,
      views.map((v) => ({ messageId: v.id, version: v.version, body: v.body, view: v })),
      'strict',
    );
    return opened.map((o) => (o.body === o.view.body ? o.view : { ...o.view, body: o.body }));
  }

  /** Whether any of these events holds a sealed (encrypted) message body. */
  function anySealed(events: EventView[]) {
    return events.some((e) => e.message_id !== null && hasEnvelope(e.data.body));
  }

  async function openEvents<E extends EventView>(
    projectId: string,
    threadId: string,
    events: E[],
    mode: 'strict' | 'lenient' = 'strict',
  ): Promise<E[]> {
    if (!anySealed(events)) return events;
    const opened = await openItems(
      projectId,
      threadId,
      events.map((e) => ({ messageId: e.message_id ?? '', version: Number(e.data.version), body: e.data.body, e })),
      mode,
    );
    return opened.map((o) => (o.body === o.e.data.body ? o.e : { ...o.e, data: { ...o.e.data, body: o.body } }));
  }

  async function runRotation(projectId: string, rotation: RotationRow) {
    const version = rotation.kek_version;
    try {
      for (let pass = 0; pass < 2 && !closed; pass++) {
        for (;;) {
          const rows = await store.needingRewrap(db, projectId, version, options.rotationBatch);
          if (rows.length === 0 || closed) break;
          let n = 0;
          for (const row of rows) {
            const next = await kms.rewrap(row, wrapContext(projectId, row.thread_id, row.dek_id));
            if (await store.rewrapped(db, row, next)) n++;
          }
          await store.progress(db, projectId, rotation.id, n);
          await sleep(0);
        }
        // Wraps already in flight with the old version when the KMS rotated land within the
        // keyring refresh time; a second scan after that catches them.
        if (pass === 0) await sleep(options.rotationGraceMs);
      }
      if (closed) throw new Error('shut down before the rotation finished; request it again');
      const counts = await store.countByVersion(db, projectId);
      const described = await kms.describe(projectId);
      const retired: number[] = [];
      for (const v of described.versions) {
        if (v.state !== 'active' || v.version >= version || (counts[String(v.version)] ?? 0) > 0) continue;
        await kms.retire(projectId, v.version);
        retired.push(v.version);
      }
      await store.finish(db, projectId, rotation.id, { state: 'done', retired });
      logger.info({ project_id: projectId, rotation: rotation.id, version, retired }, 'KEK rotation done');
    } catch (err) {
      logger.error(
        { err: (err as Error).message, project_id: projectId, rotation: rotation.id },
        'KEK rotation failed',
      );
      await store
        .finish(db, projectId, rotation.id, { state: 'failed', error: (err as Error).message.slice(0, 500) })
        .catch(() => undefined);
    }
  }

  return {
    kms,
    /** Whether writes of this principal's project are sealed (synchronous: no await on the plain path). */
    encrypts: (principal: ApiPrincipal) => encryptedPaths(principal.settings) !== null,

    /** The sealer for a write to this thread, or null when the project encrypts nothing. */
    async sealer(principal: ApiPrincipal, threadId: string): Promise<Sealer | null> {
      const paths = encryptedPaths(principal.settings);
      if (!paths) return null;
      const { projectId } = principal;
      const { dekId, key } = await liveDek(projectId, threadId);
      const aad = (messageId: string, version: number, at: string[]) =>
        associatedData(projectId, threadId, messageId, version, at);
      return {
        seal: (messageId, version, body) =>
          sealPaths(body, paths, (v, at) => sealValue(key, dekId, aad(messageId, version, at), v)),
        matches(messageId, version, stored, plain) {
          try {
            const open = (s: string, at: string[]): unknown => {
              if (envelopeKeyId(s) !== dekId) throw new IntegrityError('another key');
              return mapStrings(openValue(key, s, aad(messageId, version, at)), isEnvelope, open, at);
            };
            return jsonEqual(mapStrings(stored, isEnvelope, open), plain);
          } catch {
            return false;
          }
        },
      };
    },

    /**
     * Imported message events, sealed as the target project's settings say (like new writes).
     * An envelope in an import would not open here (it is bound to where it was written): refused.
     */
    async sealEvents<E extends EventView>(projectId: string, threadId: string, events: E[]): Promise<E[]> {
      const bodies = events.filter((e) => e.message_id !== null && e.data.body !== undefined);
      const forged = bodies.find((e) => someString(e.data.body, isEnvelope));
      if (forged)
        throw badRequest(
          `Event seq ${forged.seq} of thread "${threadId}" holds a ciphertext ("${ENVELOPE_PREFIX}…"); export with a release that opens encrypted values and import that.`,
        );
      if (bodies.length === 0) return events;
      const row = await db('projects').first('settings').where({ id: projectId });
      const paths = encryptedPaths((row?.settings as Record<string, unknown> | undefined) ?? {});
      if (!paths) return events;
      const { dekId, key } = await liveDek(projectId, threadId);
      return events.map((e) => {
        if (e.message_id === null || e.data.body === undefined || e.data.body === null) return e;
        const messageId = e.message_id;
        const version = Number(e.data.version);
        const body = sealPaths(e.data.body, paths, (v, at) =>
          sealValue(key, dekId, associatedData(projectId, threadId, messageId, version, at), v),
        );
        return { ...e, data: { ...e.data, body } };
      });
    },

    /** Strings with the envelope prefix are reserved: a client may not send one (it would read as a ciphertext). */
    reservedIn(body: unknown): boolean {
      return body !== null && typeof body === 'object'
        ? someString(body, isEnvelope)
        : typeof body === 'string' && isEnvelope(body);
    },
    reservedPrefix: ENVELOPE_PREFIX,

    openMessages,
    openEvents,
    anySealed,

    async openVersions<V extends { version: number; body: unknown }>(
      projectId: string,
      threadId: string,
      messageId: string,
      versions: V[],
    ): Promise<V[]> {
      const opened = await openMessages(
        projectId,
        threadId,
        versions.map((v) => ({ ...v, id: messageId })),
      );
      return opened.map(({ id: _id, ...v }) => v as unknown as V);
    },

    /** Shredding: destroys the thread's DEKs, appends `keys.destroyed` (so last_seq moves), audits, tells every replica. */
    async destroyThreadKeys(principal: ApiPrincipal, threadId: string) {
      const { ingest, log } = deps;
      if (!ingest || !log) throw new Error('destroyThreadKeys needs the ingest pipeline and the thread log');
      const { projectId } = principal;
      const result = await ingest.submit({
        partition: `${projectId}:${threadId}`,
        run: async (tx, pointers) => {
          const exists = await tx('threads').first('id').where({ project_id: projectId, id: threadId });
          if (!exists) throw notFound('thread');
          const destroyed = await store.destroy(tx, projectId, threadId);
          const { lastSeq, at } = await log.append(
            tx,
            pointers,
            projectId,
            threadId,
            [{ type: 'keys.destroyed', actor: null, data: { dek_ids: destroyed, key_id: principal.keyId } }],
            { allowDeleted: true },
          );
          await store.audit(tx, {
            project_id: projectId,
            action: 'keys.destroyed',
            thread_id: threadId,
            key_id: principal.keyId,
            detail: { dek_ids: destroyed, seq: lastSeq },
          });
          await tx.raw('select pg_notify(?, ?)', [DEK_CHANNEL, JSON.stringify([projectId, threadId])]);
          return { thread_id: threadId, destroyed_keys: destroyed, seq: lastSeq, destroyed_at: at };
        },
      });
      evictThread(projectId, threadId);
      logger.warn(
        { project_id: projectId, thread_id: threadId, key_id: principal.keyId, deks: result.destroyed_keys.length },
        'thread keys destroyed',
      );
      return result;
    },

    /** A new KEK version, then every DEK of the project rewrapped in the background (bounded batches). */
    async rotate(projectId: string, actorKeyId: string | null): Promise<RotationRow & { done: Promise<void> }> {
      let version: number;
      try {
        ({ version } = await kms.rotate(projectId));
      } catch (err) {
        throw kmsError(err);
      }
      const counts = await store.countByVersion(db, projectId);
      const total = Object.entries(counts).reduce((n, [v, c]) => (Number(v) < version ? n + c : n), 0);
      const rotation = await store.insertRotation(db, projectId, { id: newId('rot'), kek_version: version, total });
      await store.audit(db, {
        project_id: projectId,
        action: 'kek.rotated',
        key_id: actorKeyId ?? undefined,
        detail: { version, rotation: rotation.id },
      });
      const done = runRotation(projectId, rotation);
      running.add(done);
      void done.finally(() => running.delete(done));
      return { ...rotation, done };
    },

    async rotation(projectId: string, id: string) {
      const r = await store.rotation(db, projectId, id);
      if (!r) throw notFound('rotation');
      return r;
    },

    async status(projectId: string) {
      let kek: {
        current: number | null;
        versions: Array<{ version: number; state: string; created_at: string }>;
      } | null = null;
      try {
        const d = await kms.describe(projectId);
        kek = { current: d.current, versions: d.versions };
      } catch (err) {
        if (!(err instanceof KmsUnavailable || err instanceof KmsRefused)) throw err;
      }
      return {
        kms: { mode: kms.mode, reachable: kms.healthy() },
        kek,
        keys_by_kek_version: await store.countByVersion(db, projectId),
        rotations: await store.recentRotations(db, projectId, 10),
      };
    },

    async start() {
      if (!deps.listener) return;
      await deps.listener.listen(DEK_CHANNEL, (payload) => {
        try {
          const [p, t] = JSON.parse(payload) as [string, string];
          evictThread(String(p), String(t));
        } catch {
          /* not ours */
        }
      });
      // A destruction may have been announced while LISTEN was down: forget every cached key.
      deps.listener.on('reconnected', () => {
        keys.clear();
        live.clear();
      });
    },

    async close() {
      closed = true;
      await Promise.allSettled([...running]);
      kms.close();
    },

    stats: () => ({ cached_keys: keys.size }),
  };
}

export type EncryptionService = ReturnType<typeof createEncryptionService>;
