import type { Knex } from 'knex';
import type { Logger } from '../../lib/logger';
import type { RetentionService } from './retention-service';
import type { RetentionStore } from './retention-store';

/**
 * Runs on every replica; one of them leads. Every tick a replica tries the leader advisory lock
 * (on a connection it holds for the run, so a replica that dies releases it with its
 * connection); the leader starts a run when the interval has passed since the last run started,
 * or at once when the last run never completed (its leader died or shut down mid-purge).
 */
export function createRetentionScheduler(deps: {
  db: Knex;
  store: RetentionStore;
  service: RetentionService;
  logger: Logger;
  intervalMs: number;
  replicaId: string;
}) {
  const { db, store, service, logger, intervalMs } = deps;
  // Ticks are a fraction of the interval, so a run starts at most 20 % late.
  const tickMs = Math.max(50, Math.min(Math.floor(intervalMs / 5), 60_000));
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<void> | null = null;
  let stopping = false;

  async function tick() {
    const lead = await store.tryLead(db);
    if (!lead) return;
    try {
      const last = await store.lastRun(db, intervalMs);
      const interrupted = last !== undefined && last.completed_at === null;
      if (last && !last.due && !interrupted) return;
      const runId = await store.startRun(db, deps.replicaId);
      logger.info({ run: runId, resumed: interrupted }, 'retention run started');
      const totals = await service.runAll({
        dryRun: false,
        reason: 'policy',
        actor: `scheduler:${deps.replicaId}`,
        shouldStop: () => stopping,
      });
      // A run cut short by shutdown stays incomplete: the next leader resumes it at once.
      if (stopping) return;
      await store.completeRun(db, runId, totals);
      logger.info({ run: runId, ...totals }, 'retention run completed');
    } finally {
      await lead.release();
    }
  }

  return {
    start() {
      timer = setInterval(() => {
        if (running || stopping) return;
        running = tick()
          .catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'retention run failed; will retry'))
          .finally(() => (running = null));
      }, tickMs);
      timer.unref();
    },
    /** Stops between batches; the lock goes with the connection. */
    async close() {
      stopping = true;
      if (timer) clearInterval(timer);
      await running;
    },
  };
}
