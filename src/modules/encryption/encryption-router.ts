import { Router } from 'express';
import type { RouteFactory } from '../../lib/http/route';
import { idSchema } from '../../lib/ids';
import { z } from '../../lib/zod';
import { threadParams } from '../threads/threads-schemas';
import type { EncryptionService } from './encryption-service';

const rotationSchema = z
  .object({
    id: z.string(),
    kek_id: z.string(),
    kek_version: z.number().int(),
    state: z.enum(['running', 'done', 'failed']),
    total: z.number().int(),
    rewrapped: z.number().int(),
    retired_versions: z.array(z.number().int()),
    error: z.string().nullable(),
    started_at: z.string(),
    finished_at: z.string().nullable(),
  })
  .openapi('KeyRotation');

const statusSchema = z
  .object({
    kms: z.object({ mode: z.enum(['embedded', 'external']), reachable: z.boolean() }),
    kek: z
      .object({
        current: z.number().int().nullable(),
        versions: z.array(z.object({ version: z.number().int(), state: z.string(), created_at: z.string() })),
      })
      .nullable(),
    keys_by_kek_version: z.record(z.string(), z.number().int()),
    rotations: z.array(rotationSchema),
  })
  .openapi('EncryptionStatus');

const destroyedSchema = z
  .object({
    thread_id: z.string(),
    destroyed_keys: z.array(z.string()),
    seq: z.number().int(),
    destroyed_at: z.string(),
  })
  .openapi('ThreadKeysDestroyed');

/** Project admin (ak_ keys): KEK rotation with visible progress, and erasure by key destruction. */
export function createEncryptionRouter(deps: { routes: RouteFactory; encryption: EncryptionService }) {
  const { routes, encryption } = deps;
  const router = Router();
  const tags = ['Admin'];

  routes.route(
    router,
    {
      method: 'post',
      path: '/v1/admin/encryption/rotate',
      operationId: 'rotateKek',
      summary: "Rotate the project's KEK: a new version, then every data key rewrapped in the background",
      description:
        'Reads and writes continue meanwhile. Poll GET /v1/admin/encryption/rotations/{rotation_id} for progress.',
      tags,
      auth: 'admin',
      rateClass: 'write',
      responses: { 202: { description: 'Rotation started', schema: rotationSchema } },
    },
    async ({ principal }) => {
      const { done: _done, ...rotation } = await encryption.rotate(principal.projectId, principal.keyId);
      return { status: 202, body: rotation, headers: { location: `/v1/admin/encryption/rotations/${rotation.id}` } };
    },
  );

  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/admin/encryption/rotations/:rotation_id',
      operationId: 'getKekRotation',
      summary: 'Progress of a KEK rotation',
      tags,
      auth: 'admin',
      rateClass: 'read',
      params: z.object({ rotation_id: idSchema }),
      responses: { 200: { description: 'The rotation', schema: rotationSchema } },
    },
    async ({ principal, params }) => ({ body: await encryption.rotation(principal.projectId, params.rotation_id) }),
  );

  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/admin/encryption',
      operationId: 'getEncryptionState',
      summary: "The project's encryption state: KMS, KEK versions, data keys per KEK version, recent rotations",
      tags,
      auth: 'admin',
      rateClass: 'read',
      responses: { 200: { description: 'Encryption status', schema: statusSchema } },
    },
    async ({ principal }) => ({ body: await encryption.status(principal.projectId) }),
  );

  routes.route(
    router,
    {
      method: 'delete',
      path: '/v1/admin/threads/:thread_id/keys',
      operationId: 'destroyThreadKeys',
      summary: "Erase a thread's encrypted content by destroying its data keys (audited)",
      description:
        'Encrypted values of the thread become unreadable everywhere (backups included); reads show {"$erased":"key_destroyed"} in their place. Seqs, authors and timestamps stay; a keys.destroyed event is appended.',
      tags,
      auth: 'admin',
      rateClass: 'write',
      params: threadParams,
      responses: { 200: { description: 'Keys destroyed', schema: destroyedSchema } },
    },
    async ({ principal, params }) => ({ body: await encryption.destroyThreadKeys(principal, params.thread_id) }),
  );

  return router;
}
