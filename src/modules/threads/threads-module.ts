import type { Knex } from 'knex';
import type { RouteFactory } from '../../lib/http/route';
import type { Idempotency } from '../idempotency/idempotency';
import type { LogIngest, ThreadLog } from '../thread-log/thread-log';
import { createThreadsRouter } from './threads-router';
import { createThreadsService } from './threads-service';
import { createThreadsStore } from './threads-store';

/** Threads, members and policies: the service others call, and the /v1/threads routes. */
export function createThreadsModule(deps: {
  db: Knex;
  ingest: LogIngest;
  log: ThreadLog;
  idempotency: Idempotency;
  unreadCounts?: (projectId: string, userId: string, threadIds: string[]) => Promise<Map<string, number>>;
  onReadAccessBatch?: (size: number) => void;
}) {
  const threads = createThreadsService({ ...deps, threadsStore: createThreadsStore() });
  return {
    threads,
    router: (routes: RouteFactory) => createThreadsRouter({ routes, threads, idempotency: deps.idempotency }),
  };
}
