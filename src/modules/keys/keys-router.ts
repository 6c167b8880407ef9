import { Router } from 'express';
import { z } from '../../lib/zod';
import type { RouteFactory } from '../../lib/http/route';
import type { KeyKind } from '../../lib/key-kind';
import {
  createdKeySchema,
  createKeySchema,
  keyParams,
  keySchema,
  keyView,
  projectIdParams,
  type KeyView,
} from './keys-schemas';

const noStore = { 'Cache-Control': 'no-store' };

/**
 * The console's key routes: create (the secret shown once), list (prefixes only), revoke.
 * Only the project's owner reaches them; anyone else's project is a 404.
 */
export function createKeysRouter(deps: {
  routes: RouteFactory;
  /** The project if this developer owns it; a 404 otherwise. */
  ownedProject: (developerId: string, projectId: string) => Promise<{ id: string }>;
  keys: {
    createKey(projectId: string, kind: KeyKind, name: string): Promise<KeyView & { key: string }>;
    listKeys(projectId: string): Promise<KeyView[]>;
    revokeKey(projectId: string, keyId: string): Promise<void>;
  };
  /** Local caches first (immediate on this replica), then the other replicas. */
  keysChanged: (projectId: string) => Promise<void>;
}) {
  const { routes, keys } = deps;
  const router = Router();
  const tags = ['Console'];

  routes.route(
    router,
    {
      method: 'post',
      path: '/v1/projects/:project_id/keys',
      operationId: 'createKey',
      summary: 'Create an API key (the full key is in this response only)',
      tags,
      auth: 'developer',
      params: projectIdParams,
      body: createKeySchema,
      responses: { 201: { description: 'Created', schema: createdKeySchema } },
    },
    async ({ principal, params, body }) => {
      const project = await deps.ownedProject(principal.developerId, params.project_id);
      const created = await keys.createKey(project.id, body.kind, body.name);
      return { status: 201, body: { ...keyView(created), key: created.key }, headers: noStore };
    },
  );

  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/projects/:project_id/keys',
      operationId: 'listKeys',
      summary: "A project's keys (prefixes only), newest first",
      tags,
      auth: 'developer',
      params: projectIdParams,
      responses: { 200: { description: 'Keys', schema: z.object({ data: z.array(keySchema) }).openapi('ApiKeyList') } },
    },
    async ({ principal, params }) => {
      const project = await deps.ownedProject(principal.developerId, params.project_id);
      return { body: { data: (await keys.listKeys(project.id)).map(keyView) } };
    },
  );

  routes.route(
    router,
    {
      method: 'delete',
      path: '/v1/projects/:project_id/keys/:key_id',
      operationId: 'revokeKey',
      summary: 'Revoke a key (immediately on this replica, within seconds on the others)',
      tags,
      auth: 'developer',
      params: keyParams,
      responses: { 204: { description: 'Revoked' } },
    },
    async ({ principal, params }) => {
      const project = await deps.ownedProject(principal.developerId, params.project_id);
      await keys.revokeKey(project.id, params.key_id);
      await deps.keysChanged(project.id);
      return { status: 204 };
    },
  );

  return router;
}
