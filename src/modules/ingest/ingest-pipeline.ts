import { isAppError, unavailable } from '../../lib/errors';
import type { Logger } from '../../lib/logger';
import type { TransactionRunner } from './transaction-runner';

/**
 * Group commit, knowing no feature. Work items queue per lane (partitions hash to lanes, so
 * two groups of this process never contend for one partition); a lane commits its queue in
 * groups: one transaction per group, each item in its own savepoint (or merged with others of
 * the same `Batcher` into shared statements), the hooks, then COMMIT — and only then is every
 * caller answered, with its own result or its own error.
 *
 * `S` is the group's scope: what the items record as they write (the thread log's commit
 * pointers). Each savepoint writes into a fresh scope that is merged into the group's only
 * if the savepoint is released, so a rolled-back item leaves nothing behind.
 */
export interface WorkItem<T, S, Tx = unknown> {
  /** Items with the same partition go through the same lane, in submission order. */
  partition: string;
  /** Runs alone, in a savepoint of the group's transaction. */
  run(tx: Tx, scope: S): Promise<T>;
  /**
   * Optional: run together with the group's other items of this batcher instead; `after`, when
   * given, then runs on this item's result together with the batch's other items of that step.
   */
  merge?: {
    batcher: Batcher<unknown, T, S, Tx>;
    input: unknown;
    after?: { step: AfterBatch<T, Tx>; input: unknown };
  };
}

/**
 * A statement after a batch, inside the batch's savepoint, over the batch's items that succeeded
 * and carry it (e.g. one INSERT storing all their Idempotency-Key responses). It returns the
 * positions in `done` whose writes must not commit: the batch is rolled back and run again
 * without them, and they run alone (`WorkItem.run`), where their own rule answers.
 */
export interface AfterBatch<T, Tx = unknown> {
  name: string;
  run(tx: Tx, done: Array<{ input: unknown; value: T }>): Promise<number[]>;
}

/** A batch result that sends its item back to run alone (`WorkItem.run`). */
export const RUN_ALONE = Symbol('run-alone');
export type BatchResult<T> = { ok: T } | { err: unknown } | typeof RUN_ALONE;

/** Runs many items' inputs in shared statements; one result per input, in order. */
export interface Batcher<I, T, S, Tx = unknown> {
  name: string;
  /**
   * Names of `beforeCommit` hooks this batcher can fold into its own statement (see `run`).
   * Read at every group, so it may grow after the batcher is made.
   */
  folds?: ReadonlySet<string>;
  /**
   * Whether this input may commit in a group that is one autocommit statement (no BEGIN, no
   * COMMIT): true only when its writes need no lock or check held across statements.
   */
  autocommits?(input: I): boolean;
  /**
   * `finish`, when given, says this is the group's last batch: the batcher may fold the
   * group's finishing step into it (the NOTIFY), covering `finish.group` (what no NOTIFY has
   * covered yet) and its own scope, and then return `finished: true`. The finishing step must
   * be one whose effect waits for COMMIT (a NOTIFY is delivered then, or never): the
   * `beforeCommit` hooks still run after it, unless `finish.hooks` says they may be folded
   * too (every hook is in `folds`, and this batch is the only one that wrote so far): then
   * the batcher may run them over its own scope in its statement and return `hooked: true`.
   * With `finish.autocommit`, the batch is the whole group and runs without a transaction:
   * the batcher must fold the finishing step and the hooks into the statement that writes
   * (or write nothing).
   */
  run(
    tx: Tx,
    scope: S,
    inputs: I[],
    finish?: { group: S; hooks?: boolean; autocommit?: boolean },
  ): Promise<{ results: Array<BatchResult<T>>; finished?: boolean; hooked?: boolean }>;
}

/**
 * Runs in every group's transaction after its writes, before COMMIT (and before the finishing
 * step, unless a batch folded that in), with everything the group wrote that no batch folded
 * this hook into (a hook registered with a name that batcher `folds`).
 */
export type BeforeCommitHook<S, Tx = unknown> = (tx: Tx, committed: S) => Promise<void>;

/** How a group's scope is created and combined. */
export interface GroupScope<S> {
  create(): S;
  merge(into: S, from: S): void;
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

export interface IngestDeps<S, Tx> {
  runner: TransactionRunner<Tx>;
  logger: Logger;
  options: IngestOptions;
  scope: GroupScope<S>;
  /**
   * The group's last step, after the hooks (the thread log's NOTIFY), over what no folded step
   * covered; the group's last batch may fold it in.
   */
  finish?: (tx: Tx, scope: S) => Promise<void>;
}

interface Pending<S, Tx> {
  item: WorkItem<unknown, S, Tx>;
  resolve(v: unknown): void;
  reject(e: unknown): void;
}

type Outcome = { ok: unknown } | { err: unknown };

/** A group's scopes while it runs: what no folded hook, and what no NOTIFY, has covered yet. */
interface Scopes<S> {
  unhooked: S;
  unnotified: S;
}

/** The savepoint-less first batch of a group failed: run the group again, with savepoints. */
class BareBatchFailed extends Error {
  constructor(readonly reason: unknown) {
    super('merged batch failed');
  }
}

/** An `AfterBatch` step refused these items of the batch (positions in the batch). */
class BatchRejected extends Error {
  constructor(readonly positions: Set<number>) {
    super('after-batch step refused items');
  }
}

export function partitionHash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

export function createIngestPipeline<S, Tx>(deps: IngestDeps<S, Tx>) {
  const { runner, logger, options, scope } = deps;
  type Lane = { queue: Array<Pending<S, Tx>>; busy: boolean; scheduled: boolean; full: (() => void) | null };
  const lanes: Lane[] = Array.from({ length: options.lanes }, () => ({
    queue: [],
    busy: false,
    scheduled: false,
    full: null,
  }));
  let queued = 0;
  let closed = false;
  let idleWaiters: Array<() => void> = [];
  const hooks: Array<{ hook: BeforeCommitHook<S, Tx>; name?: string }> = [];
  const observers = new Set<(s: GroupStats) => void>();

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

  /** Every hook may be folded into this batcher's statement. */
  function foldable(batcher: Batcher<unknown, unknown, S, Tx>): boolean {
    return hooks.every((h) => h.name !== undefined && batcher.folds?.has(h.name) === true);
  }

  /**
   * A group that can be one autocommit statement: one batcher's items only, each of which it
   * says may autocommit, none with an `after` step, every hook and the finishing step foldable.
   */
  function autocommitBatcher(group: Array<Pending<S, Tx>>): Batcher<unknown, unknown, S, Tx> | null {
    if (!runner.autocommit || !deps.finish) return null;
    const batcher = group[0].item.merge?.batcher;
    if (!batcher?.autocommits || !foldable(batcher)) return null;
    for (const { item } of group) {
      if (item.merge?.batcher !== batcher || item.merge.after || !batcher.autocommits(item.merge.input)) return null;
    }
    return batcher;
  }

  /**
   * The group as one autocommit statement: no BEGIN, no COMMIT, one round trip for the writes,
   * the hooks and the NOTIFY. When it returns, it has committed. Items the batch sends back are
   * returned (they then commit in a group of their own, in order); a failure is thrown, and
   * nothing was written.
   */
  async function commitAutocommit(
    batcher: Batcher<unknown, unknown, S, Tx>,
    group: Array<Pending<S, Tx>>,
  ): Promise<{ out: Array<Outcome | undefined>; rest: Array<Pending<S, Tx>> }> {
    const { results } = await runner.autocommit!((tx) =>
      batcher.run(
        tx,
        scope.create(),
        group.map((p) => p.item.merge!.input),
        { group: scope.create(), hooks: true, autocommit: true },
      ),
    );
    const rest = group.filter((_, i) => results[i] === RUN_ALONE);
    return { out: results.map((r) => (r === RUN_ALONE ? undefined : r)), rest };
  }

  /** One item alone in a savepoint: its error rolls back only its own writes. */
  async function runAlone(tx: Tx, group: Scopes<S>, item: WorkItem<unknown, S, Tx>, name: string): Promise<Outcome> {
    const local = scope.create();
    await runner.savepoint(tx, name, 'begin');
    try {
      const value = await item.run(tx, local);
      await runner.savepoint(tx, name, 'release');
      scope.merge(group.unhooked, local);
      scope.merge(group.unnotified, local);
      return { ok: value };
    } catch (e) {
      const kind = runner.classify(e);
      if (kind === 'connection') throw e;
      await runner.savepoint(tx, name, 'rollback');
      if (kind === 'retry') throw e;
      return { err: e };
    }
  }

  /** The batch's `after` steps, one call per step over its items that succeeded; refused positions. */
  async function runAfterSteps(
    tx: Tx,
    batch: Array<{ item: WorkItem<unknown, S, Tx> }>,
    results: Array<BatchResult<unknown>>,
  ): Promise<Set<number>> {
    const steps = new Map<AfterBatch<unknown, Tx>, Array<{ k: number; input: unknown; value: unknown }>>();
    batch.forEach(({ item }, k) => {
      const after = item.merge!.after;
      const r = results[k];
      if (!after || r === RUN_ALONE || !('ok' in r)) return;
      const list = steps.get(after.step) ?? [];
      list.push({ k, input: after.input, value: r.ok });
      steps.set(after.step, list);
    });
    const refused = new Set<number>();
    for (const [step, done] of steps) {
      const positions = await step.run(
        tx,
        done.map(({ input, value }) => ({ input, value })),
      );
      for (const j of positions) refused.add(done[j].k);
    }
    return refused;
  }

  /**
   * Items of one batcher in shared statements; what the batcher sends back stays undefined in
   * `out`. When the batch is the transaction's first statement it runs without a savepoint
   * (two round trips fewer per group): if it fails, the group is retried with savepoints.
   * Items an `after` step refuses: the batch is rolled back and run again without them.
   */
  async function runBatch(
    tx: Tx,
    group: Scopes<S>,
    batch: Array<{ item: WorkItem<unknown, S, Tx>; i: number }>,
    out: Array<Outcome | undefined>,
    name: string,
    bare: boolean,
    last: boolean,
    only: boolean,
  ): Promise<{ finished: boolean }> {
    const batcher = batch[0].item.merge!.batcher;
    const local = scope.create();
    if (!bare) await runner.savepoint(tx, name, 'begin');
    try {
      const { results, finished, hooked } = await batcher.run(
        tx,
        local,
        batch.map(({ item }) => item.merge!.input),
        last ? { group: group.unnotified, hooks: only && foldable(batcher) } : undefined,
      );
      const refused = await runAfterSteps(tx, batch, results);
      if (refused.size > 0) throw new BatchRejected(refused);
      if (!bare) await runner.savepoint(tx, name, 'release');
      if (!hooked) scope.merge(group.unhooked, local);
      if (finished) group.unnotified = scope.create();
      else scope.merge(group.unnotified, local);
      results.forEach((r, k) => {
        if (r !== RUN_ALONE) out[batch[k].i] = r;
      });
      return { finished: Boolean(finished) };
    } catch (e) {
      const rejected = e instanceof BatchRejected;
      if (!rejected && runner.classify(e) !== 'other') throw e;
      if (bare) throw new BareBatchFailed(e);
      await runner.savepoint(tx, name, 'rollback');
      if (rejected) {
        // e.g. an Idempotency-Key another request stored first: the others again, those alone.
        logger.debug({ refused: e.positions.size, batcher: batcher.name }, 'batch items refused; running them alone');
        const rest = batch.filter((_, k) => !e.positions.has(k));
        return rest.length > 0 ? runBatch(tx, group, rest, out, name, false, last, only) : { finished: false };
      }
      // e.g. a client id inserted by another replica since our look-up: every item of this
      // batch now runs alone, so only the offending one fails.
      logger.debug({ err: e, batcher: batcher.name }, 'merged batch failed; running its items alone');
      return { finished: false };
    }
  }

  /**
   * Runs a group inside one transaction. Mergeable items are merged into as few batches as
   * per-partition order allows: a batch is flushed before any other item on one of its
   * partitions, so within a partition, items take effect in submission order.
   */
  async function runGroup(tx: Tx, group: Array<Pending<S, Tx>>, savepoints: boolean): Promise<Outcome[]> {
    // `unhooked`: what the group wrote that no folded hook covered (what the hooks see);
    // `unnotified`: what no folded NOTIFY has covered yet (what the finishing step still sends).
    const scopes: Scopes<S> = { unhooked: scope.create(), unnotified: scope.create() };
    const out: Array<Outcome | undefined> = new Array(group.length);
    let batch: Array<{ item: WorkItem<unknown, S, Tx>; i: number }> = [];
    let inBatch = new Set<string>();
    let batches = 0;
    let aloneRan = 0;
    const flush = async (last: boolean) => {
      if (batch.length === 0) return;
      const flushed = batch;
      batch = [];
      inBatch = new Set();
      const first = batches === 0 && aloneRan === 0;
      // The group's last statement may carry the finishing step (the NOTIFY): notifications
      // are only delivered at COMMIT, so the hooks running after it change nothing about what
      // is sent (they cannot add to the scope), and a hook that fails rolls the NOTIFY back too.
      await runBatch(
        tx,
        scopes,
        flushed,
        out,
        `batch_${batches++}`,
        first && !savepoints,
        last && deps.finish !== undefined,
        first,
      );
      // Items sent back, and items of a failed batch: each alone, still in submission order.
      for (const { i } of flushed) out[i] ??= await runAlone(tx, scopes, group[i].item, `item_${i}`);
    };
    for (let i = 0; i < group.length; i++) {
      const item = group[i].item;
      if (item.merge) {
        if (batch.length > 0 && batch[0].item.merge!.batcher !== item.merge.batcher) await flush(false);
        batch.push({ item, i });
        inBatch.add(item.partition);
        continue;
      }
      if (inBatch.has(item.partition)) await flush(false);
      aloneRan++;
      out[i] = await runAlone(tx, scopes, item, `item_${i}`);
    }
    await flush(true);
    for (const { hook } of hooks) await hook(tx, scopes.unhooked);
    if (deps.finish) await deps.finish(tx, scopes.unnotified);
    return out as Outcome[];
  }

  /**
   * Commits a group and answers each caller after COMMIT. A group that fails as a whole
   * (typically at COMMIT: a deferred constraint, or an error outside any one item's savepoint)
   * answers nobody with success; it is split in halves and retried, so the one write that
   * cannot commit fails alone and its neighbours still commit.
   */
  async function commitGroup(group: Array<Pending<S, Tx>>, mayAutocommit = true): Promise<void> {
    const started = performance.now();
    let savepoints = false;
    const solo = mayAutocommit ? autocommitBatcher(group) : null;
    for (let attempt = 1; ; attempt++) {
      let out: Outcome[];
      try {
        if (solo && !savepoints) {
          const { out: done, rest } = await commitAutocommit(solo, group);
          const stats = { size: group.length - rest.length, commitMs: performance.now() - started, attempts: attempt };
          observers.forEach((o) => o(stats));
          done.forEach((r, i) => r && ('ok' in r ? group[i].resolve(r.ok) : group[i].reject(r.err)));
          // Sent back (e.g. a thread to create): each alone, in a transaction of their own.
          if (rest.length > 0) await commitGroup(rest, false);
          return;
        }
        out = await runner.transaction((tx) => runGroup(tx, group, savepoints));
      } catch (e) {
        if (e instanceof BareBatchFailed && !savepoints) {
          logger.debug({ err: e.reason }, 'merged batch failed; retrying the group with savepoints');
          savepoints = true;
          attempt--;
          continue;
        }
        const kind = runner.classify(e);
        if (solo && !savepoints && kind === 'other') {
          // The one statement failed and wrote nothing: the group again, each item in its savepoint.
          logger.debug({ err: e }, 'autocommit group failed; retrying it with savepoints');
          savepoints = true;
          attempt--;
          continue;
        }
        if (kind === 'retry' && attempt < 5) continue;
        if (kind === 'connection') {
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
      const stats = { size: group.length, commitMs: performance.now() - started, attempts: attempt };
      observers.forEach((o) => o(stats));
      out.forEach((r, i) => ('ok' in r ? group[i].resolve(r.ok) : group[i].reject(r.err)));
      return;
    }
  }

  return {
    /** Queues a work item; resolves with its result after its group committed. */
    submit<T>(item: WorkItem<T, S, Tx>): Promise<T> {
      if (closed) return Promise.reject(unavailable('The server is shutting down; retry on another replica.', 1));
      if (queued >= options.queueLimit)
        return Promise.reject(unavailable('The write queue is full; retry shortly.', 1));
      const lane = lanes[partitionHash(item.partition) % lanes.length];
      queued++;
      return new Promise<T>((resolve, reject) => {
        lane.queue.push({ item: item, resolve: resolve, reject });
        if (lane.full && lane.queue.length >= options.maxBatch) lane.full();
        schedule(lane);
      });
    },

    /**
     * Adds work to every group's transaction, after its writes and before the (unfolded)
     * finishing step and COMMIT, with what the group committed (e.g. the webhook outbox); a failure fails the
     * group (which is then split and retried like any other). With `name`, a batcher that
     * `folds` it may run it in its own statement instead (then it sees only the rest).
     */
    beforeCommit(hook: BeforeCommitHook<S, Tx>, opts: { name?: string } = {}) {
      hooks.push({ hook, name: opts.name });
    },

    /** Calls `observer` after every committed group; returns a function that stops it. */
    observe(observer: (s: GroupStats) => void): () => void {
      observers.add(observer);
      return () => observers.delete(observer);
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

export type IngestEngine<S, Tx> = ReturnType<typeof createIngestPipeline<S, Tx>>;
