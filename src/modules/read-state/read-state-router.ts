import { Router } from 'express';
import type { RouteFactory } from '../../lib/http/route';
import { threadParams } from '../threads/threads-schemas';
import { markReadSchema, readMarkSchema, unreadListSchema, unreadQuerySchema } from './read-state-schemas';
import type { ReadStateService } from './read-state-service';

export function createReadStateRouter(deps: { routes: RouteFactory; readState: ReadStateService }) {
  const { routes, readState } = deps;
  const router = Router();
  const tags = ['Read state'];

  routes.route(
    router,
    {
      method: 'post',
      path: '/v1/threads/:thread_id/read',
      operationId: 'markRead',
      errors: [422],
      summary: "Move the user's read marker forward (never back)",
      description: 'Needs a user (X-User-ID). A seq lower than the stored mark leaves it unchanged.',
      tags,
      auth: 'api',
      rateClass: 'write',
      params: threadParams,
      body: markReadSchema,
      responses: { 200: { description: 'The stored mark and the unread count after it', schema: readMarkSchema } },
    },
    async ({ principal, params, body }) => ({ body: await readState.markRead(principal, params.thread_id, body.seq) }),
  );

  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/me/unread',
      operationId: 'getUnreadCounts',
      summary: "Unread counts for the user's threads, a page at a time",
      description:
        'Unread = messages not deleted, by other authors, with seq past the read mark (capped at 10,000 per thread). ' +
        'Most recent activity first (ties by thread id); `limit` 100 by default, at most 500; page on with `cursor` = next_cursor.',
      tags,
      auth: 'api',
      rateClass: 'read',
      query: unreadQuerySchema,
      responses: { 200: { description: 'Unread per thread, most recent activity first', schema: unreadListSchema } },
    },
    async ({ principal, query }) => ({ body: await readState.unread(principal, query) }),
  );

  return router;
}
