import type { Knex } from 'knex';
import { createKeysStore } from '../keys/keys-store';
import { createProjectsService } from './projects-service';
import { createProjectsStore } from './projects-store';

/**
 * Projects and their settings. Its routes are part of the console (mounted there, behind a
 * developer session); the data plane only calls the service (signing secrets, settings).
 */
export function createProjectsModule(deps: {
  db: Knex;
  signingSecretGraceSeconds: number;
  checkSettings?: Parameters<typeof createProjectsService>[0]['checkSettings'];
}) {
  return {
    projects: createProjectsService({
      db: deps.db,
      projectsStore: createProjectsStore(),
      keysStore: createKeysStore(),
      signingSecretGraceSeconds: deps.signingSecretGraceSeconds,
      checkSettings: deps.checkSettings,
    }),
  };
}
