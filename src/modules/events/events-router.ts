import { Router } from 'express';
import type { Knex } from 'knex';
import type { RouteFactory } from '../../lib/http/route';
import type { ThreadsService } from '../threads/threads-service';
import { threadParams } from '../threads/threads-schemas';
import { eventPageSchema, eventsQuerySchema } from './events-schemas';
import type { EventsStore } from './events-store';

export function createEventsRouter(deps: {
  db: Knex;
  routes: RouteFactory;
  threads: Pick<ThreadsService, 'authorize'>;
  eventsStore: EventsStore;
}) {
  const router = Router();
  deps.routes.route(
    router,
    {
      method: 'get',
      path: '/v1/threads/:thread_id/events',
      summary: 'The raw thread log after a seq, for sync, export and replay',
      tags: ['Events'],
      auth: 'api',
      rateClass: 'read',
      params: threadParams,
      query: eventsQuerySchema,
      responses: { 200: { description: 'Events in seq order', schema: eventPageSchema } },
    },
    async ({ principal, params, query }) => {
      await deps.threads.authorize(deps.db, principal, params.thread_id, 'read');
      const rows = await deps.eventsStore.after(
        deps.db,
        principal.projectId,
        params.thread_id,
        query.after_seq,
        query.limit + 1,
      );
      return { body: { data: rows.slice(0, query.limit), has_more: rows.length > query.limit } };
    },
  );
  return router;
}
