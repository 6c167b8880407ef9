import type { Knex } from 'knex';
import { isConnectionError, pgCode } from '../../lib/db';

/** What the group-commit engine needs from a database: transactions, savepoints, error kinds. */
export interface TransactionRunner<Tx> {
  transaction<R>(work: (tx: Tx) => Promise<R>): Promise<R>;
  savepoint(tx: Tx, name: string, step: 'begin' | 'release' | 'rollback'): Promise<void>;
  /**
   * Runs `work` outside any transaction: each of its statements commits on its own (work that
   * writes in one statement only). Optional: without it every group is a transaction.
   */
  autocommit?<R>(work: (tx: Tx) => Promise<R>): Promise<R>;
  /** `retry`: run the group again (deadlock, serialization); `connection`: the database is gone. */
  classify(e: unknown): 'retry' | 'connection' | 'other';
}

const RETRYABLE = new Set(['40P01', '40001']); // deadlock, serialization failure

const SAVEPOINT_SQL = { begin: 'savepoint', release: 'release savepoint', rollback: 'rollback to savepoint' };

export function knexTransactionRunner(db: Knex): TransactionRunner<Knex.Transaction> {
  return {
    transaction: (work) => db.transaction(work),
    // The pool itself: every statement on its own connection, committed when it returns. Work
    // items never call commit or rollback, the only members a transaction adds.
    autocommit: (work) => work(db as Knex.Transaction),
    async savepoint(tx, name, step) {
      await tx.raw(`${SAVEPOINT_SQL[step]} ${name}`);
    },
    classify(e) {
      if (isConnectionError(e)) return 'connection';
      return RETRYABLE.has(pgCode(e) ?? '') ? 'retry' : 'other';
    },
  };
}
