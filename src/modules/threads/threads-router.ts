import { Router } from 'express';
import type { RouteFactory } from '../../lib/http/route';
import type { Idempotency } from '../idempotency/idempotency';
import {
  createThreadSchema,
  memberListQuerySchema,
  memberListSchema,
  memberParams,
  memberSchema,
  putMemberSchema,
  threadListQuerySchema,
  threadListSchema,
  threadParams,
  threadSchema,
  updateThreadSchema,
} from './threads-schemas';
import type { CreatedThread, ThreadsService } from './threads-service';

export function createThreadsRouter(deps: { idempotency: Idempotency; routes: RouteFactory; threads: ThreadsService }) {
  const { routes, threads } = deps;
  const router = Router();
  const tags = ['Threads'];

  routes.route(
    router,
    {
      method: 'post',
      path: '/v1/threads',
      operationId: 'createThread',
      idempotent: true,
      summary: 'Create a thread (a repeated dm returns the existing one)',
      tags,
      auth: 'api',
      rateClass: 'write',
      body: createThreadSchema,
      responses: {
        201: { description: 'Created', schema: threadSchema },
        200: { description: 'The existing dm', schema: threadSchema },
      },
    },
    ({ principal, body, header }) =>
      deps.idempotency.reply<CreatedThread>(
        { ...principal, header: header('idempotency-key'), route: '/v1/threads', body },
        (r) => ({ status: r.created ? 201 : 200, body: r.thread }),
        (wrap) => threads.create(principal, body, { wrap }),
      ),
  );

  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/threads',
      operationId: 'listThreads',
      summary: "The caller's threads, most recent activity (or ?sort=created: creation) first",
      tags,
      auth: 'api',
      rateClass: 'read',
      query: threadListQuerySchema,
      responses: { 200: { description: 'A page of threads', schema: threadListSchema } },
    },
    async ({ principal, query }) => ({ body: await threads.list(principal, query.limit, query.cursor, query.sort) }),
  );

  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/threads/:thread_id',
      operationId: 'getThread',
      summary: 'Read a thread',
      tags,
      auth: 'api',
      rateClass: 'read',
      params: threadParams,
      responses: { 200: { description: 'The thread', schema: threadSchema } },
    },
    async ({ principal, params }) => ({ body: await threads.get(principal, params.thread_id) }),
  );

  routes.route(
    router,
    {
      method: 'patch',
      path: '/v1/threads/:thread_id',
      operationId: 'updateThread',
      summary: 'Update title, attributes or policies (appends thread.updated)',
      tags,
      auth: 'api',
      rateClass: 'write',
      params: threadParams,
      body: updateThreadSchema,
      responses: { 200: { description: 'The updated thread', schema: threadSchema } },
    },
    async ({ principal, params, body }) => ({ body: await threads.update(principal, params.thread_id, body) }),
  );

  routes.route(
    router,
    {
      method: 'delete',
      path: '/v1/threads/:thread_id',
      operationId: 'deleteThread',
      summary: 'Soft-delete a thread (appends thread.deleted)',
      tags,
      auth: 'api',
      rateClass: 'write',
      params: threadParams,
      responses: { 204: { description: 'Deleted' } },
    },
    async ({ principal, params }) => {
      await threads.remove(principal, params.thread_id);
      return { status: 204 };
    },
  );

  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/threads/:thread_id/members',
      operationId: 'listMembers',
      summary: 'Members and their roles, a page at a time',
      description: 'By user id; `limit` 100 by default, at most 500; page on with `cursor` = next_cursor.',
      tags,
      auth: 'api',
      rateClass: 'read',
      params: threadParams,
      query: memberListQuerySchema,
      responses: { 200: { description: 'A page of members', schema: memberListSchema } },
    },
    async ({ principal, params, query }) => ({ body: await threads.members(principal, params.thread_id, query) }),
  );

  routes.route(
    router,
    {
      method: 'put',
      path: '/v1/threads/:thread_id/members/:user_id',
      operationId: 'putMember',
      summary: 'Add a member or change their role (appends member.added)',
      tags,
      auth: 'api',
      rateClass: 'write',
      params: memberParams,
      body: putMemberSchema.optional(),
      responses: {
        201: { description: 'Added', schema: memberSchema },
        200: { description: 'Role updated or unchanged', schema: memberSchema },
      },
    },
    async ({ principal, params, body }) => {
      const r = await threads.putMember(principal, params.thread_id, params.user_id, body?.role ?? 'member');
      return { status: r.created ? 201 : 200, body: r.member };
    },
  );

  routes.route(
    router,
    {
      method: 'delete',
      path: '/v1/threads/:thread_id/members/:user_id',
      operationId: 'removeMember',
      summary: 'Remove a member (appends member.removed)',
      tags,
      auth: 'api',
      rateClass: 'write',
      params: memberParams,
      responses: { 204: { description: 'Removed' } },
    },
    async ({ principal, params }) => {
      await threads.removeMember(principal, params.thread_id, params.user_id);
      return { status: 204 };
    },
  );

  return router;
}
