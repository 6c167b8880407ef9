import type { Knex } from 'knex';
import { CHANNELS } from '../../lib/channels';
import type { RouteFactory } from '../../lib/http/route';
import { createApiKeyAuthenticators } from './api-key-authenticator';
import { createKeyAuthService } from './key-auth-service';
import { createKeysStore } from './keys-store';
import { createSignRouter } from './sign-router';

/**
 * API keys on the request path: resolving a key (cached per replica) to a principal, the
 * route factory's api/secret/admin modes, and POST /v1/_sign. (The console's key routes are
 * in keys-router.ts, mounted by the console.)
 */
export function createKeysModule(deps: {
  db: Knex;
  cacheTtlMs: number;
  userTokenMaxTtlSeconds: number;
  /** The project's current signing secret (undefined: no such project). */
  signingSecretOf: (projectId: string) => Promise<string | undefined>;
}) {
  const keysStore = createKeysStore();
  const keyAuth = createKeyAuthService({
    db: deps.db,
    keysStore,
    cacheTtlMs: deps.cacheTtlMs,
    userTokenMaxTtlSeconds: deps.userTokenMaxTtlSeconds,
  });
  return {
    keyAuth,
    authenticators: createApiKeyAuthenticators(keyAuth),
    router: (routes: RouteFactory) =>
      createSignRouter({
        routes,
        signingSecretOf: deps.signingSecretOf,
        userTokenMaxTtlSeconds: deps.userTokenMaxTtlSeconds,
        async revokeUserTokens(projectId, userId) {
          const notBefore = await keysStore.revokeUserTokens(deps.db, projectId, userId);
          // This replica at once; the others drop their cached not_before on the notice.
          keyAuth.invalidate(projectId);
          await deps.db.raw('select pg_notify(?, ?)', [CHANNELS.keys, projectId]);
          return notBefore;
        },
      }),
  };
}
