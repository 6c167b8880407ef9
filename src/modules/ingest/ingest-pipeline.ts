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
export function createIngestPipeline(deps: { db: Knex; logger: Logger; options: IngestOptions; onGroup?: (s: GroupStats) => void }) {
  const { db, logger, options } = deps;
  const lanes = Array.from({ length: options.lanes }, () => ({ queue: [] as Pending[], busy: false, timer: null as NodeJS.Timeout | null }));
  let queued = 0;
  let closed = false;
  let idleWaiters: Array<() => void> = [];

  function schedule(lane: (typeof lanes)[number]) {
    if (lane.busy || lane.timer || lane.queue.length === 0) return;
    // Idle: go now (setImmediate lets requests parsed in the same tick join). Under load the
    // lane is busy and the queue fills while the previous group commits.
    const wait = lane.queue.length >= options.maxBatch ? 0 : options.maxWaitMs;
    const go = () => {
      lane.timer = null;
      void drain(lane);
    };
    lane.timer = wait > 0 ? setTimeout(go, wait) : (setImmediate(go) as unknown as NodeJS.Timeout);
  }

  async function drain(lane: (typeof lanes)[number]) {
    lane.busy = true;
    try {
      while (lane.queue.length > 0) {
        const group = lane.queue.splice(0, options.maxBatch);
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

  async function runSlow(tx: Knex.Transaction, pointers: CommitPointers, op: Op, i: number): Promise<{ ok: unknown } | { err: unknown }> {
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

  async function runGroup(tx: Knex.Transaction, group: Pending[]) {
    const pointers = new CommitPointers();
    const out: Array<{ ok: unknown } | { err: unknown } | undefined> = new Array(group.length);
    const fast = group.map((p, i) => ({ p, i })).filter(({ p }) => p.op.kind === 'append' && p.op.fast && !p.op.idempotency);
    if (fast.length > 0) {
      const local = new CommitPointers();
      await tx.raw('savepoint fast');
      try {
        const results = await appendMany(tx, local, fast.map(({ p }) => (p.op as AppendOp).request));
        await tx.raw('release savepoint fast');
        pointers.mergeFrom(local);
        results.forEach((r, k) => {
          if (r !== THREAD_MISSING) out[fast[k].i] = r instanceof AppError ? { err: r } : { ok: r };
        });
      } catch (e) {
        if (isConnectionError(e) || RETRYABLE.has(pgCode(e) ?? '')) throw e;
        // e.g. a client id inserted by another replica since our look-up: every append
        // of this group now runs alone, so only the offending one fails.
        logger.debug({ err: e }, 'fast path failed; falling back to one savepoint per append');
        await tx.raw('rollback to savepoint fast');
      }
    }
    for (let i = 0; i < group.length; i++) {
      if (!out[i]) out[i] = await runSlow(tx, pointers, group[i].op, i);
    }
    await notifyPointers(tx, pointers);
    return out as Array<{ ok: unknown } | { err: unknown }>;
  }

  async function commitGroup(group: Pending[]) {
    const started = performance.now();
    for (let attempt = 1; ; attempt++) {
      try {
        const out = await db.transaction((tx) => runGroup(tx, group));
        deps.onGroup?.({ size: group.length, commitMs: performance.now() - started, attempts: attempt });
        out.forEach((r, i) => ('ok' in r ? group[i].resolve(r.ok) : group[i].reject(r.err)));
        return;
      } catch (e) {
        if (RETRYABLE.has(pgCode(e) ?? '') && attempt < 5) continue;
        const err = isAppError(e)
          ? e
          : isConnectionError(e)
            ? unavailable('The database is not reachable right now; nothing was written. Retry shortly.', 1)
            : e;
        if (!isAppError(e) && !isConnectionError(e)) logger.error({ err: e }, 'ingest group failed');
        group.forEach((p) => p.reject(err));
        return;
      }
    }
  }

  return {
    submit<T>(op: TxOp<T> | AppendOp): Promise<T> {
      if (closed) return Promise.reject(unavailable('The server is shutting down; retry on another replica.', 1));
      if (queued >= options.queueLimit) return Promise.reject(unavailable('The write queue is full; retry shortly.', 1));
      const lane = lanes[hash(op.partition) % lanes.length];
      queued++;
      return new Promise<T>((resolve, reject) => {
        lane.queue.push({ op: op as Op, resolve: resolve as (v: unknown) => void, reject });
        schedule(lane);
      });
    },

    get depth() {
      return queued;
    },

    /** Stops taking writes and resolves when every queued group has committed. */
    async close(): Promise<void> {
      closed = true;
      if (queued === 0) return;
      await new Promise<void>((r) => idleWaiters.push(r));
    },
  };
}

export type IngestPipeline = ReturnType<typeof createIngestPipeline>;
