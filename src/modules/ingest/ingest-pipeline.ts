import type { Knex } from 'knex';
import { AppError, isAppError, unavailable } from '../../lib/errors';
import { isConnectionError, pgCode } from '../../lib/db';
import type { Logger } from '../../lib/logger';
import { appendMany, THREAD_MISSING, type AppendOutcome, type AppendRequest } from '../messages/message-append';
import { CommitPointers, notifyPointers } from './thread-log';
import { findIdempotentReplay, IdempotencyRace, recordIdempotentResponse, type IdempotencyRecord } from './idempotency';

/** Work that writes to the log. `run` executes inside the group's transaction, in a savepoint. */
export interface TxOp<T> {
  kind: 'tx';
  /** Ops with the same partition (a thread) go through the same lane, in submission order. */
  partition: string;
  run(tx: Knex.Transaction, pointers: CommitPointers): Promise<T>;
  idempotency?: IdempotencyRecord<T>;
}

/**
 * A message append. It takes the merged fast path (shared statements with every other
 * append in the group) when its thread exists; otherwise, or if the fast path fails, `slow`
 * runs alone in a savepoint (creating the thread, re-checking policies).
 */
export interface AppendOp {
  kind: 'append';
  partition: string;
  request: AppendRequest;
  /** False when the caller's permission could not be checked up front (e.g. no thread yet). */
  fast: boolean;
  slow(tx: Knex.Transaction, pointers: CommitPointers): Promise<AppendOutcome>;
  idempotency?: IdempotencyRecord<AppendOutcome>;
}

type Op = TxOp<unknown> | AppendOp;
type Outcome = { ok: unknown } | { err: unknown } | undefined;

/** Runs in every group's transaction after its writes, before NOTIFY and COMMIT. */
export type BeforeCommitHook = (tx: Knex.Transaction, committed: CommitPointers) => Promise<void>;
interface Pending {
  op: Op;
  resolve(v: unknown): void;
  reject(e: unknown): void;
}

export interface IngestOptions {
  maxBatch: number;
  maxWaitMs: number;
  lanes: number;
  queueLimit: number;
}

export interface GroupStats {
  size: number;
  commitMs: number;
  attempts: number;
}

/** The savepoint-less first batch of a group failed: run the group again, with savepoints. */
class FastRetry extends Error {
  constructor(readonly reason: unknown) {
    super('fast path failed');
  }
}

const RETRYABLE = new Set(['40P01', '40001']); // deadlock, serialization failure

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

/**
 * Group commit. Writes queue per lane (threads hash to lanes, so two groups of this process
 * never contend for a thread row); each lane commits its queue in groups: one transaction,
 * merged statements for appends, one NOTIFY, then every caller is answered — after COMMIT,
 * with its own result or its own error.
 */
export function createIngestPipeline(deps: {
  db: Knex;
  logger: Logger;
  options: IngestOptions;
  onGroup?: (s: GroupStats) => void;
}) {
  const { db, logger, options } = deps;
  type Lane = { queue: Pending[]; busy: boolean; scheduled: boolean; full: (() => void) | null };
  const lanes: Lane[] = Array.from({ length: options.lanes }, () => ({
    queue: [],
    busy: false,
    scheduled: false,
    full: null,
  }));
  let queued = 0;
  let closed = false;
  let idleWaiters: Array<() => void> = [];
  const beforeCommit: BeforeCommitHook[] = [];

  /**
   * An idle lane starts at once (setImmediate only lets requests parsed in the same tick
   * join): INGEST_MAX_WAIT_MS never delays a write that finds nothing in flight. Under load
   * the lane is busy and its queue fills while the previous group commits.
   */
  function schedule(lane: Lane) {
    if (lane.busy || lane.scheduled || lane.queue.length === 0) return;
    lane.scheduled = true;
    setImmediate(() => {
      lane.scheduled = false;
      void drain(lane);
    });
  }

  /**
   * After a group of several writes, a partly filled queue may wait up to INGEST_MAX_WAIT_MS
   * for more (bigger groups, fewer commits) — cut short when the queue fills or on close().
   */
  function gather(lane: Lane): Promise<void> | undefined {
    if (options.maxWaitMs <= 0 || closed || lane.queue.length >= options.maxBatch) return undefined;
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        lane.full = null;
        resolve();
      };
      const timer = setTimeout(done, options.maxWaitMs);
      lane.full = done;
    });
  }

  async function drain(lane: Lane) {
    if (lane.busy) return;
    lane.busy = true;
    try {
      let previous = 0;
      while (lane.queue.length > 0) {
        // Only concurrency is worth waiting for: a lone client that sends its next write as
        // soon as it is answered (groups of one) never waits.
        if (previous > 1) await gather(lane);
        const group = lane.queue.splice(0, options.maxBatch);
        previous = group.length;
        await commitGroup(group);
        queued -= group.length;
      }
    } finally {
      lane.busy = false;
      if (queued === 0) {
        const waiters = idleWaiters;
        idleWaiters = [];
        waiters.forEach((w) => w());
      }
      schedule(lane);
    }
  }

  async function runSlow(
    tx: Knex.Transaction,
    pointers: CommitPointers,
    op: Op,
    i: number,
  ): Promise<{ ok: unknown } | { err: unknown }> {
    const sp = `op_${i}`;
    const local = new CommitPointers();
    await tx.raw(`savepoint ${sp}`);
    try {
      const value = op.kind === 'tx' ? await op.run(tx, local) : await op.slow(tx, local);
      if (op.idempotency) await recordIdempotentResponse(tx, op.idempotency as IdempotencyRecord<unknown>, value);
      await tx.raw(`release savepoint ${sp}`);
      pointers.mergeFrom(local);
      return { ok: value };
    } catch (e) {
      if (isConnectionError(e)) throw e;
      await tx.raw(`rollback to savepoint ${sp}`);
      if (e instanceof IdempotencyRace && op.idempotency) {
        try {
          return { ok: await findIdempotentReplay(tx, op.idempotency.scope, op.idempotency.requestHash) };
        } catch (replayError) {
          return { err: replayError };
        }
      }
      if (RETRYABLE.has(pgCode(e) ?? '')) throw e;
      return { err: e };
    }
  }

  /**
   * Appends on the merged path; what cannot go that way is left undefined in `out`. When the
   * batch is the transaction's first statement it runs without a savepoint (two round trips
   * fewer per group): if it fails, the whole group is retried with savepoints (`FastRetry`).
   */
  async function runFast(
    tx: Knex.Transaction,
    pointers: CommitPointers,
    batch: Array<{ op: AppendOp; i: number }>,
    out: Outcome[],
    n: number,
    bare: boolean,
    last: boolean,
  ): Promise<{ notified: boolean }> {
    const local = new CommitPointers();
    if (!bare) await tx.raw(`savepoint fast_${n}`);
    try {
      const results = await appendMany(
        tx,
        local,
        batch.map(({ op }) => op.request),
        last ? { notifyWith: pointers } : {},
      );
      if (!bare) await tx.raw(`release savepoint fast_${n}`);
      pointers.mergeFrom(local);
      results.forEach((r, k) => {
        if (r !== THREAD_MISSING) out[batch[k].i] = r instanceof AppError ? { err: r } : { ok: r };
      });
      return { notified: Boolean(results.notified) };
    } catch (e) {
      if (isConnectionError(e) || RETRYABLE.has(pgCode(e) ?? '')) throw e;
      if (bare) throw new FastRetry(e);
      // e.g. a client id inserted by another replica since our look-up: every append of this
      // batch now runs alone, so only the offending one fails.
      logger.debug({ err: e }, 'fast path failed; falling back to one savepoint per append');
      await tx.raw(`rollback to savepoint fast_${n}`);
      return { notified: false };
    }
  }

  /**
   * Runs a group inside one transaction. Fast appends are merged into as few batches as
   * per-thread order allows: a batch is flushed before any other op on one of its threads, so
   * within a thread, seq order is submission order.
   *
   * Plug-in points for later features, all inside this transaction so they commit (or not)
   * with the writes they describe:
   * - field encryption (SPEC §7): encrypt bodies before `submit` (in the service, where the
   *   project's data key is at hand), so the group only ever sees ciphertext;
   * - webhook outbox (SPEC §6): a `beforeCommit` hook gets the group's seq ranges per thread
   *   (`pointers.latest[…].first..seq`) and inserts the outbox rows with one INSERT … SELECT
   *   from `events`.
   */
  async function runGroup(tx: Knex.Transaction, group: Pending[], savepoints: boolean) {
    let pointers = new CommitPointers();
    const out: Outcome[] = new Array(group.length);
    let batch: Array<{ op: AppendOp; i: number }> = [];
    let inBatch = new Set<string>();
    let batches = 0;
    let slowRan = 0;
    const flush = async (last: boolean) => {
      if (batch.length === 0) return;
      const flushed = batch;
      batch = [];
      inBatch = new Set();
      const first = batches === 0 && slowRan === 0;
      // The group's last statement may carry its NOTIFY, unless hooks still have to run.
      const { notified } = await runFast(
        tx,
        pointers,
        flushed,
        out,
        batches++,
        first && !savepoints,
        last && beforeCommit.length === 0,
      );
      if (notified) pointers = new CommitPointers();
      // Missing threads and failed batches: each append alone, still in submission order.
      for (const { i } of flushed) if (!out[i]) out[i] = await runSlow(tx, pointers, group[i].op, i);
    };
    for (let i = 0; i < group.length; i++) {
      const op = group[i].op;
      if (op.kind === 'append' && op.fast && !op.idempotency) {
        batch.push({ op, i });
        inBatch.add(op.partition);
        continue;
      }
      if (inBatch.has(op.partition)) await flush(false);
      slowRan++;
      out[i] = await runSlow(tx, pointers, op, i);
    }
    await flush(true);
    for (const hook of beforeCommit) await hook(tx, pointers);
    await notifyPointers(tx, pointers);
    return out as Array<{ ok: unknown } | { err: unknown }>;
  }

  /**
   * Commits a group and answers each caller after COMMIT. A group that fails as a whole
   * (typically at COMMIT: a deferred constraint, or an error outside any one op's savepoint)
   * answers nobody with success; it is split in halves and retried, so the one write that
   * cannot commit fails alone and its neighbours still commit.
   */
  async function commitGroup(group: Pending[]): Promise<void> {
    const started = performance.now();
    let savepoints = false;
    for (let attempt = 1; ; attempt++) {
      let out: Array<{ ok: unknown } | { err: unknown }>;
      try {
        out = await db.transaction((tx) => runGroup(tx, group, savepoints));
      } catch (e) {
        if (e instanceof FastRetry && !savepoints) {
          logger.debug({ err: e.reason }, 'fast path failed; retrying the group with savepoints');
          savepoints = true;
          attempt--;
          continue;
        }
        if (RETRYABLE.has(pgCode(e) ?? '') && attempt < 5) continue;
        if (isConnectionError(e)) {
          const err = unavailable('The database is not reachable right now; nothing was written. Retry shortly.', 1);
          group.forEach((p) => p.reject(err));
          return;
        }
        if (group.length > 1) {
          logger.warn({ err: e, size: group.length }, 'ingest group failed to commit; splitting it');
          const half = Math.ceil(group.length / 2);
          await commitGroup(group.slice(0, half));
          await commitGroup(group.slice(half));
          return;
        }
        if (!isAppError(e)) logger.error({ err: e }, 'ingest write failed to commit');
        group[0].reject(e);
        return;
      }
      deps.onGroup?.({ size: group.length, commitMs: performance.now() - started, attempts: attempt });
      out.forEach((r, i) => ('ok' in r ? group[i].resolve(r.ok) : group[i].reject(r.err)));
      return;
    }
  }

  return {
    submit<T>(op: TxOp<T> | AppendOp): Promise<T> {
      if (closed) return Promise.reject(unavailable('The server is shutting down; retry on another replica.', 1));
      if (queued >= options.queueLimit)
        return Promise.reject(unavailable('The write queue is full; retry shortly.', 1));
      const lane = lanes[hash(op.partition) % lanes.length];
      queued++;
      return new Promise<T>((resolve, reject) => {
        lane.queue.push({ op: op, resolve: resolve, reject });
        if (lane.full && lane.queue.length >= options.maxBatch) lane.full();
        schedule(lane);
      });
    },

    /** Adds work to every group's transaction (e.g. the webhook outbox); a failure fails the group. */
    beforeCommit(hook: BeforeCommitHook) {
      beforeCommit.push(hook);
    },

    get depth() {
      return queued;
    },

    /** Stops taking writes and resolves when every queued group has committed. */
    async close(): Promise<void> {
      closed = true;
      lanes.forEach((l) => l.full?.());
      if (queued === 0) return;
      await new Promise<void>((r) => idleWaiters.push(r));
    },
  };
}

export type IngestPipeline = ReturnType<typeof createIngestPipeline>;
