import type { Knex } from 'knex';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Config } from '../../config';
import type { RouteFactory } from '../../lib/http/route';
import { CHANNELS } from '../../lib/channels';
import type { Logger } from '../../lib/logger';
import type { PgListener } from '../../lib/pg-listener';
import type { LogIngest, ThreadLog } from '../thread-log/thread-log';
import type { ProjectsService } from '../projects/projects-service';
import { createDeliveryWorker, type OpenEvents } from './delivery-worker';
import { createSecretBox, resolveWebhookKey, type SecretBox } from './webhook-secrets';
import { createWebhooksRouter } from './webhooks-router';
import { createWebhooksService } from './webhooks-service';
import { createWebhooksStore } from './webhooks-store';

const OUTBOX_FOLD = 'webhook-outbox';

const ATTEMPT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15];

/**
 * Webhooks (SPEC §6): endpoints, the outbox written in every ingest group's transaction, the
 * delivery worker of this replica, the admin and console routes, and their metrics.
 */
export function createWebhooksModule(deps: {
  config: Config;
  db: Knex;
  logger: Logger;
  ingest: Pick<LogIngest, 'beforeCommit' | 'observe'>;
  log: Pick<ThreadLog, 'fold'>;
  listener: PgListener;
  projects: Pick<ProjectsService, 'getOwned'>;
  registry: Registry;
  online: (projectId: string, threadId: string) => string[];
  /** Opens sealed body values (encrypting projects): payloads carry the event as /events shows it. */
  openEvents?: OpenEvents;
}) {
  const { config, db, logger } = deps;
  const store = createWebhooksStore();
  // Resolved on first use (not in start: a replica must come up even while the database is not).
  let box: Promise<SecretBox> | null = null;
  const getBox = (): Promise<SecretBox> =>
    (box ??= resolveWebhookKey(db, config.WEBHOOK_SECRET_KEY).then(createSecretBox, (err: unknown) => {
      box = null;
      throw err;
    }));
  const policy = {
    allowHttp: config.WEBHOOK_ALLOW_HTTP ?? config.NODE_ENV !== 'production',
    allowPrivate: config.WEBHOOK_ALLOW_PRIVATE_TARGETS,
  };
  const service = createWebhooksService({
    db,
    store,
    box: getBox,
    policy,
    secretGraceSeconds: config.WEBHOOK_SECRET_GRACE_SECONDS,
    online: deps.online,
  });
  // The outbox row of every event, in the group's transaction: a hook, or folded into the append
  // statement itself when that is the group's only write (a pure-append group is then one
  // autocommit statement).
  deps.ingest.beforeCommit((tx, committed) => service.writeOutbox(tx, committed), { name: OUTBOX_FOLD });
  deps.log.fold({ name: OUTBOX_FOLD, cte: (threads) => service.outboxFold(threads) });

  const outcomes = new Counter({
    name: 'progressdb_webhook_deliveries_total',
    help: 'Webhook delivery attempts by outcome: delivered, failed (retry scheduled), dead, disabled (410).',
    labelNames: ['outcome'] as const,
    registers: [deps.registry],
  });
  const attemptSeconds = new Histogram({
    name: 'progressdb_webhook_attempt_seconds',
    help: 'Duration of one webhook delivery attempt (resolve, connect, POST, response).',
    buckets: ATTEMPT_BUCKETS,
    registers: [deps.registry],
  });
  let lastStats: Awaited<ReturnType<typeof store.queueStats>> = [];
  // Both gauges of one scrape share one query (the registry collects them concurrently).
  let refreshing: Promise<void> | null = null;
  const refreshStats = () =>
    (refreshing ??= store
      .queueStats(db)
      .then(
        (s) => void (lastStats = s),
        (err: Error) => logger.debug({ err: err.message }, 'webhook queue stats failed'),
      )
      .finally(() => setTimeout(() => (refreshing = null), 100).unref()));
  new Gauge({
    name: 'progressdb_webhook_queue_depth',
    help: 'Pending webhook deliveries per project (shared queue: every replica reports the same figure).',
    labelNames: ['project_id'] as const,
    registers: [deps.registry],
    async collect() {
      await refreshStats();
      this.reset();
      for (const s of lastStats) this.set({ project_id: s.project_id }, s.depth);
    },
  });
  new Gauge({
    name: 'progressdb_webhook_oldest_due_seconds',
    help: 'Age of the oldest due, undelivered webhook delivery per project.',
    labelNames: ['project_id'] as const,
    registers: [deps.registry],
    async collect() {
      await refreshStats();
      this.reset();
      for (const s of lastStats) this.set({ project_id: s.project_id }, s.oldest_due_seconds);
    },
  });

  const worker = createDeliveryWorker({
    db,
    store,
    box: getBox,
    logger,
    observer: {
      attempt(outcome, seconds) {
        outcomes.inc({ outcome });
        attemptSeconds.observe(seconds);
      },
    },
    disableEndpoint: (p, e, reason) => service.disable(p, e, reason),
    openEvents: deps.openEvents,
    options: {
      concurrency: config.WEBHOOK_CONCURRENCY,
      pollMs: config.WEBHOOK_POLL_MS,
      claimIntervalMs: config.WEBHOOK_CLAIM_INTERVAL_MS,
      timeoutMs: config.WEBHOOK_TIMEOUT_MS,
      claimSeconds: Math.ceil(config.WEBHOOK_TIMEOUT_MS / 1000) + config.WEBHOOK_CLAIM_MARGIN_SECONDS,
      retrySchedule: config.WEBHOOK_RETRY_SCHEDULE,
      jitter: config.WEBHOOK_RETRY_JITTER,
      maxResponseBytes: 4096,
      deliveredRetentionSeconds: config.WEBHOOK_DELIVERED_RETENTION_HOURS * 3600,
      policy,
    },
  });

  // A local group committed: its deliveries may be due now.
  deps.ingest.observe(() => worker.kick());

  return {
    service,
    router: (routes: RouteFactory) => createWebhooksRouter({ routes, webhooks: service, projects: deps.projects }),
    async start() {
      if (!config.WEBHOOK_WORKER_ENABLED) return;
      // Another replica's commit may have queued deliveries: its NOTIFY wakes this worker too.
      await deps.listener.listen(CHANNELS.events, () => worker.kick());
      worker.start();
    },
    close: () => worker.close(),
  };
}

export type WebhooksModule = ReturnType<typeof createWebhooksModule>;
