import type { Knex } from 'knex';
import { badRequest, unprocessable } from '../../lib/errors';
import type { ApiPrincipal } from '../../lib/http/route';
import type { ThreadsService } from '../threads/threads-service';
import type { ReadMarkView } from './read-state-schemas';
import type { ReadStateStore } from './read-state-store';

export type ReadMarkListener = (mark: { projectId: string; threadId: string; userId: string; seq: number }) => void;

function requireUser(principal: ApiPrincipal): string {
  if (!principal.userId)
    throw badRequest('Read state is per user: send X-User-ID (and X-User-Signature with a publishable key).');
  return principal.userId;
}

export function createReadStateService(deps: {
  db: Knex;
  threads: Pick<ThreadsService, 'authorize'>;
  store: ReadStateStore;
}) {
  const { db, store } = deps;
  const listeners: ReadMarkListener[] = [];

  return {
    /** Called after every stored mark, e.g. to tell the user's other devices over WebSocket. */
    onMarked(fn: ReadMarkListener) {
      listeners.push(fn);
    },

    async markRead(principal: ApiPrincipal, threadId: string, seq: number): Promise<ReadMarkView> {
      const userId = requireUser(principal);
      const thread = await deps.threads.authorize(db, principal, threadId, 'read');
      if (seq > Number(thread.last_seq))
        throw unprocessable(`seq ${seq} is past the thread's last_seq ${thread.last_seq}.`, [
          { path: 'body.seq', message: `must be at most ${thread.last_seq}` },
        ]);
      const mark = await store.markRead(db, principal.projectId, userId, threadId, seq);
      const unread = (await store.forThreads(db, principal.projectId, userId, [threadId])).get(threadId) ?? 0;
      for (const l of listeners) l({ projectId: principal.projectId, threadId, userId, seq: mark });
      return { thread_id: threadId, user_id: userId, last_read_seq: mark, unread };
    },

    async unread(principal: ApiPrincipal) {
      const userId = requireUser(principal);
      const data = await store.forMember(db, principal.projectId, userId);
      return { data, total: data.reduce((n, r) => n + r.unread, 0) };
    },

    /** For thread lists: unread per thread id for the calling user (empty without a user). */
    async countsFor(principal: ApiPrincipal, threadIds: string[]): Promise<Map<string, number>> {
      if (!principal.userId) return new Map();
      return store.forThreads(db, principal.projectId, principal.userId, threadIds);
    },
  };
}

export type ReadStateService = ReturnType<typeof createReadStateService>;
