import cookieParser from 'cookie-parser';
import express, { type Express, type Request, type Response } from 'express';
import type { IncomingMessage, Server } from 'node:http';
import { hostname } from 'node:os';
import type { Knex } from 'knex';
import type { Config } from './config';
import { isAppError, notFound } from './lib/errors';
import { answerClientErrors } from './lib/http/client-error';
import { listenWithAppServer } from './lib/http/app-server';
import { createClientIp } from './lib/http/client-ip';
import { createDirectDispatch } from './lib/http/direct-dispatch';
import { onPaths, prefixRouters, routerPrefixes } from './lib/http/prefix-routers';
import { errorMiddleware } from './lib/http/problem';
import { setRequestId } from './lib/http/request-id';
import { securityHeaders } from './lib/http/security-headers';
import { requestContextGuard, requestLog, upgradeLog } from './lib/http/request-log';
import { createRouteFactory, type Guard, type Principal } from './lib/http/route';
import type { Logger } from './lib/logger';
import { createMetrics, createMetricsRouter } from './lib/metrics';
import { createRegistry } from './lib/openapi';
import { createPgListener } from './lib/pg-listener';
import { attachQueryTelemetry } from './lib/query-telemetry';
import { createAdminModule } from './modules/admin/admin-module';
import { createConsoleModule } from './modules/console/console-module';
import { createEventsModule } from './modules/events/events-module';
import { createEventsStore } from './modules/events/events-store';
import { createEncryptionModule } from './modules/encryption/encryption-module';
import { createAccessGuards } from './modules/guards/access-guards';
import { apiCors, apiCorsHeaders } from './modules/guards/api-cors';
import { watchKeyChanges } from './modules/guards/key-change-listener';
import { createIdempotency } from './modules/idempotency/idempotency';
import { createKeysModule } from './modules/keys/keys-module';
import { createMessagesModule } from './modules/messages/messages-module';
import { createMessagesStore } from './modules/messages/messages-store';
import { createPageCache } from './modules/messages/page-cache';
import { createProjectsModule } from './modules/projects/projects-module';
import { readSettings } from './modules/projects/project-settings';
import { assertWithinCeilings, createRateLimitModule } from './modules/rate-limit/rate-limit-module';
import { createReadStateModule } from './modules/read-state/read-state-module';
import { createReadStateStore } from './modules/read-state/read-state-store';
import { createRealtimeModule } from './modules/realtime/realtime-module';
import { createSystemModule } from './modules/system/system-module';
import type { ReadinessCheck } from './modules/system/system-router';
import { createThreadLogModule } from './modules/thread-log/thread-log-module';
import { createThreadsModule } from './modules/threads/threads-module';
import { createUsageModule } from './modules/usage/usage-module';
import { createWebhooksModule } from './modules/webhooks/webhooks-module';
import { createRetentionModule } from './modules/retention/retention-module';
import { createExportModule } from './modules/export/export-module';

export interface AppDeps {
  config: Config;
  db: Knex;
  logger: Logger;
  /** For the replica's one LISTEN connection (outside the pool). */
  databaseUrl: string;
}

/** Composition root: plumbing → modules (in dependency order) → guards → routers. */
export function createApp({ config, db, logger, databaseUrl }: AppDeps) {
  const app: Express = express();
  listenWithAppServer(app);
  app.disable('x-powered-by');
  app.set('trust proxy', config.TRUST_PROXY);
  const clientIp = createClientIp(app.get('trust proxy fn') as (addr: string, hop: number) => boolean);

  // Plumbing.
  const registry = createRegistry();
  const listener = createPgListener({
    url: databaseUrl,
    logger,
    probeIntervalMs: config.LISTEN_PROBE_INTERVAL_MS,
    probeTimeoutMs: config.LISTEN_PROBE_TIMEOUT_MS,
  });
  const metrics = createMetrics();
  metrics.watchPool(db);
  const detachQueryTelemetry = attachQueryTelemetry(db, {
    logger,
    metrics,
    options: { slowMs: config.SLOW_QUERY_MS, sampleRate: config.SLOW_QUERY_SAMPLE_RATE },
  });

  // Modules.
  const { log, ingest } = createThreadLogModule({
    db,
    logger,
    options: {
      maxBatch: config.INGEST_MAX_BATCH,
      maxWaitMs: config.INGEST_MAX_WAIT_MS,
      lanes: config.INGEST_CONCURRENCY,
      queueLimit: config.INGEST_QUEUE_LIMIT,
    },
  });
  ingest.observe(metrics.observeGroup);
  const idempotency = createIdempotency({
    db,
    logger,
    options: {
      ttlSeconds: config.IDEMPOTENCY_TTL_HOURS * 3_600,
      sweepIntervalMs: config.IDEMPOTENCY_SWEEP_INTERVAL_MS,
      sweepBatch: config.IDEMPOTENCY_SWEEP_BATCH,
    },
  });
  const encryption = createEncryptionModule({ config, db, logger, listener, ingest, log });
  const { projects } = createProjectsModule({
    db,
    signingSecretGraceSeconds: config.SIGNING_SECRET_GRACE_SECONDS,
    checkSettings: (settings) => assertWithinCeilings(config, readSettings(settings)),
  });
  const keys = createKeysModule({
    db,
    cacheTtlMs: config.KEY_CACHE_TTL_MS,
    userTokenMaxTtlSeconds: config.USER_TOKEN_MAX_TTL_SECONDS,
    signingSecretOf: projects.signingSecretOf,
  });
  const readStateStore = createReadStateStore();
  const { threads, ...threadsModule } = createThreadsModule({
    db,
    ingest,
    log,
    idempotency,
    unreadCounts: (p, u, ids) => readStateStore.forThreads(db, p, u, ids),
    onReadAccessBatch: (size) => metrics.readAccessBatchSize.observe(size),
  });
  const { readState, ...readStateModule } = createReadStateModule({ db, threads, store: readStateStore });
  const usage = createUsageModule({ db, logger });
  const { messages, ...messagesModule } = createMessagesModule({
    db,
    ingest,
    log,
    idempotency,
    threads,
    maxMessageBytes: config.MAX_MESSAGE_BYTES,
    maxReactionsPerMessage: config.MAX_REACTIONS_PER_MESSAGE,
    crypto: encryption.service,
    pageCache: createPageCache({ maxBytes: config.PAGE_CACHE_BYTES, registry: metrics.registry }),
    sealedPageTtlMs: Math.min(config.PAGE_CACHE_SEALED_TTL_MS, config.DEK_CACHE_TTL_MS),
    onAppended: usage.countMessages,
  });
  const events = createEventsModule({ db, threads, openEvents: encryption.service.openEvents });
  const developerConsole = createConsoleModule({
    config,
    db,
    logger,
    keyAuth: keys.keyAuth,
    projects,
    threads,
    messages,
    usage,
  });
  const retention = createRetentionModule({
    db,
    logger,
    replicaId: `${hostname()}/${process.pid}`,
    options: {
      enabled: config.RETENTION_ENABLED,
      intervalMs: config.RETENTION_INTERVAL_MS,
      batchSize: config.RETENTION_BATCH_SIZE,
    },
  });
  const exports = createExportModule({
    db,
    ingest,
    log,
    messagesStore: createMessagesStore(),
    crypto: encryption.service,
    maxMessageBytes: config.MAX_MESSAGE_BYTES,
    maxLineBytes: config.MAX_REQUEST_BYTES,
  });
  const rateLimits = createRateLimitModule({ db, logger, config, clientIp });
  const access = createAccessGuards({ clientIp });
  // Failed authentications count against the client IP's auth bucket (429 once it is used up).
  // Only refused credentials count: a caller that sent none (a console page before sign-in) is not guessing.
  const presented = (req: IncomingMessage) =>
    ['authorization', 'x-api-key', 'x-user-token', 'x-user-signature'].some((h) => req.headers[h] !== undefined) ||
    /[?&]token=/.test(req.url ?? '') ||
    /(^|;\s*)pdb_session=/.test(req.headers.cookie ?? '');
  const authFailed = async (req: IncomingMessage, e: unknown) => {
    if (isAppError(e) && e.kind === 'unauthorized' && presented(req)) await rateLimits.authFailed(clientIp(req));
  };
  const countFailures =
    <P>(authenticate: (req: Request, res: Response) => Promise<P>) =>
    async (req: Request, res: Response): Promise<P> => {
      try {
        return await authenticate(req, res);
      } catch (e) {
        await authFailed(req, e);
        throw e;
      }
    };

  void watchKeyChanges({
    listener,
    invalidate: (projectId) => (keys.keyAuth.invalidate(projectId), rateLimits.invalidate(projectId)),
  });
  const realtime = createRealtimeModule({
    db,
    logger,
    listener,
    eventsStore: encryption.openingEventsStore(createEventsStore()),
    threads,
    keyAuth: keys.keyAuth,
    readState,
    options: {
      heartbeatMs: config.REALTIME_HEARTBEAT_MS,
      presenceGraceMs: config.REALTIME_PRESENCE_GRACE_MS,
      maxBufferedBytes: config.REALTIME_MAX_BUFFERED_BYTES,
      slowConsumerMs: config.REALTIME_SLOW_CONSUMER_MS,
      tokenTtlSeconds: config.REALTIME_TOKEN_TTL_SECONDS,
      maxJsonDepth: config.MAX_JSON_DEPTH,
      tokenMaxTtlSeconds: config.REALTIME_TOKEN_MAX_TTL_SECONDS,
      maxConnections: {
        perUser: config.REALTIME_MAX_CONNECTIONS_PER_USER,
        perKey: config.REALTIME_MAX_CONNECTIONS_PER_KEY,
        perProject: config.REALTIME_MAX_CONNECTIONS_PER_PROJECT,
      },
    },
    observeNotifyLag: (s) => metrics.notifyLag.observe(s),
    clientIp,
    assertCaller: access.assertCaller,
    admit: (p, cls, ip) => rateLimits.admit(p, cls, ip),
    messages,
    onAppended: usage.countMessages,
    spendAction: (p, cls, ip, units) => rateLimits.admit(p, cls, ip, units),
    authFailed,
    onUpgrade: upgradeLog({ logger, metrics }),
  });
  metrics.watchListen(() => ({ connected: listener.connected, reconnects: listener.reconnects }));
  metrics.watchIngest(() => ingest.depth);
  metrics.watchRealtime(() => {
    const s = realtime.stats();
    return { sse: s.sse_streams, ws: s.sockets };
  });
  const webhooks = createWebhooksModule({
    ...{ config, db, logger, ingest, log, listener, projects, registry: metrics.registry },
    online: (p, t) => realtime.online(p, t),
    openEvents: encryption.service.openEvents,
  });

  // Guards: every routed request, after authentication and validation, in this order.
  const guards: Guard[] = [requestContextGuard, access.ipAllowlist, access.origin, rateLimits.guard, usage.guard];
  const routes = createRouteFactory({
    registry,
    guards,
    maxJsonDepth: config.MAX_JSON_DEPTH,
    maxRequestBytes: config.MAX_REQUEST_BYTES,
    validateResponses: config.NODE_ENV !== 'production',
    authenticate: {
      none: async (): Promise<Principal> => ({ type: 'anonymous' }),
      // A verified realtime token (SSE ?token=, set by the realtime router) stands in for key headers.
      api: countFailures(
        async (req, res) => (res.locals.realtimePrincipal as Principal | undefined) ?? keys.authenticators.api(req),
      ),
      secret: countFailures(keys.authenticators.secret),
      admin: countFailures(keys.authenticators.admin),
      developer: countFailures(developerConsole.authenticate),
    },
  });
  const readinessChecks: ReadinessCheck[] = [{ name: 'listen', check: () => listener.connected }, encryption.readiness];

  // HTTP: middleware, then every router in order.
  const apiHeaders = securityHeaders({ crossOriginResourcePolicy: { policy: 'cross-origin' } });
  // The API reference is read over plain HTTP too (a dev box, a LAN address): the default
  // upgrade-insecure-requests would turn its same-origin assets into https requests that fail,
  // leaving the page blank off localhost. HSTS means nothing there either.
  const docsHeaders = securityHeaders({
    crossOriginResourcePolicy: { policy: 'cross-origin' },
    contentSecurityPolicy: { directives: { upgradeInsecureRequests: null } },
    strictTransportSecurity: false,
  });
  const logRequest = requestLog({ logger, metrics });
  // What every response gets, in one layer: its request id, its log line, helmet's headers.
  app.use((req, res, next) => {
    setRequestId(req, res);
    logRequest(res);
    const path = req.path;
    (path === '/docs' || path.startsWith('/docs/') ? docsHeaders : apiHeaders)(res);
    next();
  });
  app.use(onPaths(['/v1'], apiCors()));
  app.use(onPaths(['/auth'], rateLimits.perIp('auth')));
  // JSON and text bodies are read by the route factory, after authentication.
  // Cookies (sessions, CSRF, OAuth state) matter only to sign-in, the console and its routes.
  const cookiePaths = ['/auth', '/console', '/v1/me', '/v1/projects'];
  app.use(onPaths(cookiePaths, cookieParser()));
  // Each router is entered only by paths that start like one of its routes (lib/http/prefix-routers.ts).
  const routers = [
    createMetricsRouter(metrics, config.METRICS_TOKEN, { production: config.NODE_ENV === 'production' }),
    createSystemModule({ db, registry, checks: readinessChecks, publicUrl: config.PUBLIC_URL }).router(),
    keys.router(routes),
    threadsModule.router(routes),
    messagesModule.router(routes),
    events.router(routes),
    realtime.router(routes),
    webhooks.router(routes),
    readStateModule.router(routes),
    retention.router(routes),
    exports.router(routes),
    createAdminModule({ db, retentionTotals: retention.service.totals }).router(routes),
    encryption.router(routes),
    developerConsole.router(routes),
  ];
  app.use(prefixRouters(routers));
  app.use((req, _res, next) => next(notFound(`Route ${req.method} ${req.path}`)));
  const onError = errorMiddleware(logger);
  app.use(onError);

  // Declared /v1 routes are served from a table in front of express's router, with the same
  // middleware work as the layers above do for /v1 (no cookies, no per-IP auth limit there);
  // everything else, and anything the table is unsure of, goes through express as before.
  const dispatch = createDirectDispatch(app, {
    routers: routers.map((router) => ({ router, prefixes: routerPrefixes(router) ?? [''] })),
    paths: ['/v1'],
    except: cookiePaths,
    front: (req, res) => {
      setRequestId(req, res);
      logRequest(res);
      apiHeaders(res);
      apiCorsHeaders(req, res);
    },
    onError,
  });
  // Every server calls the app through `app.handle` (tests, server.ts, cluster workers alike).
  const core = app as unknown as { handle(req: Request, res: Response, callback?: unknown): void };
  const handle = core.handle.bind(app);
  core.handle = (req, res, callback) => {
    if (callback === undefined && dispatch(req, res)) return;
    handle(req, res, callback);
  };

  return {
    app,
    registry,
    ingest,
    keyAuth: keys.keyAuth,
    projects,
    threads,
    messages,
    encryption: encryption.service,
    readinessChecks,
    listener,
    metrics,
    realtime,
    webhooks,
    retention,
    idempotency,
    /** Serves WebSocket upgrades (GET /v1/ws) on the HTTP server; call once it exists. */
    attach: (server: Server) => {
      answerClientErrors(server);
      realtime.attach(server);
    },
    /** Opens the LISTEN connection; call once before serving. */
    async start() {
      await realtime.start();
      await encryption.start();
      await webhooks.start();
      await listener.start();
      await developerConsole.start();
      usage.start();
      retention.start();
      idempotency.start();
    },
    /** Flushes pending writes and drops LISTEN; the caller closes the HTTP server and the pool. */
    async close() {
      await idempotency.close();
      await retention.close();
      await realtime.close();
      await ingest.close();
      await encryption.close();
      await webhooks.close();
      await rateLimits.close();
      await usage.close();
      await listener.close();
      detachQueryTelemetry();
    },
  };
}

export type App = ReturnType<typeof createApp>;
