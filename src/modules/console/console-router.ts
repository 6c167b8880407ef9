import path from 'node:path';
import express, { Router, type Response } from 'express';
import { z } from '../../lib/zod';
import type { ApiPrincipal, RouteFactory } from '../../lib/http/route';
import {
  messagePageSchema,
  messageParams,
  messageVersionListSchema,
  pageQuerySchema,
  versionsQuerySchema,
} from '../messages/messages-schemas';
import type { MessagesService } from '../messages/messages-service';
import type { ProjectsService } from '../projects/projects-service';
import { threadListQuerySchema, threadListSchema, threadParams } from '../threads/threads-schemas';
import type { ThreadsService } from '../threads/threads-service';

const PUBLIC_DIR = path.join(__dirname, 'public');
const CHART_JS = path.join(path.dirname(require.resolve('chart.js')), 'chart.umd.min.js');

// Everything the console loads comes from this server; avatars may come from the identity provider.
const CONSOLE_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: https:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const projectParams = z.object({ project_id: z.string().min(1).max(64) });

/**
 * GET /console (the web console: static HTML, CSS and JS from this module, Chart.js from its
 * npm package) and the read-only thread browser it uses, scoped to the developer's project.
 */
export function createConsoleRouter(deps: {
  routes: RouteFactory;
  projects: Pick<ProjectsService, 'getOwned'>;
  threads: Pick<ThreadsService, 'list'>;
  messages: Pick<MessagesService, 'page' | 'versions'>;
}) {
  const router = Router();
  const sendPage = (res: Response) => {
    res.setHeader('Content-Security-Policy', CONSOLE_CSP);
    res.setHeader('Cache-Control', 'no-cache');
    res.sendFile(path.join(PUBLIC_DIR, 'index.html'));
  };
  router.get('/console', (_req, res) => sendPage(res));
  router.use('/console/assets', express.static(PUBLIC_DIR, { index: false, maxAge: '5m' }));
  router.get('/console/vendor/chart.umd.min.js', (_req, res) => {
    res.sendFile(CHART_JS, { maxAge: '1d' });
  });

  /** The project's data as its secret key would see it: read-only, every thread. */
  async function readerFor(developerId: string, projectId: string): Promise<ApiPrincipal> {
    const project = await deps.projects.getOwned(developerId, projectId);
    return {
      type: 'api',
      projectId: project.id,
      keyId: 'console',
      kind: 'secret',
      userId: null,
      settings: project.settings ?? {},
    };
  }
  const tags = ['Console'];

  deps.routes.route(
    router,
    {
      method: 'get',
      path: '/v1/projects/:project_id/threads',
      operationId: 'consoleListThreads',
      summary: "Browse a project's threads (console, read-only)",
      tags,
      auth: 'developer',
      params: projectParams,
      query: threadListQuerySchema,
      responses: { 200: { description: 'Threads by latest activity', schema: threadListSchema } },
    },
    async ({ principal, params, query }) => {
      const reader = await readerFor(principal.developerId, params.project_id);
      return { body: await deps.threads.list(reader, query.limit, query.cursor, query.sort) };
    },
  );

  deps.routes.route(
    router,
    {
      method: 'get',
      path: '/v1/projects/:project_id/threads/:thread_id/messages',
      operationId: 'consoleListMessages',
      summary: "Browse a thread's messages (console, read-only)",
      tags,
      auth: 'developer',
      params: projectParams.merge(threadParams),
      query: pageQuerySchema,
      responses: { 200: { description: 'A page of messages', schema: messagePageSchema } },
    },
    async ({ principal, params, query }) => {
      const reader = await readerFor(principal.developerId, params.project_id);
      return { body: await deps.messages.page(reader, params.thread_id, query) };
    },
  );

  deps.routes.route(
    router,
    {
      method: 'get',
      path: '/v1/projects/:project_id/threads/:thread_id/messages/:message_id/versions',
      operationId: 'consoleListMessageVersions',
      summary: "A message's versions (console, read-only)",
      tags,
      auth: 'developer',
      params: projectParams.merge(messageParams),
      query: versionsQuerySchema,
      responses: {
        200: { description: 'A page of versions, oldest first', schema: messageVersionListSchema },
      },
    },
    async ({ principal, params, query }) => {
      const reader = await readerFor(principal.developerId, params.project_id);
      return { body: await deps.messages.versions(reader, params.thread_id, params.message_id, query) };
    },
  );

  return router;
}
