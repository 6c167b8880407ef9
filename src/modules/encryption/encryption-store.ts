import type { Db } from '../../lib/db';
import type { WrappedKey } from '../kms/kms-types';

export interface ThreadKeyRow extends WrappedKey {
  project_id: string;
  thread_id: string;
  dek_id: string;
}

export interface KeyRow extends ThreadKeyRow {
  destroyed: boolean;
}

const ROTATION_COLUMNS = [
  'id',
  'kek_id',
  'kek_version',
  'state',
  'total',
  'rewrapped',
  'retired_versions',
  'error',
  'started_at',
  'finished_at',
];

export function createEncryptionStore() {
  return {
    async live(db: Db, projectId: string, threadId: string): Promise<ThreadKeyRow | undefined> {
      return db('thread_keys')
        .first('project_id', 'thread_id', 'dek_id', 'kek_id', 'kek_version', db.ref('wrapped_dek').as('wrapped'))
        .where({ project_id: projectId, thread_id: threadId })
        .whereNull('destroyed_at');
    },

    async get(db: Db, projectId: string, threadId: string, dekId: string): Promise<KeyRow | undefined> {
      const row = await db('thread_keys')
        .first(
          'project_id',
          'thread_id',
          'dek_id',
          'kek_id',
          'kek_version',
          db.ref('wrapped_dek').as('wrapped'),
          'destroyed_at',
        )
        .where({ project_id: projectId, thread_id: threadId, dek_id: dekId });
      return row ? { ...row, destroyed: row.destroyed_at !== null } : undefined;
    },

    /** False when the thread got a live key first (another request or replica). */
    async insert(db: Db, row: ThreadKeyRow): Promise<boolean> {
      const { rows } = await db.raw(
        `insert into thread_keys (project_id, thread_id, dek_id, kek_id, kek_version, wrapped_dek)
         values (?, ?, ?, ?, ?, ?)
         on conflict (project_id, thread_id) where destroyed_at is null do nothing returning 1`,
        [row.project_id, row.thread_id, row.dek_id, row.kek_id, row.kek_version, row.wrapped],
      );
      return rows.length > 0;
    },

    /** Destroys every key of the thread: the wrapped DEK is gone, the row stays as the record. */
    async destroy(db: Db, projectId: string, threadId: string): Promise<string[]> {
      const rows = await db('thread_keys')
        .where({ project_id: projectId, thread_id: threadId })
        .whereNull('destroyed_at')
        .update({ wrapped_dek: null, destroyed_at: db.fn.now() })
        .returning('dek_id');
      return rows.map((r: { dek_id: string }) => r.dek_id);
    },

    async needingRewrap(db: Db, projectId: string, version: number, limit: number): Promise<ThreadKeyRow[]> {
      return db('thread_keys')
        .select('project_id', 'thread_id', 'dek_id', 'kek_id', 'kek_version', db.ref('wrapped_dek').as('wrapped'))
        .where({ project_id: projectId, kek_id: projectId })
        .andWhere('kek_version', '<', version)
        .whereNull('destroyed_at')
        .orderBy('thread_id')
        .limit(limit);
    },

    /** Only if nobody changed the row meanwhile (shredded, or rewrapped by another job). */
    async rewrapped(db: Db, row: ThreadKeyRow, next: WrappedKey): Promise<boolean> {
      const n = await db('thread_keys')
        .where({
          project_id: row.project_id,
          thread_id: row.thread_id,
          dek_id: row.dek_id,
          kek_version: row.kek_version,
          wrapped_dek: row.wrapped,
        })
        .whereNull('destroyed_at')
        .update({ kek_version: next.kek_version, wrapped_dek: next.wrapped });
      return n > 0;
    },

    async countByVersion(db: Db, projectId: string): Promise<Record<string, number>> {
      const { rows } = await db.raw(
        `select kek_version, count(*) as n from thread_keys
          where project_id = ? and destroyed_at is null group by kek_version`,
        [projectId],
      );
      return Object.fromEntries(
        (rows as Array<{ kek_version: number; n: string }>).map((r) => [String(r.kek_version), Number(r.n)]),
      );
    },

    async insertRotation(db: Db, projectId: string, r: { id: string; kek_version: number; total: number }) {
      const [row] = await db('encryption_rotations')
        .insert({
          project_id: projectId,
          id: r.id,
          kek_id: projectId,
          kek_version: r.kek_version,
          state: 'running',
          total: r.total,
        })
        .returning(ROTATION_COLUMNS);
      return row as RotationRow;
    },

    async progress(db: Db, projectId: string, id: string, n: number) {
      await db('encryption_rotations')
        .where({ project_id: projectId, id })
        .update({ rewrapped: db.raw('rewrapped + ?', [n]), total: db.raw('greatest(total, rewrapped + ?)', [n]) });
    },

    async finish(
      db: Db,
      projectId: string,
      id: string,
      change: { state: 'done' | 'failed'; retired?: number[]; error?: string },
    ) {
      await db('encryption_rotations')
        .where({ project_id: projectId, id })
        .update({
          state: change.state,
          retired_versions: change.retired ?? [],
          error: change.error ?? null,
          finished_at: db.fn.now(),
        });
    },

    async rotation(db: Db, projectId: string, id: string): Promise<RotationRow | undefined> {
      return db('encryption_rotations').first(ROTATION_COLUMNS).where({ project_id: projectId, id });
    },

    async recentRotations(db: Db, projectId: string, limit: number): Promise<RotationRow[]> {
      return db('encryption_rotations')
        .select(ROTATION_COLUMNS)
        .where({ project_id: projectId })
        .orderBy('started_at', 'desc')
        .limit(limit);
    },

    async audit(
      db: Db,
      entry: { project_id: string; action: string; thread_id?: string; key_id?: string; detail?: object },
    ) {
      await db('encryption_audit').insert({ ...entry, detail: JSON.stringify(entry.detail ?? {}) });
    },
  };
}

export interface RotationRow {
  id: string;
  kek_id: string;
  kek_version: number;
  state: 'running' | 'done' | 'failed';
  total: number;
  rewrapped: number;
  retired_versions: number[];
  error: string | null;
  started_at: string;
  finished_at: string | null;
}

export type EncryptionStore = ReturnType<typeof createEncryptionStore>;
