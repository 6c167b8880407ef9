import { Router, type RequestHandler } from 'express';
import type { Knex } from 'knex';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { timingSafeEqual } from 'node:crypto';
import ipaddr from 'ipaddr.js';
import { forbidden, unauthorized } from './errors';
import { bearerToken } from './http/credentials';

const SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

interface TarnPool {
  numUsed(): number;
  numFree(): number;
  numPendingAcquires(): number;
  numPendingCreates(): number;
}

/**
 * The replica's Prometheus metrics, on a registry of its own: two app instances in one
 * process (tests, a cluster worker) never share or double-register a metric.
 */
export function createMetrics(opts: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: 'progressdb_' });

  const httpDuration = new Histogram({
    name: 'progressdb_http_request_duration_seconds',
    help: 'HTTP request duration by route pattern (never the raw URL), method and status. Streams (SSE) are not observed.',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: SECONDS,
    registers: [registry],
  });
  const ingestGroupSize = new Histogram({
    name: 'progressdb_ingest_group_size',
    help: 'Writes committed together in one group-commit transaction.',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096],
    registers: [registry],
  });
  const readAccessBatchSize = new Histogram({
    name: 'progressdb_read_access_batch_size',
    help: 'Reads authorized together by one batched read-access query.',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 500],
    registers: [registry],
  });
  const ingestCommitSeconds = new Histogram({
    name: 'progressdb_ingest_commit_seconds',
    help: 'Time from the start of a group-commit transaction to its COMMIT (including retries).',
    buckets: SECONDS,
    registers: [registry],
  });
  const ingestRetries = new Counter({
    name: 'progressdb_ingest_group_retries_total',
    help: 'Group-commit transactions retried after a deadlock or serialization failure.',
    registers: [registry],
  });
  const notifyLag = new Histogram({
    name: 'progressdb_notify_delivery_lag_seconds',
    help: 'Time from a NOTIFY wake-up reaching this replica to the new events being handed to every local subscriber of the thread.',
    buckets: SECONDS,
    registers: [registry],
  });
  let realtimeStats: (() => { sse: number; ws: number }) | null = null;
  const realtimeConnections = new Gauge({
    name: 'progressdb_realtime_connections',
    help: 'Open live connections by transport (sse, ws).',
    labelNames: ['transport'] as const,
    registers: [registry],
    collect() {
      if (!realtimeStats) return;
      const { sse, ws } = realtimeStats();
      this.set({ transport: 'sse' }, sse);
      this.set({ transport: 'ws' }, ws);
    },
  });
  const rateLimitRefusals = new Counter({
    name: 'progressdb_rate_limit_refusals_total',
    help: 'Requests refused with 429 by the rate limiter, by action class.',
    labelNames: ['class'] as const,
    registers: [registry],
  });
  const slowQueries = new Counter({
    name: 'progressdb_slow_queries_total',
    help: 'Statements slower than SLOW_QUERY_MS (all of them, not only the sampled ones that are logged).',
    registers: [registry],
  });
  let listenStats: (() => { connected: boolean; reconnects: number }) | null = null;
  new Gauge({
    name: 'progressdb_listen_connected',
    help: "Whether this replica's LISTEN connection is up and answering its probes (1) or not (0).",
    registers: [registry],
    collect() {
      if (listenStats) this.set(listenStats().connected ? 1 : 0);
    },
  });
  new Gauge({
    name: 'progressdb_listen_reconnects',
    help: 'LISTEN connections replaced since start (after a drop or an unanswered probe).',
    registers: [registry],
    collect() {
      if (listenStats) this.set(listenStats().reconnects);
    },
  });
  let ingestDepth: (() => number) | null = null;
  new Gauge({
    name: 'progressdb_ingest_queue_depth',
    help: 'Writes queued in the ingest pipeline and not yet committed.',
    registers: [registry],
    collect() {
      if (ingestDepth) this.set(ingestDepth());
    },
  });
  const pools: Array<{ name: string; db: Knex }> = [];
  new Gauge({
    name: 'progressdb_db_pool_connections',
    help: 'Database pool connections by state: used, free, pending (acquires waiting), creating.',
    labelNames: ['pool', 'state'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const { name, db } of pools) {
        const pool = (db.client as { pool?: TarnPool }).pool;
        if (!pool) continue;
        this.set({ pool: name, state: 'used' }, pool.numUsed());
        this.set({ pool: name, state: 'free' }, pool.numFree());
        this.set({ pool: name, state: 'pending' }, pool.numPendingAcquires());
        this.set({ pool: name, state: 'creating' }, pool.numPendingCreates());
      }
    },
  });

  return {
    registry,
    httpDuration,
    ingestGroupSize,
    ingestCommitSeconds,
    ingestRetries,
    readAccessBatchSize,
    /** Observed by the realtime module: seconds from a NOTIFY wake-up to fan-out. */
    notifyLag,
    realtimeConnections,
    rateLimitRefusals,
    slowQueries,

    /** Feeds the ingest histograms; subscribe it to the app's group listeners. */
    observeGroup(s: { size: number; commitMs: number; attempts: number }) {
      ingestGroupSize.observe(s.size);
      ingestCommitSeconds.observe(s.commitMs / 1000);
      if (s.attempts > 1) ingestRetries.inc(s.attempts - 1);
    },

    /** Reports open SSE streams and WebSockets at every scrape. */
    watchRealtime(stats: () => { sse: number; ws: number }) {
      realtimeStats = stats;
    },

    /** Reports the LISTEN connection's state at every scrape. */
    watchListen(stats: () => { connected: boolean; reconnects: number }) {
      listenStats = stats;
    },

    /** Reports the ingest queue depth at every scrape. */
    watchIngest(depth: () => number) {
      ingestDepth = depth;
    },

    /** Reports a knex pool's usage at every scrape. */
    watchPool(db: Knex, name = 'main') {
      pools.push({ name, db });
    },
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

/** GET /metrics in the Prometheus text format; behind a bearer token when one is configured. */
const isLoopback = (ip: string | undefined) => {
  try {
    return ip !== undefined && ipaddr.process(ip).range() === 'loopback';
  } catch {
    return false;
  }
};

/**
 * GET /metrics. With METRICS_TOKEN set, only `Authorization: Bearer <token>` reads it. Without
 * one, production refuses every scrape (the metrics name routes, projects' load and the pool:
 * not for the internet), and development answers loopback clients only (`req.ip`, so a trusted
 * proxy's forwarded client counts as that client, not as the proxy).
 */
export function createMetricsRouter(metrics: Metrics, token?: string, opts: { production?: boolean } = {}): Router {
  const router = Router();
  const expected = token ? Buffer.from(token) : null;
  const authorized: RequestHandler = (req, res, next) => {
    if (!expected) {
      if (opts.production)
        return next(forbidden('The metrics endpoint is disabled in production until METRICS_TOKEN is set.'));
      if (!isLoopback(req.ip))
        return next(forbidden('Without METRICS_TOKEN, the metrics endpoint answers only loopback clients.'));
      return next();
    }
    const given = Buffer.from(bearerToken(req.get('authorization')) ?? '');
    if (given.length === expected.length && timingSafeEqual(given, expected)) return next();
    res.setHeader('WWW-Authenticate', 'Bearer realm="metrics"');
    next(unauthorized('The metrics endpoint needs the bearer token configured in METRICS_TOKEN.'));
  };
  router.get('/metrics', authorized, async (_req, res, next) => {
    try {
      const text = await metrics.registry.metrics();
      res.setHeader('Content-Type', metrics.registry.contentType);
      res.setHeader('Cache-Control', 'no-store');
      res.send(text);
    } catch (e) {
      next(e);
    }
  });
  return router;
}
