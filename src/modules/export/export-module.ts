import type { Knex } from 'knex';
import type { RouteFactory } from '../../lib/http/route';
import type { LogIngest, ThreadLog } from '../thread-log/thread-log';
import type { MessagesStore } from '../messages/messages-store';
import { createExportRouter } from './export-router';
import { createExportService } from './export-service';
import { createExportStore } from './export-store';

/** Export (NDJSON backup of a project) and import of that format. */
export function createExportModule(deps: {
  db: Knex;
  ingest: LogIngest;
  log: Pick<ThreadLog, 'append'>;
  messagesStore: Pick<MessagesStore, 'get' | 'setReaction' | 'adjustReactionCount'>;
  maxMessageBytes: number;
  maxLineBytes: number;
}) {
  const service = createExportService({
    db: deps.db,
    store: createExportStore(),
    ingest: deps.ingest,
    log: deps.log,
    messagesStore: deps.messagesStore,
    batchSize: 500,
    maxMessageBytes: deps.maxMessageBytes,
  });
  return {
    service,
    router: (routes: RouteFactory) => createExportRouter({ routes, service, maxLineBytes: deps.maxLineBytes }),
  };
}
