import type { Knex } from 'knex';
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
  /** The project's current signing secret (undefined: no such project). */
  signingSecretOf: (projectId: string) => Promise<string | undefined>;
}) {
  const keyAuth = createKeyAuthService({ db: deps.db, keysStore: createKeysStore(), cacheTtlMs: deps.cacheTtlMs });
  return {
    keyAuth,
    authenticators: createApiKeyAuthenticators(keyAuth),
    router: (routes: RouteFactory) => createSignRouter({ routes, signingSecretOf: deps.signingSecretOf }),
  };
}
