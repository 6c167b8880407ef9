import type { IncomingMessage, Server } from 'node:http';
import type { Router } from 'express';
import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import { CHANNELS } from '../../lib/channels';
import type { ClientIp } from '../../lib/http/client-ip';
import type { RouteFactory } from '../../lib/http/route';
import type { UpgradeLog } from '../../lib/http/request-log';
import type { Logger } from '../../lib/logger';
import type { PgListener } from '../../lib/pg-listener';
import type { EventsStore } from '../events/events-store';
import type { KeyAuthService } from '../keys/key-auth-service';
import type { ReadStateService } from '../read-state/read-state-service';
import type { ThreadsService } from '../threads/threads-service';
import { buildAsyncApiDocument } from './asyncapi';
import { createEphemeral } from './ephemeral';
import { createRealtimeRouter } from './realtime-router';
import { createRealtimeStore } from './realtime-store';
import { createRealtimeTokens } from './realtime-token';
import { createTailHub } from './tail-hub';
import { createWsGateway } from './ws-gateway';
import type { ConnectionTracker, LiveConnection, TrackConnection } from './track-connection';
import type { ApiPrincipal, RateClass } from '../../lib/http/route';
import type { MessagesService } from '../messages/messages-service';
import { rateLimited } from '../../lib/errors';

export interface RealtimeOptions {
  heartbeatMs: number;
  presenceGraceMs: number;
  maxBufferedBytes: number;
  /** A subscriber whose backlog stays above maxBufferedBytes this long is cut off (default 5 s). */
  slowConsumerMs?: number;
  tokenTtlSeconds: number;
  /** JSON nesting allowed in a `send` frame's message (MAX_JSON_DEPTH, as REST bodies). */
  maxJsonDepth: number;
  tokenMaxTtlSeconds: number;
  /** Live connections (WebSocket + SSE) this replica holds at once per end user, key and project. */
  maxConnections?: { perUser: number; perKey: number; perProject: number };
}

/** Live tail (SSE, WebSocket), typing, presence and read-mark fan-out for one replica. */
export function createRealtimeModule(deps: {
  db: Knex;
  logger: Logger;
  listener: PgListener;
  eventsStore: EventsStore;
  threads: Pick<ThreadsService, 'authorize'>;
  keyAuth: Pick<KeyAuthService, 'authenticate'>;
  readState: ReadStateService;
  options: RealtimeOptions;
  /** The client address of an upgrade request as express's req.ip gives it (TRUST_PROXY applied). */
  clientIp: ClientIp;
  /** The project's IP allowlist and allowed origins (the REST guards), for upgrades and SSE tokens. */
  assertCaller: (req: IncomingMessage, principal: ApiPrincipal) => void;
  /** The rate limiter's admission for callers outside the route factory (upgrades: read; sends: write). */
  admit?: (principal: ApiPrincipal, cls: RateClass, ip: string) => Promise<void>;
  /** The REST append, for WebSocket `send` frames (usage counted as REST counts it). */
  messages: Pick<MessagesService, 'append'>;
  onAppended?: (projectId: string, newMessages: number) => void;
  /**
   * Spends from the project's rate-limit buckets for one WebSocket action, like its REST
   * equivalent (subscribe = read; typing, read marks and send = write); throws rateLimited().
   */
  spendAction?: (principal: ApiPrincipal, cls: RateClass, ip: string, units?: number) => Promise<void>;
  /** Counts a refused credential against the client's auth bucket; throws the 429 once it is used up. */
  authFailed?: (req: IncomingMessage, error: unknown) => Promise<void>;
  /** Seconds from a NOTIFY wake-up to fan-out (the replica's metrics histogram). */
  observeNotifyLag?: (seconds: number) => void;
  /** The request log and HTTP metrics of each WebSocket upgrade attempt (101 or refused). */
  onUpgrade?: UpgradeLog;
}) {
  const { db, logger, listener, options } = deps;
  const hub = createTailHub({ db, listener, eventsStore: deps.eventsStore, logger, onLag: deps.observeNotifyLag });
  const store = createRealtimeStore();
  const tokens = createRealtimeTokens({
    db,
    store,
    ttlSeconds: options.tokenTtlSeconds,
    maxTtlSeconds: options.tokenMaxTtlSeconds,
  });
  const openStreams = new Set<() => void>();

  // Live connections by project and key, so a revoked key's streams end too (REST stops at the
  // next request; a stream would otherwise outlive the revocation).
  const live = new Map<string, Map<string, Set<LiveConnection>>>();
  const counts = new Map<string, number>();
  const countKeys = (p: ApiPrincipal) => [
    `p\u0000${p.projectId}`,
    `k\u0000${p.projectId}\u0000${p.keyId}`,
    ...(p.userId !== null ? [`u\u0000${p.projectId}\u0000${p.userId}`] : []),
  ];
  const bump = (p: ApiPrincipal, by: number) => {
    for (const k of countKeys(p)) {
      const n = (counts.get(k) ?? 0) + by;
      if (n > 0) counts.set(k, n);
      else counts.delete(k);
    }
  };
  /** Refuses (429) a new live connection over the per-user, per-key or per-project cap. */
  function admitConnection(p: ApiPrincipal) {
    const caps = options.maxConnections;
    if (!caps) return;
    const [project, key, user] = countKeys(p).map((k) => counts.get(k) ?? 0);
    const over =
      p.userId !== null && user >= caps.perUser
        ? `user ${p.userId} already has ${user} live connections (at most ${caps.perUser})`
        : key >= caps.perKey
          ? `this key already has ${key} live connections (at most ${caps.perKey})`
          : project >= caps.perProject
            ? `this project already has ${project} live connections (at most ${caps.perProject})`
            : null;
    if (over) throw rateLimited(`Too many live connections: ${over}; close one, or retry later.`, 5);
  }
  const tracker: ConnectionTracker = {
    add(principal, conn) {
      let keys = live.get(principal.projectId);
      if (!keys) live.set(principal.projectId, (keys = new Map()));
      let set = keys.get(principal.keyId);
      if (!set) keys.set(principal.keyId, (set = new Set()));
      if (set.has(conn)) return;
      set.add(conn);
      bump(principal, 1);
    },
    delete(principal, conn) {
      const keys = live.get(principal.projectId);
      const set = keys?.get(principal.keyId);
      if (!keys || !set?.delete(conn)) return;
      bump(principal, -1);
      if (set.size === 0) keys.delete(principal.keyId);
      if (keys.size === 0) live.delete(principal.projectId);
    },
  };
  const track: TrackConnection = (principal, close) => {
    const conn: LiveConnection = { revoke: close };
    tracker.add(principal, conn);
    return () => tracker.delete(principal, conn);
  };
  async function dropRevoked(projectId: string) {
    const keys = live.get(projectId);
    if (!keys) return;
    try {
      for (const keyId of await store.deadKeys(db, projectId, [...keys.keys()]))
        for (const conn of [...(keys.get(keyId) ?? [])]) conn.revoke();
    } catch (err) {
      logger.warn({ err: (err as Error).message }, 'could not check live connections for revoked keys');
    }
  }
  const gateway = createWsGateway({
    db,
    hub,
    ephemeral: () => ephemeral,
    threads: deps.threads,
    readState: deps.readState,
    keyAuth: deps.keyAuth,
    tokens,
    tracker,
    authFailed: deps.authFailed,
    onUpgrade: deps.onUpgrade,
    // What REST routes get from guards: the project's IP allowlist, allowed origins, rate limit.
    async checkUpgrade(req, principal) {
      const ip = deps.clientIp(req) ?? '';
      deps.assertCaller(req, principal);
      admitConnection(principal);
      await deps.admit?.(principal, 'read', ip);
    },
    clientIp: (req) => deps.clientIp(req) ?? '',
    admit: deps.admit,
    async append(principal, threadId, message) {
      const outcome = await deps.messages.append(principal, threadId, [message]);
      deps.onAppended?.(principal.projectId, outcome.existed.filter((e) => !e).length);
      return outcome;
    },
    maxJsonDepth: options.maxJsonDepth,
    spendAction: deps.spendAction,
    logger,
    heartbeatMs: options.heartbeatMs,
    maxBufferedBytes: options.maxBufferedBytes,
    slowConsumerMs: options.slowConsumerMs ?? 5_000,
  });
  const ephemeral = createEphemeral({
    db,
    listener,
    logger,
    replicaId: randomUUID(),
    graceMs: options.presenceGraceMs,
    // Presence re-announcements are cheap; they need not follow the socket heartbeat closely.
    heartbeatMs: Math.max(options.heartbeatMs, 1_000),
    deliver: gateway.deliverEphemeral,
  });
  deps.readState.onMarked((m) => void ephemeral.read(m.projectId, m.threadId, m.userId, m.seq));

  let closing: Promise<void> | null = null;

  return {
    /** GET /v1/threads/{id}/tail (SSE), POST /v1/realtime/token and the protocol's GET /asyncapi.json. */
    router: (routes: RouteFactory) =>
      withAsyncApi(
        createRealtimeRouter({
          db,
          routes,
          threads: deps.threads,
          hub,
          tokens,
          track,
          authFailed: deps.authFailed,
          heartbeatMs: options.heartbeatMs,
          maxBufferedBytes: options.maxBufferedBytes,
          slowConsumerMs: options.slowConsumerMs ?? 5_000,
          openStreams,
          admitConnection,
          joinPresence(principal, threadId) {
            const userId = principal.userId;
            if (!userId) return () => undefined;
            ephemeral.join(principal.projectId, threadId, userId);
            let left = false;
            return () => {
              if (left) return;
              left = true;
              ephemeral.leave(principal.projectId, threadId, userId);
            };
          },
        }),
      ),
    hub,
    attach: (server: Server) => gateway.attach(server),
    async start() {
      await hub.start();
      await ephemeral.start();
      // Key revocations and signing-secret rotations are announced here (projects-service).
      await listener.listen(CHANNELS.keys, (projectId) => void dropRevoked(projectId));
      listener.on('reconnected', () => {
        for (const projectId of live.keys()) void dropRevoked(projectId);
      });
    },
    /** Ends SSE streams (`event: reconnect`) and closes sockets with 1012, then says offline. */
    close() {
      closing ??= (async () => {
        hub.closeAll();
        for (const end of [...openStreams]) end();
        await gateway.close();
        await ephemeral.close();
      })();
      return closing;
    },
    stats: () => ({ ...hub.stats(), ...gateway.stats(), sse_streams: openStreams.size }),
    /** Users with a live connection to the thread on any replica (presence, with its grace period). */
    online: (projectId: string, threadId: string) => ephemeral.online(projectId, threadId),
  };
}

export type RealtimeModule = ReturnType<typeof createRealtimeModule>;

/** Serves the AsyncAPI document of /v1/ws and the SSE tail beside /openapi.json (built once per host). */
function withAsyncApi(router: Router): Router {
  const documents = new Map<string, ReturnType<typeof buildAsyncApiDocument>>();
  router.get('/asyncapi.json', (req, res) => {
    const base = `${req.protocol}://${req.get('host') ?? 'localhost'}`;
    if (!documents.has(base) && documents.size < 16) documents.set(base, buildAsyncApiDocument(base));
    res.json(documents.get(base) ?? buildAsyncApiDocument(base));
  });
  return router;
}
