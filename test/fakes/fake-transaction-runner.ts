import type { TransactionRunner } from '../../src/modules/ingest/transaction-runner';

/** A transaction of the fake database: the writes it made, in order, and its savepoints. */
export class FakeTx {
  readonly writes: string[] = [];
  readonly log: string[] = [];
  private readonly savepoints = new Map<string, number>();

  write(value: string) {
    this.writes.push(value);
  }

  savepoint(name: string, step: 'begin' | 'release' | 'rollback') {
    this.log.push(`${step} ${name}`);
    if (step === 'begin') this.savepoints.set(name, this.writes.length);
    else if (step === 'rollback') this.writes.length = this.savepoints.get(name)!;
    if (step !== 'begin') this.savepoints.delete(name);
  }
}

export class RetryableError extends Error {}
export class ConnectionLost extends Error {}

/**
 * An in-memory database for the group-commit engine: a transaction's writes become visible in
 * `committed` only at COMMIT, savepoints roll back exactly their writes, and `failCommit` can
 * make COMMIT fail (as a deferred constraint would).
 */
export function createFakeRunner(opts: { failCommit?: (writes: string[]) => Error | null; autocommit?: boolean } = {}) {
  const committed: string[] = [];
  const transactions: FakeTx[] = [];
  /** Work run outside a transaction (`opts.autocommit`): its writes commit when it returns. */
  const autocommits: FakeTx[] = [];
  /** Runs `work` on a new FakeTx kept in `into`; its writes commit when it returns (unless failCommit says no). */
  async function commitAfter<R>(into: FakeTx[], work: (tx: FakeTx) => Promise<R>): Promise<R> {
    const tx = new FakeTx();
    into.push(tx);
    const result = await work(tx);
    const failure = opts.failCommit?.(tx.writes);
    if (failure) throw failure;
    committed.push(...tx.writes);
    return result;
  }
  const runner: TransactionRunner<FakeTx> = {
    transaction: (work) => commitAfter(transactions, work),
    async savepoint(tx, name, step) {
      await Promise.resolve();
      tx.savepoint(name, step);
    },
    ...(opts.autocommit && {
      autocommit: <R>(work: (tx: FakeTx) => Promise<R>) => commitAfter(autocommits, work),
    }),
    classify: (e) => (e instanceof RetryableError ? 'retry' : e instanceof ConnectionLost ? 'connection' : 'other'),
  };
  return { runner, committed, transactions, autocommits };
}
