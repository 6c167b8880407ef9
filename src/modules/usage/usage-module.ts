import type { Knex } from 'knex';
import type { Logger } from '../../lib/logger';
import { createUsageCounter } from './usage-counter';
import { createUsageStore } from './usage-store';

/** Usage counting for one replica: a guard for requests, a call for messages, a periodic flush. */
export function createUsageModule(deps: { db: Knex; logger: Logger; flushIntervalMs?: number }) {
  return createUsageCounter({
    db: deps.db,
    logger: deps.logger,
    usageStore: createUsageStore(),
    flushIntervalMs: deps.flushIntervalMs ?? 5_000,
  });
}
