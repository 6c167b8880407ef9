import type { Knex } from 'knex';
import { newId, randomBase62 } from '../../lib/ids';
import { notFound } from '../../lib/errors';
import { displayPrefix, generateApiKey, hashApiKey, type KeyKind } from '../keys/api-key';
import type { KeysStore } from '../keys/keys-store';
import type { ProjectsStore } from './projects-store';

export const newSigningSecret = () => `ss_${randomBase62(43)}`;

export interface ProjectCredentials {
  project_id: string;
  signing_secret: string;
  keys: { secret: string; publishable: string; admin: string };
}

export function createProjectsService(deps: {
  db: Knex;
  projectsStore: ProjectsStore;
  keysStore: KeysStore;
  signingSecretGraceSeconds: number;
}) {
  const { db, projectsStore, keysStore } = deps;

  async function createKey(tx: Knex | Knex.Transaction, projectId: string, kind: KeyKind, name = '') {
    const key = generateApiKey(kind);
    const row = await keysStore.insert(tx, {
      project_id: projectId,
      id: newId('key'),
      kind,
      name,
      prefix: displayPrefix(key),
      key_hash: hashApiKey(key),
    });
    return { ...row, key };
  }

  return {
    /** A new project with one key of each kind; the only moment the keys are readable. */
    async createProject(input: {
      name: string;
      ownerId?: string | null;
      settings?: object;
    }): Promise<ProjectCredentials> {
      return db.transaction(async (tx) => {
        const project = await projectsStore.insert(tx, {
          id: newId('prj'),
          name: input.name,
          owner_id: input.ownerId ?? null,
          signing_secret: newSigningSecret(),
          settings: input.settings ?? {},
        });
        const secret = await createKey(tx, project.id, 'secret', 'default secret');
        const publishable = await createKey(tx, project.id, 'publishable', 'default publishable');
        const admin = await createKey(tx, project.id, 'admin', 'default admin');
        return {
          project_id: project.id,
          signing_secret: project.signing_secret,
          keys: { secret: secret.key, publishable: publishable.key, admin: admin.key },
        };
      });
    },

    async createKey(projectId: string, kind: KeyKind, name = '') {
      if (!(await projectsStore.get(db, projectId))) throw notFound('project');
      return createKey(db, projectId, kind, name);
    },

    async listKeys(projectId: string) {
      if (!(await projectsStore.get(db, projectId))) throw notFound('project');
      return keysStore.list(db, projectId);
    },

    async revokeKey(projectId: string, keyId: string) {
      if (!(await keysStore.revoke(db, projectId, keyId))) throw notFound('key');
      // Every replica drops its cached keys of the project now, not when the cache TTL lapses.
      await db.raw(`select pg_notify('progressdb_keys', ?)`, [projectId]);
    },

    async rotateSigningSecret(projectId: string) {
      const row = await projectsStore.rotateSigningSecret(
        db,
        projectId,
        newSigningSecret(),
        deps.signingSecretGraceSeconds,
      );
      if (!row) throw notFound('project');
      await db.raw(`select pg_notify('progressdb_keys', ?)`, [projectId]);
      return row;
    },

    /** A developer's new project, without keys: the console creates them one at a time. */
    async createOwnedProject(input: { name: string; ownerId: string; settings?: object }) {
      return projectsStore.insert(db, {
        id: newId('prj'),
        name: input.name,
        owner_id: input.ownerId,
        signing_secret: newSigningSecret(),
        settings: input.settings ?? {},
      });
    },

    listOwned(ownerId: string) {
      return projectsStore.listByOwner(db, ownerId);
    },

    /** The project if this developer owns it; anyone else's (or a missing one) is a 404, never a 403. */
    async getOwned(ownerId: string, projectId: string) {
      const row = await projectsStore.get(db, projectId);
      if (!row || row.owner_id !== ownerId) throw notFound('project');
      return row;
    },

    async updateProject(projectId: string, patch: { name?: string; settings?: Record<string, unknown> }) {
      const row = await projectsStore.update(db, projectId, patch);
      if (!row) throw notFound('project');
      return row;
    },

    async deleteProject(projectId: string) {
      if (!(await projectsStore.softDelete(db, projectId))) throw notFound('project');
    },

    /** Tells every replica to drop its cached keys and settings of this project. */
    async notifyKeysChanged(projectId: string) {
      await db.raw(`select pg_notify('progressdb_keys', ?)`, [projectId]);
    },
  };
}

export type ProjectsService = ReturnType<typeof createProjectsService>;
