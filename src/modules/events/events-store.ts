import type { Db } from '../../lib/db';
import type { EventView } from './events-schemas';

export function createEventsStore() {
  return {
    /**
     * Whether these rows, as stored, differ from what `after` would return for them (a wrapping
     * store that opens sealed bodies says yes for sealed ones): the live tail fans out events
     * carried by a NOTIFY only when they need nothing done to them.
     */
    needsOpening: (_events: EventView[]): boolean => false,

    /** Events with seq > afterSeq, ascending: a range scan of the log's primary key. */
    async after(db: Db, projectId: string, threadId: string, afterSeq: number, limit: number): Promise<EventView[]> {
      const rows = await db('events')
        .select('seq', 'type', 'thread_id', 'message_id', 'actor', 'data', 'created_at')
        .where({ project_id: projectId, thread_id: threadId })
        .andWhere('seq', '>', afterSeq)
        .orderBy('seq')
        .limit(limit);
      return rows.map((r) => ({ ...r, seq: Number(r.seq) }));
    },
  };
}

export type EventsStore = ReturnType<typeof createEventsStore>;
