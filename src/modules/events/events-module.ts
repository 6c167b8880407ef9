import type { Knex } from 'knex';
import type { RouteFactory } from '../../lib/http/route';
import type { ThreadsService } from '../threads/threads-service';
import { createEventsRouter } from './events-router';
import { createEventsStore } from './events-store';

/** The raw thread log over REST (GET /v1/threads/{id}/events). */
export function createEventsModule(deps: {
  db: Knex;
  threads: Pick<ThreadsService, 'authorize'>;
  openEvents: Parameters<typeof createEventsRouter>[0]['openEvents'];
}) {
  return {
    router: (routes: RouteFactory) =>
      createEventsRouter({
        db: deps.db,
        routes,
        threads: deps.threads,
        eventsStore: createEventsStore(),
        openEvents: deps.openEvents,
      }),
  };
}
