import type { Knex } from 'knex';
import { newId, randomBase62 } from '../../lib/ids';
import { notFound } from '../../lib/errors';
import type { KeyKind } from '../../lib/key-kind';
import { createKeysService } from '../keys/keys-service';
import type { KeysStore } from '../keys/keys-store';
import type { ProjectsStore } from './projects-store';
import { refuseUnenforcedSettings } from './project-settings';

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
  /** The operator's limits on settings a developer chooses (throws 422); none by default. */
  checkSettings?: (settings: Record<string, unknown>) => void;
}) {
  const { db, projectsStore, keysStore } = deps;

  const keys = createKeysService({ db, keysStore });

  return {
    /** A new project with one key of each kind; the only moment the keys are readable. */
    async createProject(input: {
      name: string;
      ownerId?: string | null;
      settings?: object;
    }): Promise<ProjectCredentials> {
      refuseUnenforcedSettings(input.settings);
      return db.transaction(async (tx) => {
        const project = await projectsStore.insert(tx, {
          id: newId('prj'),
          name: input.name,
          owner_id: input.ownerId ?? null,
          signing_secret: newSigningSecret(),
          settings: input.settings ?? {},
        });
        const secret = await keys.create(tx, project.id, 'secret', 'default secret');
        const publishable = await keys.create(tx, project.id, 'publishable', 'default publishable');
        const admin = await keys.create(tx, project.id, 'admin', 'default admin');
        return {
          project_id: project.id,
          signing_secret: project.signing_secret,
          keys: { secret: secret.key, publishable: publishable.key, admin: admin.key },
        };
      });
    },

    // The project's keys, for the operator CLI and the key routes (keys/keys-router.ts).
    async createKey(projectId: string, kind: KeyKind, name = '') {
      if (!(await projectsStore.get(db, projectId))) throw notFound('project');
      return keys.create(db, projectId, kind, name);
    },

    async listKeys(projectId: string) {
      if (!(await projectsStore.get(db, projectId))) throw notFound('project');
      return keys.list(projectId);
    },

    revokeKey: keys.revoke,

    async rotateSigningSecret(projectId: string) {
      const row = await projectsStore.rotateSigningSecret(
        db,
        projectId,
        newSigningSecret(),
        deps.signingSecretGraceSeconds,
      );
      if (!row) throw notFound('project');
      await keys.notifyChanged(projectId);
      return row;
    },

    /** A developer's new project, without keys: the console creates them one at a time. */
    async createOwnedProject(input: { name: string; ownerId: string; settings?: object }) {
      refuseUnenforcedSettings(input.settings);
      if (input.settings) deps.checkSettings?.(input.settings as Record<string, unknown>);
      return projectsStore.insert(db, {
        id: newId('prj'),
        name: input.name,
        owner_id: input.ownerId,
        signing_secret: newSigningSecret(),
        settings: input.settings ?? {},
      });
    },

    listAll() {
      return projectsStore.listAll(db);
    },

    /** The project (for the operator CLI, which acts for every owner); a missing one is a 404. */
    async get(projectId: string) {
      const row = await projectsStore.get(db, projectId);
      if (!row) throw notFound('project');
      return row;
    },

    listOwned(ownerId: string) {
      return projectsStore.listByOwner(db, ownerId);
    },

    /** The project's current signing secret (for POST /v1/_sign); undefined for no such project. */
    async signingSecretOf(projectId: string) {
      return (await projectsStore.get(db, projectId))?.signing_secret;
    },

    /** The project if this developer owns it; anyone else's (or a missing one) is a 404, never a 403. */
    async getOwned(ownerId: string, projectId: string) {
      const row = await projectsStore.get(db, projectId);
      if (!row || row.owner_id !== ownerId) throw notFound('project');
      return row;
    },

    async updateProject(projectId: string, patch: { name?: string; settings?: Record<string, unknown> }) {
      refuseUnenforcedSettings(patch.settings);
      if (patch.settings) deps.checkSettings?.(patch.settings);
      const row = await projectsStore.update(db, projectId, patch);
      if (!row) throw notFound('project');
      return row;
    },

    async deleteProject(projectId: string) {
      if (!(await projectsStore.softDelete(db, projectId))) throw notFound('project');
    },

    /** Tells every replica to drop its cached keys and settings of this project. */
    notifyKeysChanged: keys.notifyChanged,
  };
}

export type ProjectsService = ReturnType<typeof createProjectsService>;
