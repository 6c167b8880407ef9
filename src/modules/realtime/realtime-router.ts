import type { IncomingMessage } from 'node:http';
import { Router } from 'express';
import type { Knex } from 'knex';
import { z } from '../../lib/zod';
import { AppError, badRequest, isAppError } from '../../lib/errors';
import { problemSchema } from '../../lib/http/problem';
import type { ApiPrincipal, RouteFactory } from '../../lib/http/route';
import type { ThreadsService } from '../threads/threads-service';
import { threadParams } from '../threads/threads-schemas';
import { realtimeTokenRequestSchema, realtimeTokenSchema, tailQuerySchema } from './realtime-schemas';
import type { RealtimeTokens } from './realtime-token';
import { openSseStream } from './sse-stream';
import type { TailHub } from './tail-hub';
import type { TrackConnection } from './track-connection';

export function createRealtimeRouter(deps: {
  db: Knex;
  routes: RouteFactory;
  threads: Pick<ThreadsService, 'authorize'>;
  hub: TailHub;
  tokens: RealtimeTokens;
  track: TrackConnection;
  heartbeatMs: number;
  maxBufferedBytes: number;
  slowConsumerMs: number;
  openStreams: Set<() => void>;
  /** Throws 429 when the caller is at its live-connection cap. */
  admitConnection?: (principal: ApiPrincipal) => void;
  authFailed?: (req: IncomingMessage, error: unknown) => Promise<void>;
  /** Counts a live tail in the thread's presence (as a WebSocket subscription is); returns the leave function. */
  joinPresence?: (principal: ApiPrincipal, threadId: string) => () => void;
}) {
  const { db, routes, threads } = deps;
  const router = Router();
  const tags = ['Realtime'];

  // EventSource cannot send headers: a realtime token in ?token= authenticates the tail instead
  // (the app's API authenticator takes the principal from here; guards then run as usual).
  router.use('/v1/threads/:thread_id/tail', (req, res, next) => {
    const token = req.query.token;
    if (typeof token !== 'string' || req.get('authorization') || req.get('x-api-key')) return next();
    deps.tokens.verify(token).then(
      (principal) => {
        res.locals.realtimePrincipal = principal;
        next();
      },
      (e: unknown) => (deps.authFailed ? deps.authFailed(req, e) : Promise.resolve()).then(() => next(e), next),
    );
  });

  routes.stream(
    router,
    {
      method: 'get',
      path: '/v1/threads/:thread_id/tail',
      operationId: 'tailThread',
      headers: z.object({
        'Last-Event-ID': z
          .string()
          .optional()
          .openapi({ description: 'Resume after this seq (EventSource sends it on reconnect); wins over ?after_seq=' }),
      }),
      summary: 'Live tail as Server-Sent Events',
      description:
        'Replays stored events after Last-Event-ID (or ?after_seq=), sends `event: ready`, then live events; `id:` is the seq and `data:` the event. ' +
        'Heartbeat comments every few seconds. `event: closed` ends the stream when the user loses access or the thread is deleted; ' +
        '`event: reconnect` asks the client to reconnect (server restart, or the client fell too far behind) and resume with Last-Event-ID.',
      tags,
      auth: 'api',
      rateClass: 'read',
      params: threadParams,
      query: tailQuerySchema,
      responses: { 200: { description: 'An event stream', schema: z.string(), contentType: 'text/event-stream' } },
    },
    async ({ principal, params, query, header }, _req, res) => {
      let afterSeq = query.after_seq;
      const lastEventId = header('last-event-id')?.trim();
      if (lastEventId) {
        if (!/^\d{1,15}$/.test(lastEventId)) throw badRequest('Last-Event-ID must be a seq: a non-negative integer.');
        afterSeq = Number(lastEventId);
      }
      const thread = await threads.authorize(db, principal, params.thread_id, 'read');
      deps.admitConnection?.(principal);
      const lastSeq = Number(thread.last_seq);
      openSseStream(res, {
        hub: deps.hub,
        heartbeatMs: deps.heartbeatMs,
        maxBufferedBytes: deps.maxBufferedBytes,
        slowConsumerMs: deps.slowConsumerMs,
        open: deps.openStreams,
        track: (close) => {
          const untrack = deps.track(principal, close);
          const leave = deps.joinPresence?.(principal, params.thread_id);
          return () => {
            untrack();
            leave?.();
          };
        },
        subscription: {
          projectId: principal.projectId,
          threadId: params.thread_id,
          afterSeq: afterSeq ?? lastSeq,
          threadLastSeq: lastSeq,
          purgedThroughSeq: Number(thread.purged_through_seq ?? 0),
          userId: principal.userId,
          recheck: () =>
            threads.authorize(db, principal, params.thread_id, 'read').then(
              () => true,
              (e) => (isAppError(e) ? false : Promise.reject(e)),
            ),
        },
      });
    },
  );

  // A plain GET of the WebSocket endpoint (no Upgrade header; upgrades never reach express).
  router.get('/v1/ws', (_req, res, next) => {
    res.setHeader('Upgrade', 'websocket');
    res.setHeader('Connection', 'Upgrade');
    next();
  });
  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/ws',
      operationId: 'openWebSocket',
      summary: 'WebSocket endpoint (see docs/REALTIME.md); a request without an Upgrade is answered 426',
      description:
        'Open with a WebSocket client (`Upgrade: websocket`), authenticated by key headers or `?token=` (POST /v1/realtime/token). A plain HTTP GET is answered `426 Upgrade Required`.',
      tags,
      auth: 'none',
      responses: {
        426: { description: 'Not a WebSocket upgrade', schema: problemSchema, contentType: 'application/problem+json' },
      },
    },
    () => {
      throw new AppError(
        'upgrade_required',
        'GET /v1/ws is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket).',
      );
    },
  );

  routes.route(
    router,
    {
      method: 'post',
      path: '/v1/realtime/token',
      operationId: 'createRealtimeToken',
      summary: 'A short-lived token for GET /v1/ws?token= (for browsers, which cannot set headers on a WebSocket)',
      description:
        'Needs a user (X-User-ID, signed with publishable keys). The token acts as that user with read/write policies applied, even when minted with a secret key.',
      tags,
      auth: 'api',
      rateClass: 'auth',
      body: realtimeTokenRequestSchema,
      responses: { 201: { description: 'The token', schema: realtimeTokenSchema } },
    },
    async ({ principal, body }) => ({ status: 201, body: await deps.tokens.issue(principal, body?.expires_in) }),
  );

  return router;
}
