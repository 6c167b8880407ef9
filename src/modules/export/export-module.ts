import type { Knex } from 'knex';
import type { RouteFactory } from '../../lib/http/route';
import type { IngestPipeline } from '../ingest/ingest-pipeline';
import type { MessagesStore } from '../messages/messages-store';
import { createExportRouter } from './export-router';
import { createExportService } from './export-service';
import { createExportStore } from './export-store';

/** Export (NDJSON backup of a project) and import of that format. */
export function createExportModule(deps: {
  db: Knex;
  ingest: IngestPipeline;
  messagesStore: Pick<MessagesStore, 'get' | 'setReaction' | 'adjustReactionCount'>;
  maxMessageBytes: number;
  maxLineBytes: number;
}) {
  const service = createExportService({
    db: deps.db,
    store: createExportStore(),
    ingest: deps.ingest,
    messagesStore: deps.messagesStore,
    batchSize: 500,
    maxMessageBytes: deps.maxMessageBytes,
  });
  return {
    service,
    router: (routes: RouteFactory) => createExportRouter({ routes, service, maxLineBytes: deps.maxLineBytes }),
  };
}
