import type { Server } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { RouteFactory } from '../../lib/http/route';
import type { Logger } from '../../lib/logger';
import type { PgListener } from '../../lib/pg-listener';
import type { EventsStore } from '../events/events-store';
import type { KeyAuthService } from '../keys/key-auth-service';
import type { ReadStateService } from '../read-state/read-state-service';
import type { ThreadsService } from '../threads/threads-service';
import { createEphemeral } from './ephemeral';
import { createRealtimeRouter } from './realtime-router';
import { createRealtimeStore } from './realtime-store';
import { createRealtimeTokens } from './realtime-token';
import { createTailHub } from './tail-hub';
import { createWsGateway } from './ws-gateway';

export interface RealtimeOptions {
  heartbeatMs: number;
  presenceGraceMs: number;
  maxBufferedBytes: number;
  tokenTtlSeconds: number;
}

/** Live tail (SSE, WebSocket), typing, presence and read-mark fan-out for one replica. */
export function createRealtimeModule(deps: {
  db: Knex;
  logger: Logger;
  listener: PgListener;
  routes: RouteFactory;
  eventsStore: EventsStore;
  threads: Pick<ThreadsService, 'authorize'>;
  keyAuth: Pick<KeyAuthService, 'authenticate'>;
  readState: ReadStateService;
  options: RealtimeOptions;
  /** Seconds from a NOTIFY wake-up to fan-out (the replica's metrics histogram). */
  observeNotifyLag?: (seconds: number) => void;
}) {
  const { db, logger, listener, options } = deps;
  const hub = createTailHub({ db, listener, eventsStore: deps.eventsStore, logger, onLag: deps.observeNotifyLag });
  const tokens = createRealtimeTokens({ db, store: createRealtimeStore(), ttlSeconds: options.tokenTtlSeconds });
  const openStreams = new Set<() => void>();
  const gateway = createWsGateway({
    db,
    hub,
    ephemeral: () => ephemeral,
    threads: deps.threads,
    readState: deps.readState,
    keyAuth: deps.keyAuth,
    tokens,
    logger,
    heartbeatMs: options.heartbeatMs,
    maxBufferedBytes: options.maxBufferedBytes,
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

  const router = createRealtimeRouter({ db, routes: deps.routes, threads: deps.threads, hub, tokens, heartbeatMs: options.heartbeatMs, maxBufferedBytes: options.maxBufferedBytes, openStreams });

  let closing: Promise<void> | null = null;

  return {
    router,
    hub,
    attach: (server: Server) => gateway.attach(server),
    async start() {
      await hub.start();
      await ephemeral.start();
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
  };
}

export type RealtimeModule = ReturnType<typeof createRealtimeModule>;
