import type { Knex } from 'knex';
import type { RouteFactory } from '../../lib/http/route';
import type { ThreadsService } from '../threads/threads-service';
import { createReadStateRouter } from './read-state-router';
import { createReadStateService } from './read-state-service';
import type { ReadStateStore } from './read-state-store';

/**
 * Read marks and unread counts: POST /v1/threads/:id/read and GET /v1/me/unread. The store is
 * passed in because threads read unread counts from it too (built before this module).
 */
export function createReadStateModule(deps: {
  db: Knex;
  threads: Pick<ThreadsService, 'authorize'>;
  store: ReadStateStore;
}) {
  const readState = createReadStateService(deps);
  return {
    readState,
    router: (routes: RouteFactory) => createReadStateRouter({ routes, readState }),
  };
}
