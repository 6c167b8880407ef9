import type { Db } from '../../lib/db';

export interface ProjectRow {
  id: string;
  name: string;
  owner_id: string | null;
  signing_secret: string;
  previous_signing_secret: string | null;
  previous_signing_secret_expires_at: string | null;
  settings: Record<string, unknown>;
  created_at: string;
  updated_at: string;
  deleted_at: string | null;
}

export function createProjectsStore() {
  return {
    async insert(
      db: Db,
      row: { id: string; name: string; owner_id: string | null; signing_secret: string; settings?: object },
    ) {
      const [created] = await db('projects').insert(row).returning('*');
      return created as ProjectRow;
    },

    async get(db: Db, id: string): Promise<ProjectRow | undefined> {
      return db('projects').first('*').where({ id }).whereNull('deleted_at');
    },

    /** Every live project, oldest first (the operator CLI). */
    async listAll(db: Db): Promise<ProjectRow[]> {
      return db('projects').select('*').whereNull('deleted_at').orderBy('created_at', 'asc').orderBy('id', 'asc');
    },

    async listByOwner(db: Db, ownerId: string): Promise<ProjectRow[]> {
      return db('projects')
        .select('*')
        .where({ owner_id: ownerId })
        .whereNull('deleted_at')
        .orderBy('created_at', 'desc');
    },

    async update(db: Db, id: string, patch: Partial<Pick<ProjectRow, 'name' | 'settings'>>) {
      const [row] = await db('projects')
        .where({ id })
        .whereNull('deleted_at')
        .update({ ...patch, updated_at: db.fn.now() })
        .returning('*');
      return row as ProjectRow | undefined;
    },

    async rotateSigningSecret(db: Db, id: string, next: string, graceSeconds: number) {
      const [row] = await db('projects')
        .where({ id })
        .whereNull('deleted_at')
        .update({
          previous_signing_secret: db.ref('signing_secret'),
          previous_signing_secret_expires_at: db.raw(`now() + make_interval(secs => ?)`, [graceSeconds]),
          signing_secret: next,
          updated_at: db.fn.now(),
        })
        .returning('*');
      return row as ProjectRow | undefined;
    },

    async softDelete(db: Db, id: string): Promise<boolean> {
      return (await db('projects').where({ id }).whereNull('deleted_at').update({ deleted_at: db.fn.now() })) > 0;
    },
  };
}

export type ProjectsStore = ReturnType<typeof createProjectsStore>;
