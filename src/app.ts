import cookieParser from 'cookie-parser';
import express, { type Express } from 'express';
import helmet from 'helmet';
import type { Server } from 'node:http';
import { hostname } from 'node:os';
import type { Knex } from 'knex';
import type { Config } from './config';
import { notFound } from './lib/errors';
import { errorMiddleware } from './lib/http/problem';
import { requestId } from './lib/http/request-id';
import { requestContextGuard, requestLog } from './lib/http/request-log';
import { createMetrics, createMetricsRouter } from './lib/metrics';
import { attachQueryTelemetry } from './lib/query-telemetry';
import { answerClientErrors } from './lib/http/client-error';
import { createRouteFactory, type Guard, type Principal } from './lib/http/route';
import type { Logger } from './lib/logger';
import { createRegistry } from './lib/openapi';
import { createPgListener } from './lib/pg-listener';
import { createAdminRouter } from './modules/admin/admin-router';
import { createConsoleModule } from './modules/console/console-module';
import { createEventsRouter } from './modules/events/events-router';
import { createEventsStore } from './modules/events/events-store';
import { createIdempotency } from './modules/idempotency/idempotency';
import { createIngestPipeline } from './modules/ingest/ingest-pipeline';
import { knexTransactionRunner } from './modules/ingest/transaction-runner';
import { commitScope, createThreadLog } from './modules/thread-log/thread-log';
import { createApiKeyAuthenticators } from './modules/keys/api-key-authenticator';
import { createKeyAuthService } from './modules/keys/key-auth-service';
import { createSignRouter } from './modules/keys/keys-router';
import { createKeysStore } from './modules/keys/keys-store';
import { createMessagesRouter } from './modules/messages/messages-router';
import { createMessagesService } from './modules/messages/messages-service';
import { createMessagesStore } from './modules/messages/messages-store';
import { createProjectsService } from './modules/projects/projects-service';
import { createProjectsStore } from './modules/projects/projects-store';
import { createSystemRouter, type ReadinessCheck } from './modules/system/system-router';
import { createThreadsRouter } from './modules/threads/threads-router';
import { createThreadsService } from './modules/threads/threads-service';
import { createThreadsStore } from './modules/threads/threads-store';
import { createReadStateRouter } from './modules/read-state/read-state-router';
import { createReadStateService } from './modules/read-state/read-state-service';
import { createReadStateStore } from './modules/read-state/read-state-store';
import { createRealtimeModule } from './modules/realtime/realtime-module';
import { ipAllowlistGuard, originGuard } from './modules/guards/access-guards';
import { apiCors } from './modules/guards/api-cors';
import { watchKeyChanges } from './modules/guards/key-change-listener';
import { createRateLimitModule } from './modules/rate-limit/rate-limit-guard';
import { createUsageModule } from './modules/usage/usage-module';
import { createRetentionModule } from './modules/retention/retention-module';
import { createExportModule } from './modules/export/export-module';

export interface AppDeps {
  config: Config;
  db: Knex;
  logger: Logger;
  /** For the replica's one LISTEN connection (outside the pool). */
  databaseUrl: string;
}

/** Composition root: config → db → stores → services → routers. */
export function createApp({ config, db, logger, databaseUrl }: AppDeps) {
  const registry = createRegistry();
  const keysStore = createKeysStore();
  const projectsStore = createProjectsStore();
  const threadsStore = createThreadsStore();
  const messagesStore = createMessagesStore();
  const eventsStore = createEventsStore();

  const listener = createPgListener({ url: databaseUrl, logger });
  const metrics = createMetrics();
  metrics.watchPool(db);
  const detachQueryTelemetry = attachQueryTelemetry(db, {
    logger,
    metrics,
    options: { slowMs: config.SLOW_QUERY_MS, sampleRate: config.SLOW_QUERY_SAMPLE_RATE },
  });
  const log = createThreadLog();
  const ingest = createIngestPipeline({
    runner: knexTransactionRunner(db),
    logger,
    options: {
      maxBatch: config.INGEST_MAX_BATCH,
      maxWaitMs: config.INGEST_MAX_WAIT_MS,
      lanes: config.INGEST_CONCURRENCY,
      queueLimit: config.INGEST_QUEUE_LIMIT,
    },
    scope: commitScope,
    finish: log.notify,
  });
  ingest.observe(metrics.observeGroup);
  const idempotency = createIdempotency({ db });
  const keyAuth = createKeyAuthService({ db, keysStore, cacheTtlMs: config.KEY_CACHE_TTL_MS });
  const projects = createProjectsService({
    db,
    projectsStore,
    keysStore,
    signingSecretGraceSeconds: config.SIGNING_SECRET_GRACE_SECONDS,
  });
  const readStateStore = createReadStateStore();
  const threads = createThreadsService({
    db,
    threadsStore,
    ingest,
    log,
    unreadCounts: (p, u, ids) => readStateStore.forThreads(db, p, u, ids),
  });
  const readState = createReadStateService({ db, threads, store: readStateStore });
  const messages = createMessagesService({
    db,
    ingest,
    log,
    threads,
    messagesStore,
    maxMessageBytes: config.MAX_MESSAGE_BYTES,
  });
  const usage = createUsageModule({ db, logger });
  const developerConsole = createConsoleModule({ config, db, logger, keyAuth, projects, threads, messages, usage });

  const apiKeys = createApiKeyAuthenticators(keyAuth);
  const guards: Guard[] = [requestContextGuard];
  const rateLimits = createRateLimitModule({ db, logger, config });
  guards.push(ipAllowlistGuard, originGuard, rateLimits.guard);
  void watchKeyChanges({
    listener,
    invalidate: (projectId) => (keyAuth.invalidate(projectId), rateLimits.invalidate(projectId)),
  });
  guards.push(usage.guard);
  const readinessChecks: ReadinessCheck[] = [{ name: 'listen', check: () => listener.connected }];
  const routes = createRouteFactory({
    registry,
    guards,
    maxJsonDepth: config.MAX_JSON_DEPTH,
    authenticate: {
      none: async (): Promise<Principal> => ({ type: 'anonymous' }),
      // A verified realtime token (SSE ?token=, set by the realtime router) stands in for key headers.
      api: async (req, res) => (res.locals.realtimePrincipal as Principal | undefined) ?? apiKeys.api(req),
      secret: apiKeys.secret,
      admin: apiKeys.admin,
      developer: developerConsole.authenticate,
    },
  });

  const app: Express = express();
  app.disable('x-powered-by');
  app.set('trust proxy', config.TRUST_PROXY);
  app.use(requestId());
  app.use(requestLog({ logger, metrics }));
  app.use(helmet({ crossOriginResourcePolicy: { policy: 'cross-origin' } }));
  app.use('/v1', apiCors());
  app.use('/auth', rateLimits.perIp('auth'));
  app.use(express.json({ limit: config.MAX_REQUEST_BYTES, type: ['application/json', 'application/*+json'] }));
  app.use(express.text({ limit: config.MAX_REQUEST_BYTES, type: 'text/plain' }));
  app.use(cookieParser());

  app.use(createMetricsRouter(metrics, config.METRICS_TOKEN));
  app.use(createSystemRouter({ db, registry, checks: readinessChecks, publicUrl: config.PUBLIC_URL }));
  app.use(createSignRouter({ db, routes, projectsStore }));
  app.use(createThreadsRouter({ idempotency, routes, threads }));
  app.use(createMessagesRouter({ idempotency, routes, messages, onAppended: usage.countMessages }));
  app.use(createEventsRouter({ db, routes, threads, eventsStore }));
  const realtime = createRealtimeModule({
    db,
    logger,
    listener,
    routes,
    eventsStore,
    threads,
    keyAuth,
    readState,
    options: {
      heartbeatMs: config.REALTIME_HEARTBEAT_MS,
      presenceGraceMs: config.REALTIME_PRESENCE_GRACE_MS,
      maxBufferedBytes: config.REALTIME_MAX_BUFFERED_BYTES,
      tokenTtlSeconds: config.REALTIME_TOKEN_TTL_SECONDS,
    },
    observeNotifyLag: (s) => metrics.notifyLag.observe(s),
    clientIp: (req) => (Object.setPrototypeOf(req, app.request) as express.Request).ip,
    admit: (p, ip) => rateLimits.admit(p, 'read', ip),
  });
  metrics.watchRealtime(() => {
    const s = realtime.stats();
    return { sse: s.sse_streams, ws: s.sockets };
  });
  app.use(realtime.router);
  app.use(createReadStateRouter({ routes, readState }));
  const retention = createRetentionModule({
    db,
    logger,
    routes,
    replicaId: `${hostname()}/${process.pid}`,
    options: {
      enabled: config.RETENTION_ENABLED,
      intervalMs: config.RETENTION_INTERVAL_MS,
      batchSize: config.RETENTION_BATCH_SIZE,
    },
  });
  app.use(retention.router);
  const exports = createExportModule({
    db,
    ingest,
    log,
    messagesStore,
    maxMessageBytes: config.MAX_MESSAGE_BYTES,
    maxLineBytes: config.MAX_REQUEST_BYTES,
  });
  app.use(exports.router(routes));
  app.use(createAdminRouter({ db, routes, retentionTotals: retention.service.totals }));
  app.use(developerConsole.router(routes));

  app.use((req, _res, next) => next(notFound(`Route ${req.method} ${req.path}`)));
  app.use(errorMiddleware(logger));

  return {
    app,
    registry,
    ingest,
    keyAuth,
    projects,
    threads,
    messages,
    guards,
    readinessChecks,
    listener,
    metrics,
    realtime,
    retention,
    /** Serves WebSocket upgrades (GET /v1/ws) on the HTTP server; call once it exists. */
    attach: (server: Server) => {
      answerClientErrors(server);
      realtime.attach(server);
    },
    /** Opens the LISTEN connection; call once before serving. */
    async start() {
      await realtime.start();
      await listener.start();
      await developerConsole.start();
      usage.start();
      retention.start();
    },
    /** Flushes pending writes and drops LISTEN; the caller closes the HTTP server and the pool. */
    async close() {
      await retention.close();
      await realtime.close();
      await ingest.close();
      await rateLimits.close();
      await usage.close();
      await listener.close();
      detachQueryTelemetry();
    },
  };
}

export type App = ReturnType<typeof createApp>;
