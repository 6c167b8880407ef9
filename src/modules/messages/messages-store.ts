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
  'reply_to',
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
    reply_to: (row.reply_to as string | null) ?? null,
  };
}

/**
 * New messages (records of project_id, thread_id, seq, id, author, body, reply_to) as their
 * message.created events and their current-state rows, in the thread log's one statement.
 */
const createdProjection: EventProjection = {
  recordColumns: 'project_id text, thread_id text, seq bigint, id text, author text, body jsonb, reply_to text',
  eventsSelect: `select project_id, thread_id, seq, 'message.created', id, author,
                        jsonb_build_object('id', id, 'author', author, 'body', body, 'version', 1)
                        || case when reply_to is null then '{}'::jsonb else jsonb_build_object('reply_to', reply_to) end
                   from r`,
  projection: `insert into messages (project_id, thread_id, seq, id, author, body, version, version_seqs, created_at, reply_to)
               select project_id, thread_id, seq, id, author, body, 1, array[seq], now(), reply_to from r`,
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
        `select m.project_id, m.thread_id, m.id, m.author, m.seq, e.data->'body' as body, e.created_at, m.reply_to
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
          reply_to: (row.reply_to as string | null) ?? null,
        } satisfies MessageView,
      }));
    },

    /** Which of these messages exist (reply_to parents). */
    async existing(tx: Knex.Transaction, keys: Array<{ projectId: string; threadId: string; id: string }>) {
      if (keys.length === 0) return [];
      const { rows } = await tx.raw(
        `select m.project_id, m.thread_id, m.id
           from messages m
           join unnest(?::text[], ?::text[], ?::text[]) as k(project_id, thread_id, id)
             on m.project_id = k.project_id and m.thread_id = k.thread_id and m.id = k.id`,
        [keys.map((k) => k.projectId), keys.map((k) => k.threadId), keys.map((k) => k.id)],
      );
      return rows as Array<{ project_id: string; thread_id: string; id: string }>;
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
     * `replyTo` / `author` narrow every scan and probe to that reply chain or author.
     */
    async page(db: Db, projectId: string, threadId: string, q: PageFilter & { beforeSeq?: number; afterSeq?: number }) {
      const f = pageFilter(q);
      const cols = MESSAGE_COLUMNS.join(', ');
      if (q.afterSeq !== undefined) {
        const { rows } = await db.raw(
          `select ${cols}, exists (select 1 from messages where project_id = ? and thread_id = ? and seq <= ? ${f.sql}) as more_before
             from messages where project_id = ? and thread_id = ? and seq > ? ${f.sql}
            order by seq asc limit ?`,
          [projectId, threadId, q.afterSeq, ...f.bindings, projectId, threadId, q.afterSeq, ...f.bindings, q.limit + 1],
        );
        const more = rows.length > q.limit;
        const page = rows.slice(0, q.limit);
        const moreBefore =
          rows.length > 0 ? Boolean(rows[0].more_before) : await hasAtOrBefore(db, projectId, threadId, q.afterSeq, f);
        return { data: page.map(toMessageView), has_more_before: moreBefore, has_more_after: more };
      }
      const bound = q.beforeSeq !== undefined ? 'and seq < ?' : '';
      const { rows } = await db.raw(
        `select ${cols} from messages where project_id = ? and thread_id = ? ${bound} ${f.sql}
          order by seq desc limit ?`,
        [projectId, threadId, ...(q.beforeSeq !== undefined ? [q.beforeSeq] : []), ...f.bindings, q.limit + 1],
      );
      const more = rows.length > q.limit;
      const page = rows.slice(0, q.limit).reverse();
      const moreAfter = q.beforeSeq !== undefined ? await hasAtOrAfter(db, projectId, threadId, q.beforeSeq, f) : false;
      return { data: page.map(toMessageView), has_more_before: more, has_more_after: moreAfter };
    },

    /**
     * A page centred on `aroundSeq` (a search hit, a reply's parent): up to `limit` rows from
     * each side (two index scans), then `aroundSeq` and newer take half the limit and older the
     * rest, a short side giving its room to the other.
     */
    async pageAround(db: Db, projectId: string, threadId: string, q: PageFilter & { aroundSeq: number }) {
      const f = pageFilter(q);
      const cols = MESSAGE_COLUMNS.join(', ');
      const side = (cmp: '<' | '>=', order: 'desc' | 'asc') =>
        db
          .raw(
            `select ${cols} from messages where project_id = ? and thread_id = ? and seq ${cmp} ? ${f.sql}
              order by seq ${order} limit ?`,
            [projectId, threadId, q.aroundSeq, ...f.bindings, q.limit + 1],
          )
          .then((r: { rows: Array<Record<string, unknown>> }) => r.rows);
      const [older, newer] = await Promise.all([side('<', 'desc'), side('>=', 'asc')]);
      const half = Math.ceil(q.limit / 2);
      const takeNewer = Math.min(newer.length, Math.max(half, q.limit - older.length));
      const takeOlder = Math.min(older.length, q.limit - takeNewer);
      return {
        data: [...older.slice(0, takeOlder).reverse(), ...newer.slice(0, takeNewer)].map(toMessageView),
        has_more_before: older.length > takeOlder,
        has_more_after: newer.length > takeNewer,
      };
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

/** What narrows a page: deleted messages, a reply chain, an author. */
export interface PageFilter {
  limit: number;
  includeDeleted: boolean;
  replyTo?: string;
  author?: string;
}

/** The page's extra conditions, as an `and …` fragment with its bindings. */
function pageFilter(q: PageFilter): { sql: string; bindings: string[] } {
  const sql: string[] = [];
  const bindings: string[] = [];
  if (!q.includeDeleted) sql.push('and not deleted');
  if (q.replyTo !== undefined) {
    sql.push('and reply_to = ?');
    bindings.push(q.replyTo);
  }
  if (q.author !== undefined) {
    sql.push('and author = ?');
    bindings.push(q.author);
  }
  return { sql: sql.join(' '), bindings };
}

async function hasAtOrBefore(
  db: Db,
  projectId: string,
  threadId: string,
  seq: number,
  f: { sql: string; bindings: string[] },
) {
  const { rows } = await db.raw(
    `select exists (select 1 from messages where project_id = ? and thread_id = ? and seq <= ? ${f.sql}) as e`,
    [projectId, threadId, seq, ...f.bindings],
  );
  return Boolean(rows[0].e);
}

async function hasAtOrAfter(
  db: Db,
  projectId: string,
  threadId: string,
  seq: number,
  f: { sql: string; bindings: string[] },
) {
  const { rows } = await db.raw(
    `select exists (select 1 from messages where project_id = ? and thread_id = ? and seq >= ? ${f.sql}) as e`,
    [projectId, threadId, seq, ...f.bindings],
  );
  return Boolean(rows[0].e);
}

export type MessagesStore = ReturnType<typeof createMessagesStore>;
