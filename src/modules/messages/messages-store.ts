import type { Knex } from 'knex';
import type { Db } from '../../lib/db';
import type { EventProjection } from '../thread-log/thread-log-store';
import type { MessageVersionView, MessageView } from './messages-schemas';

export const MESSAGE_COLUMNS = [
  'thread_id',
  'id',
  'author',
  'seq',
  'body',
  'version',
  'created_at',
  'edited_at',
  'deleted',
  'reactions',
];

export function toMessageView(row: Record<string, unknown>): MessageView {
  return {
    id: row.id as string,
    thread_id: row.thread_id as string,
    author: row.author as string,
    seq: Number(row.seq),
    body: row.deleted ? null : (row.body ?? null),
    version: Number(row.version),
    created_at: row.created_at as string,
    edited_at: (row.edited_at as string | null) ?? null,
    deleted: Boolean(row.deleted),
    reactions: (row.reactions as Record<string, number>) ?? {},
  };
}

/**
 * New messages (records of project_id, thread_id, seq, id, author, body) as their
 * message.created events and their current-state rows, in the thread log's one statement.
 */
const createdProjection: EventProjection = {
  recordColumns: 'project_id text, thread_id text, seq bigint, id text, author text, body jsonb',
  eventsSelect: `select project_id, thread_id, seq, 'message.created', id, author,
                        jsonb_build_object('id', id, 'author', author, 'body', body, 'version', 1)
                   from r`,
  projection: `insert into messages (project_id, thread_id, seq, id, author, body, version, version_seqs, created_at)
               select project_id, thread_id, seq, id, author, body, 1, array[seq], now() from r`,
};

export function createMessagesStore() {
  return {
    createdProjection,

    /**
     * Messages with these client-chosen ids, as first created (their message.created event),
     * so a retry after an edit is still judged against, and answered with, the original.
     */
    async findAsCreated(tx: Knex.Transaction, keys: Array<{ projectId: string; threadId: string; id: string }>) {
      if (keys.length === 0) return [];
      const { rows } = await tx.raw(
        `select m.project_id, m.thread_id, m.id, m.author, m.seq, e.data->'body' as body, e.created_at
           from messages m
           join unnest(?::text[], ?::text[], ?::text[]) as k(project_id, thread_id, id)
             on m.project_id = k.project_id and m.thread_id = k.thread_id and m.id = k.id
           join events e on e.project_id = m.project_id and e.thread_id = m.thread_id and e.seq = m.seq`,
        [keys.map((k) => k.projectId), keys.map((k) => k.threadId), keys.map((k) => k.id)],
      );
      return (rows as Array<Record<string, unknown>>).map((row) => ({
        project_id: row.project_id as string,
        thread_id: row.thread_id as string,
        view: {
          id: row.id as string,
          thread_id: row.thread_id as string,
          author: row.author as string,
          seq: Number(row.seq),
          body: row.body ?? null,
          version: 1,
          created_at: row.created_at as string,
          edited_at: null,
          deleted: false,
          reactions: {},
        } satisfies MessageView,
      }));
    },

    async get(
      db: Db,
      projectId: string,
      threadId: string,
      id: string,
    ): Promise<(MessageView & { version_seqs: number[] }) | undefined> {
      const row = await db('messages')
        .first([...MESSAGE_COLUMNS, 'version_seqs'])
        .where({ project_id: projectId, thread_id: threadId, id });
      return row
        ? { ...toMessageView(row), version_seqs: (row.version_seqs as Array<string | number>).map(Number) }
        : undefined;
    },

    /**
     * One page in ascending seq order. Newest page: one backward scan of the (project, thread,
     * seq) primary key; the has_more flags come from the extra row and one index probe.
     */
    async page(
      db: Db,
      projectId: string,
      threadId: string,
      q: { limit: number; beforeSeq?: number; afterSeq?: number; includeDeleted: boolean },
    ) {
      const visible = q.includeDeleted ? '' : 'and not deleted';
      const cols = MESSAGE_COLUMNS.join(', ');
      if (q.afterSeq !== undefined) {
        const { rows } = await db.raw(
          `select ${cols}, exists (select 1 from messages where project_id = ? and thread_id = ? and seq <= ? ${visible}) as more_before
             from messages where project_id = ? and thread_id = ? and seq > ? ${visible}
            order by seq asc limit ?`,
          [projectId, threadId, q.afterSeq, projectId, threadId, q.afterSeq, q.limit + 1],
        );
        const more = rows.length > q.limit;
        const page = rows.slice(0, q.limit);
        const moreBefore =
          rows.length > 0
            ? Boolean(rows[0].more_before)
            : await hasAtOrBefore(db, projectId, threadId, q.afterSeq, visible);
        return { data: page.map(toMessageView), has_more_before: moreBefore, has_more_after: more };
      }
      const bound = q.beforeSeq !== undefined ? 'and seq < ?' : '';
      const { rows } = await db.raw(
        `select ${cols} from messages where project_id = ? and thread_id = ? ${bound} ${visible}
          order by seq desc limit ?`,
        [projectId, threadId, ...(q.beforeSeq !== undefined ? [q.beforeSeq] : []), q.limit + 1],
      );
      const more = rows.length > q.limit;
      const page = rows.slice(0, q.limit).reverse();
      const moreAfter =
        q.beforeSeq !== undefined ? await hasAtOrAfter(db, projectId, threadId, q.beforeSeq, visible) : false;
      return { data: page.map(toMessageView), has_more_before: more, has_more_after: moreAfter };
    },

    async versions(db: Db, projectId: string, threadId: string, seqs: number[]): Promise<MessageVersionView[]> {
      const rows = await db('message_versions')
        .select('version', 'seq', 'actor', 'body', 'deleted', 'created_at')
        .where({ project_id: projectId, thread_id: threadId })
        .whereIn('seq', seqs)
        .orderBy('seq');
      return rows.map((r) => ({ ...r, body: r.deleted ? null : (r.body ?? null), seq: Number(r.seq) }));
    },

    async applyEdit(
      db: Db,
      projectId: string,
      threadId: string,
      id: string,
      change: { body: unknown; deleted: boolean; seq: number },
    ) {
      const [row] = await db('messages')
        .where({ project_id: projectId, thread_id: threadId, id })
        .update({
          body: change.deleted ? null : JSON.stringify(change.body ?? null),
          deleted: change.deleted,
          version: db.raw('version + 1'),
          version_seqs: db.raw('array_append(version_seqs, ?::bigint)', [change.seq]),
          edited_at: db.fn.now(),
        })
        .returning(MESSAGE_COLUMNS);
      return toMessageView(row);
    },

    /** Adds (or removes) one user's reaction; false when that changed nothing. */
    async setReaction(
      db: Db,
      key: { projectId: string; threadId: string; messageId: string; reaction: string; userId: string },
      on: boolean,
    ) {
      const where = {
        project_id: key.projectId,
        thread_id: key.threadId,
        message_id: key.messageId,
        reaction: key.reaction,
        user_id: key.userId,
      };
      if (on) {
        const rows = await db('message_reactions').insert(where).onConflict().ignore().returning('reaction');
        return rows.length > 0;
      }
      return (await db('message_reactions').where(where).del()) > 0;
    },

    async adjustReactionCount(
      db: Db,
      projectId: string,
      threadId: string,
      messageId: string,
      reaction: string,
      delta: 1 | -1,
    ) {
      const [row] = await db('messages')
        .where({ project_id: projectId, thread_id: threadId, id: messageId })
        .update({
          reactions: db.raw(
            `case when coalesce((reactions->>?)::int, 0) + ? <= 0 then reactions - ?
                  else jsonb_set(reactions, array[?], to_jsonb(coalesce((reactions->>?)::int, 0) + ?)) end`,
            [reaction, delta, reaction, reaction, reaction, delta],
          ),
        })
        .returning(MESSAGE_COLUMNS);
      return toMessageView(row);
    },
  };
}

async function hasAtOrBefore(db: Db, projectId: string, threadId: string, seq: number, visible: string) {
  const { rows } = await db.raw(
    `select exists (select 1 from messages where project_id = ? and thread_id = ? and seq <= ? ${visible}) as e`,
    [projectId, threadId, seq],
  );
  return Boolean(rows[0].e);
}

async function hasAtOrAfter(db: Db, projectId: string, threadId: string, seq: number, visible: string) {
  const { rows } = await db.raw(
    `select exists (select 1 from messages where project_id = ? and thread_id = ? and seq >= ? ${visible}) as e`,
    [projectId, threadId, seq],
  );
  return Boolean(rows[0].e);
}

export type MessagesStore = ReturnType<typeof createMessagesStore>;
