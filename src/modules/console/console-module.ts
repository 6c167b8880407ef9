import { Router } from 'express';
import type { Knex } from 'knex';
import type { Config } from '../../config';
import { unavailable } from '../../lib/errors';
import type { RouteFactory } from '../../lib/http/route';
import type { Logger } from '../../lib/logger';
import { createAuthRouter } from '../auth/auth-router';
import { createDeveloperAuthenticator } from '../auth/developer-authenticator';
import { resolveSessionSecret } from '../auth/session-secret';
import { createSessionTokens } from '../auth/session-tokens';
import { createDevelopersService } from '../developers/developers-service';
import { createDevelopersStore } from '../developers/developers-store';
import type { KeyAuthService } from '../keys/key-auth-service';
import { createKeysRouter } from '../keys/keys-router';
import type { MessagesService } from '../messages/messages-service';
import { createProjectsRouter } from '../projects/projects-router';
import type { ProjectsService } from '../projects/projects-service';
import type { ThreadsService } from '../threads/threads-service';
import type { UsageCounter } from '../usage/usage-counter';
import { createConsoleRouter } from './console-router';

// However often a session slides, the developer signs in with the provider again after this.
const SESSION_MAX_AGE_SECONDS = 7 * 86_400;

/**
 * Everything a developer touches: Google sign-in, the session, the management API and the web
 * console. `authenticate` is the route factory's 'developer' mode; `start` resolves the
 * session signing key before the replica serves.
 */
export function createConsoleModule(deps: {
  config: Config;
  db: Knex;
  logger: Logger;
  keyAuth: Pick<KeyAuthService, 'invalidate'>;
  projects: ProjectsService;
  threads: ThreadsService;
  messages: MessagesService;
  usage: UsageCounter;
}) {
  const { config, db, logger } = deps;
  let secret: string | null = null;
  const sessions = createSessionTokens({
    secret: () => {
      if (!secret) throw unavailable('The server is still starting; retry shortly.');
      return secret;
    },
    ttlSeconds: config.SESSION_TTL_SECONDS,
    maxAgeSeconds: SESSION_MAX_AGE_SECONDS,
  });
  const developers = createDevelopersService({ db, developersStore: createDevelopersStore() });

  return {
    developers,
    sessions,
    authenticate: createDeveloperAuthenticator({ sessions, developers, publicUrl: config.PUBLIC_URL }),

    router(routes: RouteFactory) {
      const router = Router();
      router.use(createAuthRouter({ routes, config, sessions, developers, logger }));
      const { projects } = deps;
      // Local caches first (immediate on this replica), then the other replicas.
      const keysChanged = async (projectId: string) => {
        deps.keyAuth.invalidate(projectId);
        await projects.notifyKeysChanged(projectId);
      };
      router.use(createProjectsRouter({ routes, projects, developers, usage: deps.usage, keysChanged }));
      router.use(createKeysRouter({ routes, ownedProject: projects.getOwned, keys: projects, keysChanged }));
      router.use(
        createConsoleRouter({ routes, projects: deps.projects, threads: deps.threads, messages: deps.messages }),
      );
      return router;
    },

    async start() {
      secret = await resolveSessionSecret({ db, config, logger });
    },
  };
}
