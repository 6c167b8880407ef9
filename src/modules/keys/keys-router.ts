import { Router } from 'express';
import { z } from '../../lib/zod';
import { userIdSchema } from '../../lib/ids';
import type { RouteFactory } from '../../lib/http/route';
import type { ProjectsStore } from '../projects/projects-store';
import type { Knex } from 'knex';
import { signUserId } from './key-auth-service';
import { notFound } from '../../lib/errors';

/** POST /v1/_sign: a backend signs its end user's id for use with a publishable key. */
export function createSignRouter(deps: { db: Knex; routes: RouteFactory; projectsStore: ProjectsStore }) {
  const router = Router();
  deps.routes.route(
    router,
    {
      method: 'post',
      path: '/v1/_sign',
      summary: 'Sign an end-user id (secret keys only)',
      tags: ['Auth'],
      auth: 'secret',
      rateClass: 'auth',
      body: z.object({ user_id: userIdSchema }).strict().openapi('SignRequest'),
      responses: {
        200: {
          description: 'The signature to send as X-User-Signature',
          schema: z.object({ user_id: z.string(), signature: z.string() }),
        },
      },
    },
    async ({ principal, body }) => {
      const project = await deps.projectsStore.get(deps.db, principal.projectId);
      if (!project) throw notFound('project');
      return { body: { user_id: body.user_id, signature: signUserId(project.signing_secret, body.user_id) } };
    },
  );
  return router;
}
