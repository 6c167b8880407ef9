import { Router } from 'express';
import type { Knex } from 'knex';
import { purgedBelowHorizon } from '../../lib/errors';
import type { RouteFactory } from '../../lib/http/route';
import type { ThreadsService } from '../threads/threads-service';
import { threadParams } from '../threads/threads-schemas';
import { eventPageSchema, eventsQuerySchema, type EventView } from './events-schemas';
import type { EventsStore } from './events-store';

export function createEventsRouter(deps: {
  db: Knex;
  routes: RouteFactory;
  threads: Pick<ThreadsService, 'authorize'>;
  eventsStore: EventsStore;
  /** Opens encrypted bodies (field encryption). */
  openEvents: (projectId: string, threadId: string, events: EventView[]) => Promise<EventView[]>;
}) {
  const router = Router();
  deps.routes.route(
    router,
    {
      method: 'get',
      path: '/v1/threads/:thread_id/events',
      operationId: 'listEvents',
      errors: [410],
      summary: 'The raw thread log after a seq, for sync, export and replay',
      tags: ['Events'],
      auth: 'api',
      rateClass: 'read',
      params: threadParams,
      query: eventsQuerySchema,
      description:
        'A thread whose prefix was purged by retention answers 410 (problem type …/purged, with `purged_through_seq`) when after_seq is below its horizon.',
      responses: { 200: { description: 'Events in seq order', schema: eventPageSchema } },
    },
    async ({ principal, params, query }) => {
      const thread = await deps.threads.authorize(deps.db, principal, params.thread_id, 'read');
      if (query.after_seq < Number(thread.purged_through_seq))
        throw purgedBelowHorizon(params.thread_id, Number(thread.purged_through_seq));
      const rows = await deps.eventsStore.after(
        deps.db,
        principal.projectId,
        params.thread_id,
        query.after_seq,
        query.limit + 1,
      );
      // A purge that committed between the two reads shows as a gap (or as nothing where events were).
      if (
        (rows.length > 0 && rows[0].seq !== query.after_seq + 1) ||
        (rows.length === 0 && query.after_seq < Number(thread.last_seq))
      ) {
        const now = await deps.threads.authorize(deps.db, principal, params.thread_id, 'read');
        throw purgedBelowHorizon(params.thread_id, Number(now.purged_through_seq));
      }
      const data = await deps.openEvents(principal.projectId, params.thread_id, rows.slice(0, query.limit));
      return { body: { data, has_more: rows.length > query.limit } };
    },
  );
  return router;
}
