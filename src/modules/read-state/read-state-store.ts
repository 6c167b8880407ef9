import type { Db } from '../../lib/db';

/** Counting stops here: a thread with more unread messages reports this many (shown as "10000+"). */
export const UNREAD_CAP = 10_000;

export interface UnreadRow {
  thread_id: string;
  last_seq: number;
  last_read_seq: number;
  unread: number;
}

export interface UnreadPageRow extends UnreadRow {
  /** The page's keyset, with the thread id. */
  last_activity_at: string;
}

// Unread = live (not deleted) messages by other authors with seq > the user's read mark.
// Each count is a range scan of messages' primary key from the mark, skipped entirely when
// the thread has nothing past the mark, and capped so a never-read huge thread stays cheap.
// `t` names a row with project_id, id and last_seq; `mark` is the read mark's expression.
const unreadOf = (t: string, mark: string) => `
  case when ${t}.last_seq <= ${mark} then 0 else (
    select count(*) from (
      select 1 from messages msg
       where msg.project_id = ${t}.project_id and msg.thread_id = ${t}.id
         and msg.seq > ${mark} and not msg.deleted and msg.author <> ?
       limit ${UNREAD_CAP}
    ) capped
  ) end::int`;

export function createReadStateStore() {
  return {
    /** Moves the mark forward (never back); returns the stored mark. */
    async markRead(db: Db, projectId: string, userId: string, threadId: string, seq: number): Promise<number> {
      const { rows } = await db.raw(
        `insert into read_marks (project_id, user_id, thread_id, seq) values (?, ?, ?, ?)
         on conflict (project_id, user_id, thread_id)
         do update set seq = greatest(read_marks.seq, excluded.seq),
                       updated_at = case when excluded.seq > read_marks.seq then now() else read_marks.updated_at end
         returning seq`,
        [projectId, userId, threadId, seq],
      );
      return Number(rows[0].seq);
    },

    /**
     * A page of the live threads the user is a member of, most recent activity first (ties by
     * id), after the keyset `after`. The page is chosen first (membership index, thread primary
     * key, a top-N sort), then read marks and counts are looked up for its rows only.
     */
    async pageForMember(
      db: Db,
      projectId: string,
      userId: string,
      limit: number,
      after?: { at: string; id: string },
    ): Promise<UnreadPageRow[]> {
      const { rows } = await db.raw(
        `select p.id as thread_id, p.last_seq, coalesce(r.seq, 0) as last_read_seq, p.last_activity_at,
                ${unreadOf('p', 'coalesce(r.seq, 0)')} as unread
           from (
             select t.project_id, t.id, t.last_seq, t.last_activity_at
               from thread_members m
               join threads t on t.project_id = m.project_id and t.id = m.thread_id and t.deleted_at is null
              where m.project_id = ? and m.user_id = ?
                ${after ? 'and (t.last_activity_at, t.id) < (?::timestamptz, ?)' : ''}
              order by t.last_activity_at desc, t.id desc
              limit ?
           ) p
           left join read_marks r on r.project_id = p.project_id and r.user_id = ? and r.thread_id = p.id
          order by p.last_activity_at desc, p.id desc`,
        [userId, projectId, userId, ...(after ? [after.at, after.id] : []), limit, userId],
      );
      return rows as UnreadPageRow[];
    },

    /** Unread counts for the given threads (one query), keyed by thread id. */
    async forThreads(db: Db, projectId: string, userId: string, threadIds: string[]): Promise<Map<string, number>> {
      if (threadIds.length === 0) return new Map();
      const { rows } = await db.raw(
        `select t.id as thread_id, ${unreadOf('t', 'coalesce(r.seq, 0)')} as unread
           from threads t
           left join read_marks r on r.project_id = t.project_id and r.user_id = ? and r.thread_id = t.id
          where t.project_id = ? and t.id = any(?::text[])`,
        [userId, userId, projectId, threadIds],
      );
      return new Map((rows as Array<{ thread_id: string; unread: number }>).map((r) => [r.thread_id, r.unread]));
    },
  };
}

export type ReadStateStore = ReturnType<typeof createReadStateStore>;
