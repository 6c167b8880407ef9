import type { Knex } from 'knex';
import type { Logger } from '../../lib/logger';
import { createIngestPipeline, type IngestOptions } from '../ingest/ingest-pipeline';
import { knexTransactionRunner } from '../ingest/transaction-runner';
import { commitScope, createThreadLog } from './thread-log';

/**
 * The write path's core: the thread log and the group-commit engine its writes go through.
 * Each group's scope collects commit pointers; the group ends with the log's NOTIFY.
 */
export function createThreadLogModule(deps: { db: Knex; logger: Logger; options: IngestOptions }) {
  const log = createThreadLog();
  const ingest = createIngestPipeline({
    runner: knexTransactionRunner(deps.db),
    logger: deps.logger,
    options: deps.options,
    scope: commitScope,
    finish: log.notify,
  });
  return { log, ingest };
}
