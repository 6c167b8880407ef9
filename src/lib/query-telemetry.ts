import type { Knex } from 'knex';
import type { Logger } from './logger';
import type { Metrics } from './metrics';

interface QueryData {
  __knexQueryUid?: string;
  sql?: string;
}

export interface QueryTelemetryOptions {
  /** Statements at least this slow are counted and (sampled) logged. */
  slowMs: number;
  /** Fraction of slow statements that are logged, 0..1. */
  sampleRate: number;
  random?: () => number;
}

/**
 * Slow-query telemetry from knex's query / query-response / query-error events. Logs the
 * statement's SQL text with its placeholders — never the bound values, which carry message
 * bodies and user ids. Returns a function that detaches the listeners.
 */
export function attachQueryTelemetry(
  db: Knex,
  deps: { logger: Logger; metrics: Metrics; options: QueryTelemetryOptions },
): () => void {
  const { slowMs, sampleRate } = deps.options;
  const random = deps.options.random ?? Math.random;
  const started = new Map<string, number>();

  const onQuery = (q: QueryData) => {
    if (q.__knexQueryUid) started.set(q.__knexQueryUid, performance.now());
  };
  const finish = (q: QueryData, error?: unknown) => {
    if (!q.__knexQueryUid) return;
    const t0 = started.get(q.__knexQueryUid);
    started.delete(q.__knexQueryUid);
    if (t0 === undefined) return;
    const ms = performance.now() - t0;
    if (ms < slowMs) return;
    deps.metrics.slowQueries.inc();
    if (sampleRate <= 0 || random() >= sampleRate) return;
    const sql = (q.sql ?? '').replace(/\s+/g, ' ').trim().slice(0, 2000);
    const code = typeof error === 'object' && error !== null && 'code' in error ? String(error.code) : undefined;
    deps.logger.warn(
      { duration_ms: Math.round(ms * 1000) / 1000, sql, ...(error ? { failed: true, code } : {}) },
      'slow query',
    );
  };
  const onResponse = (_response: unknown, q: QueryData) => finish(q);
  const onError = (error: unknown, q: QueryData) => finish(q, error);

  db.on('query', onQuery);
  db.on('query-response', onResponse);
  db.on('query-error', onError);
  return () => {
    db.off('query', onQuery);
    db.off('query-response', onResponse);
    db.off('query-error', onError);
    started.clear();
  };
}
