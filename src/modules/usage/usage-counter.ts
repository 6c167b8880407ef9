import type { Knex } from 'knex';
import type { Guard } from '../../lib/http/route';
import type { Logger } from '../../lib/logger';
import type { UsageDelta, UsageStore } from './usage-store';

const HOUR_MS = 3_600_000;
// If the database is away for long, keep at most this many pending buckets rather than grow without bound.
const MAX_PENDING = 50_000;

// The hour's ISO string is built once per hour, not per request (a Date and toISOString each).
let lastHour = { start: Number.NaN, iso: '' };
function hourOf(ms: number): string {
  const start = Math.floor(ms / HOUR_MS) * HOUR_MS;
  if (start !== lastHour.start) lastHour = { start, iso: new Date(start).toISOString() };
  return lastHour.iso;
}

/**
 * Per-replica usage accumulator: counting is a Map increment on the request path; a timer
 * flushes the totals every few seconds as one upsert-add per batch, so usage never becomes a
 * hot row updated by every request.
 */
export function createUsageCounter(deps: {
  db: Knex;
  usageStore: UsageStore;
  logger: Logger;
  flushIntervalMs: number;
  now?: () => number;
}) {
  const now = deps.now ?? Date.now;
  let pending = new Map<string, UsageDelta>();
  let timer: NodeJS.Timeout | null = null;
  let flushing: Promise<void> = Promise.resolve();

  function add(projectId: string, requests: number, messages: number, hour = hourOf(now())) {
    const k = `${projectId}\u0000${hour}`;
    const d = pending.get(k);
    if (d) {
      d.requests += requests;
      d.messages += messages;
    } else if (pending.size < MAX_PENDING) {
      pending.set(k, { projectId, hour, requests, messages });
    }
  }

  async function flushOnce() {
    if (pending.size === 0) return;
    const batch = pending;
    pending = new Map();
    try {
      await deps.usageStore.add(deps.db, [...batch.values()]);
    } catch (err) {
      deps.logger.warn({ err, buckets: batch.size }, 'usage flush failed; will retry');
      // Put the batch back under its original hours for the next flush.
      for (const d of batch.values()) add(d.projectId, d.requests, d.messages, d.hour);
    }
  }

  /** Flushes now; concurrent callers share one flush at a time. */
  function flush(): Promise<void> {
    flushing = flushing.then(flushOnce, flushOnce);
    return flushing;
  }

  /** Counts every request that passed API-key authentication. */
  const guard: Guard = (_req, _res, _spec, principal) => {
    if (principal.type === 'api') add(principal.projectId, 1, 0);
  };

  return {
    guard,
    /** Counts newly appended messages (retries that wrote nothing count zero). */
    countMessages(projectId: string, count: number) {
      if (count > 0) add(projectId, 0, count);
    },
    flush,
    start() {
      if (timer || deps.flushIntervalMs <= 0) return;
      timer = setInterval(() => void flush(), deps.flushIntervalMs);
      timer.unref();
    },
    async close() {
      if (timer) clearInterval(timer);
      timer = null;
      await flush();
    },
    series: async (projectId: string, hours: number) => {
      await flush();
      return deps.usageStore.hourly(deps.db, projectId, hours);
    },
  };
}

export type UsageCounter = ReturnType<typeof createUsageCounter>;
