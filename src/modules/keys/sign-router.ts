import { Router } from 'express';
import { z } from '../../lib/zod';
import { userIdSchema } from '../../lib/ids';
import type { RouteFactory } from '../../lib/http/route';
import { signUserId } from './key-auth-service';
import { notFound } from '../../lib/errors';

/** POST /v1/_sign: a backend signs its end user's id for use with a publishable key. */
export function createSignRouter(deps: {
  routes: RouteFactory;
  /** The project's current signing secret (undefined: no such project). */
  signingSecretOf: (projectId: string) => Promise<string | undefined>;
}) {
  const router = Router();
  deps.routes.route(
    router,
    {
      method: 'post',
      path: '/v1/_sign',
      operationId: 'signUser',
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
      const secret = await deps.signingSecretOf(principal.projectId);
      if (!secret) throw notFound('project');
      return { body: { user_id: body.user_id, signature: signUserId(secret, body.user_id) } };
    },
  );
  return router;
}
