import type { Knex } from 'knex';
import type { RouteFactory } from '../../lib/http/route';
import type { Idempotency } from '../idempotency/idempotency';
import type { LogIngest, ThreadLog } from '../thread-log/thread-log';
import type { ThreadsService } from '../threads/threads-service';
import { createMessagesRouter } from './messages-router';
import { createMessagesService, type MessageCrypto } from './messages-service';
import { createMessagesStore } from './messages-store';
import type { PageCache } from './page-cache';

/** Messages: append (REST, batch, WebSocket send), edit, delete, reactions, pages and versions. */
export function createMessagesModule(deps: {
  db: Knex;
  ingest: LogIngest;
  log: ThreadLog;
  idempotency: Idempotency;
  threads: Pick<ThreadsService, 'authorize' | 'authorizeRead' | 'mayWrite' | 'writeGuard' | 'createIfAbsent'>;
  maxMessageBytes: number;
  /** Distinct reactions one message may carry. */
  maxReactionsPerMessage: number;
  crypto: MessageCrypto;
  pageCache?: PageCache;
  sealedPageTtlMs?: number;
  /** Messages a request actually wrote (usage counting). */
  onAppended?: (projectId: string, newMessages: number) => void;
}) {
  const messages = createMessagesService({ ...deps, messagesStore: createMessagesStore() });
  return {
    messages,
    router: (routes: RouteFactory) =>
      createMessagesRouter({ routes, messages, idempotency: deps.idempotency, onAppended: deps.onAppended }),
  };
}
