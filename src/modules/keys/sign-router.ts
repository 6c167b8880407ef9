import { Router } from 'express';
import { z } from '../../lib/zod';
import { userIdSchema } from '../../lib/ids';
import type { RouteFactory } from '../../lib/http/route';
import { signUserId, signUserToken } from './key-auth-service';
import { badRequest, notFound } from '../../lib/errors';

/**
 * POST /v1/_sign: a backend signs its end user's id (the permanent HMAC) and, on request, an
 * expiring user token, for use with a publishable key. POST /v1/users/{user_id}/revoke-tokens
 * ends every user token issued before now.
 */
export function createSignRouter(deps: {
  routes: RouteFactory;
  /** The project's current signing secret (undefined: no such project). */
  signingSecretOf: (projectId: string) => Promise<string | undefined>;
  userTokenMaxTtlSeconds: number;
  revokeUserTokens: (projectId: string, userId: string) => Promise<Date>;
}) {
  const router = Router();
  deps.routes.route(
    router,
    {
      method: 'post',
      path: '/v1/_sign',
      operationId: 'signUser',
      summary: 'Sign an end-user id, and optionally mint an expiring user token (secret keys only)',
      description:
        'The signature (X-User-Signature) never expires. With `expires_in`, also returns `token`, a signed user token (X-User-Token: HS256 JWT under the signing secret with `user_id`, `iat`, `exp`) that stops working at `expires_at` or when the user is revoked. Backends can mint the same tokens offline with any JWT library.',
      tags: ['Auth'],
      auth: 'secret',
      rateClass: 'auth',
      body: z
        .object({
          user_id: userIdSchema,
          expires_in: z.number().int().min(1).optional().openapi({
            description: 'Seconds the user token lives, at most USER_TOKEN_MAX_TTL_SECONDS (default 30 days)',
          }),
        })
        .strict()
        .openapi('SignRequest'),
      responses: {
        200: {
          description: 'The signature to send as X-User-Signature (and a token for X-User-Token, when asked)',
          schema: z.object({
            user_id: z.string(),
            signature: z.string(),
            token: z.string().optional(),
            expires_at: z.string().optional(),
          }),
        },
      },
    },
    async ({ principal, body }) => {
      const secret = await deps.signingSecretOf(principal.projectId);
      if (!secret) throw notFound('project');
      const signed = { user_id: body.user_id, signature: signUserId(secret, body.user_id) };
      if (body.expires_in === undefined) return { body: signed };
      if (body.expires_in > deps.userTokenMaxTtlSeconds)
        throw badRequest(`expires_in may be at most ${deps.userTokenMaxTtlSeconds} s (USER_TOKEN_MAX_TTL_SECONDS).`);
      const now = Date.now();
      return {
        body: {
          ...signed,
          token: signUserToken(secret, body.user_id, body.expires_in, now),
          expires_at: new Date((Math.floor(now / 1000) + body.expires_in) * 1000).toISOString(),
        },
      };
    },
  );

  deps.routes.route(
    router,
    {
      method: 'post',
      path: '/v1/users/:user_id/revoke-tokens',
      operationId: 'revokeUserTokens',
      summary: "Revoke a user's signed user tokens issued before now (secret keys only)",
      description:
        "Sets the user's `not_before` to now: every X-User-Token issued (iat) before it is refused on every replica within KEY_CACHE_TTL_MS (at once on this one). Mint new tokens after it. The permanent X-User-Signature is not affected (rotate the signing secret for that).",
      tags: ['Auth'],
      auth: 'secret',
      rateClass: 'write',
      params: z.object({ user_id: userIdSchema }),
      responses: {
        200: {
          description: 'The new not_before',
          schema: z.object({ user_id: z.string(), not_before: z.string() }).openapi('UserTokensRevoked'),
        },
      },
    },
    async ({ principal, params }) => {
      const notBefore = await deps.revokeUserTokens(principal.projectId, params.user_id);
      return { body: { user_id: params.user_id, not_before: notBefore.toISOString() } };
    },
  );
  return router;
}
