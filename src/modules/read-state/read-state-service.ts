import type { Knex } from 'knex';
import { badRequest, unprocessable } from '../../lib/errors';
import { cursorTimestamp, decodePageCursor, encodePageCursor } from '../../lib/http/page-cursor';
import type { ApiPrincipal } from '../../lib/http/route';
import { idSchema } from '../../lib/ids';
import { z } from '../../lib/zod';
import type { ThreadsService } from '../threads/threads-service';
import type { ReadMarkView, UnreadListView } from './read-state-schemas';
import type { ReadStateStore } from './read-state-store';

/** An unread page's cursor: the keyset (last_activity_at, thread id) of its last row. */
const unreadCursor = z.tuple([cursorTimestamp, idSchema]);

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

    /** A page of the user's unread counts, most recent activity first (ties by thread id). */
    async unread(principal: ApiPrincipal, page: { limit: number; cursor?: string }): Promise<UnreadListView> {
      const userId = requireUser(principal);
      const after = page.cursor ? decodePageCursor(page.cursor, 'unread', unreadCursor) : undefined;
      const rows = await store.pageForMember(
        db,
        principal.projectId,
        userId,
        page.limit + 1,
        after && { at: after[0], id: after[1] },
      );
      const kept = rows.slice(0, page.limit);
      const last = kept[kept.length - 1];
      return {
        data: kept.map(({ last_activity_at: _at, ...r }) => r),
        total: kept.reduce((n, r) => n + r.unread, 0),
        next_cursor:
          rows.length > page.limit ? encodePageCursor('unread', last.last_activity_at, last.thread_id) : null,
      };
    },

    /** For thread lists: unread per thread id for the calling user (empty without a user). */
    async countsFor(principal: ApiPrincipal, threadIds: string[]): Promise<Map<string, number>> {
      if (!principal.userId) return new Map();
      return store.forThreads(db, principal.projectId, principal.userId, threadIds);
    },
  };
}

export type ReadStateService = ReturnType<typeof createReadStateService>;
