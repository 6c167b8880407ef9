import type { Knex } from 'knex';
import type { Logger } from '../../lib/logger';
import type { RouteFactory } from '../../lib/http/route';
import { createRetentionRouter } from './retention-router';
import { createRetentionScheduler } from './retention-scheduler';
import { createRetentionService } from './retention-service';
import { createRetentionStore } from './retention-store';

/** Retention policies: the scheduled leader job, on-demand runs, audit and totals. */
export function createRetentionModule(deps: {
  db: Knex;
  logger: Logger;
  routes: RouteFactory;
  replicaId: string;
  options: { enabled: boolean; intervalMs: number; batchSize: number };
}) {
  const store = createRetentionStore();
  const service = createRetentionService({ db: deps.db, store, batchSize: deps.options.batchSize });
  const scheduler = createRetentionScheduler({
    db: deps.db,
    store,
    service,
    logger: deps.logger,
    intervalMs: deps.options.intervalMs,
    replicaId: deps.replicaId,
  });
  return {
    service,
    router: createRetentionRouter({ routes: deps.routes, service }),
    start() {
      if (deps.options.enabled) scheduler.start();
    },
    close: () => scheduler.close(),
  };
}

export type RetentionModule = ReturnType<typeof createRetentionModule>;
