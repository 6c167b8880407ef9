import type { Knex } from 'knex';
import type { Db } from '../../lib/db';
import type { EventLine, ThreadLine } from './export-schemas';

type ThreadSnapshot = Omit<ThreadLine, 'kind'>;

export const messageIdOf = (e: EventLine) => (e.message_id ?? e.data.id ?? e.data.message_id) as string;

/** Reads for export and writes for import. Every query is scoped to one project. */
export function createExportStore() {
  return {
    /** Threads by id (from `fromId`, inclusive or not), each with its members. */
    async threadsPage(
      db: Db,
      projectId: string,
      fromId: string,
      inclusive: boolean,
      limit: number,
    ): Promise<ThreadSnapshot[]> {
      const { rows } = await db.raw(
        `select t.id, t.type, t.title, t.attributes, t.read_policy, t.write_policy, t.created_by, t.created_at,
                t.updated_at, t.deleted_at, t.last_seq, t.purged_through_seq, t.dm_key,
                coalesce((select jsonb_agg(jsonb_build_object('user_id', m.user_id, 'role', m.role,
                                 'added_at', to_char(m.added_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
                                 order by m.user_id)
                            from thread_members m where m.project_id = t.project_id and m.thread_id = t.id),
                         '[]'::jsonb) as members
           from threads t
          where t.project_id = ? and t.id ${inclusive ? '>=' : '>'} ?
          order by t.id limit ?`,
        [projectId, fromId, limit],
      );
      return (rows as Array<Record<string, unknown>>).map((r) => ({
        id: r.id as string,
        type: r.type as ThreadSnapshot['type'],
        title: r.title as string | null,
        attributes: (r.attributes as Record<string, unknown>) ?? {},
        policies: { read: r.read_policy, write: r.write_policy } as ThreadSnapshot['policies'],
        created_by: r.created_by as string | null,
        created_at: r.created_at as string,
        updated_at: r.updated_at as string,
        deleted_at: r.deleted_at as string | null,
        last_seq: Number(r.last_seq),
        purged_through_seq: Number(r.purged_through_seq),
        dm_key: r.dm_key as string | null,
        members: r.members as ThreadSnapshot['members'],
      }));
    },

    /** Events (after, through], ascending: a range scan of the log's primary key. */
    async eventsPage(db: Db, projectId: string, threadId: string, after: number, through: number, limit: number) {
      const rows = await db('events')
        .select('thread_id', 'seq', 'type', 'message_id', 'actor', 'data', 'created_at')
        .where({ project_id: projectId, thread_id: threadId })
        .andWhere('seq', '>', after)
        .andWhere('seq', '<=', through)
        .orderBy('seq')
        .limit(limit);
      return rows as Array<Omit<EventLine, 'kind'>>;
    },

    /** Retained events of the project's threads from `fromId` on (for a progress bar). */
    async eventCount(db: Db, projectId: string, fromId: string): Promise<number> {
      const { rows } = await db.raw(
        `select coalesce(sum(last_seq - purged_through_seq), 0)::bigint as n from threads where project_id = ? and id >= ?`,
        [projectId, fromId],
      );
      return Number(rows[0].n);
    },

    // Import.

    async lockThread(tx: Knex.Transaction, projectId: string, threadId: string) {
      return (await tx('threads')
        .first('last_seq', 'purged_through_seq', 'deleted_at')
        .where({ project_id: projectId, id: threadId })
        .forUpdate()) as { last_seq: number; purged_through_seq: number; deleted_at: string | null } | undefined;
    },

    /**
     * Creates the thread an import fills: its settings from the snapshot, its log empty up to
     * the snapshot's horizon. False when the id (or the dm pair) is taken.
     */
    async insertThread(tx: Knex.Transaction, projectId: string, t: ThreadSnapshot): Promise<boolean> {
      const rows = await tx('threads')
        .insert({
          project_id: projectId,
          id: t.id,
          type: t.type,
          title: t.title,
          attributes: JSON.stringify(t.attributes),
          read_policy: t.policies.read,
          write_policy: t.policies.write,
          created_by: t.created_by,
          dm_key: t.deleted_at ? null : t.dm_key,
          created_at: t.created_at,
          updated_at: t.created_at,
          last_seq: t.purged_through_seq,
          purged_through_seq: t.purged_through_seq,
          last_activity_at: t.created_at,
        })
        .onConflict()
        .ignore()
        .returning('id');
      return rows.length > 0;
    },

    async insertMembers(tx: Knex.Transaction, projectId: string, threadId: string, members: ThreadSnapshot['members']) {
      if (members.length === 0) return;
      await tx('thread_members')
        .insert(members.map((m) => ({ project_id: projectId, thread_id: threadId, ...m })))
        .onConflict(['project_id', 'thread_id', 'user_id'])
        .merge(['role']);
    },

    /** What the target log holds at these seqs, to recognise events an earlier import wrote. */
    async eventKeys(tx: Knex.Transaction, projectId: string, threadId: string, from: number, through: number) {
      const rows = await tx('events')
        .select('seq', 'type', 'message_id', 'created_at')
        .where({ project_id: projectId, thread_id: threadId })
        .andWhere('seq', '>=', from)
        .andWhere('seq', '<=', through);
      return new Map(
        (rows as Array<{ seq: number; type: string; message_id: string | null; created_at: string }>).map((r) => [
          Number(r.seq),
          r,
        ]),
      );
    },

    /**
     * The current-state change one imported event makes, as the live write path makes it but
     * with the event's own time. New messages and reactions are left to the caller
     * (insertMessages, the messages store).
     */
    async project(tx: Knex.Transaction, projectId: string, e: EventLine): Promise<'created' | 'reaction' | void> {
      const k = { project_id: projectId, thread_id: e.thread_id };
      const d = e.data;
      const messageId = messageIdOf(e);
      switch (e.type) {
        case 'thread.created':
          return;
        case 'thread.updated': {
          const patch: Record<string, unknown> = { updated_at: e.created_at };
          if ('title' in d) patch.title = d.title ?? null;
          if ('attributes' in d) patch.attributes = JSON.stringify(d.attributes ?? {});
          const policies = d.policies as { read?: string; write?: string } | undefined;
          if (policies?.read) patch.read_policy = policies.read;
          if (policies?.write) patch.write_policy = policies.write;
          await tx('threads').where({ project_id: projectId, id: e.thread_id }).update(patch);
          return;
        }
        case 'thread.deleted':
          await tx('threads')
            .where({ project_id: projectId, id: e.thread_id })
            .update({ deleted_at: e.created_at, updated_at: e.created_at, dm_key: null });
          return;
        case 'member.added':
          await tx('thread_members')
            .insert({ ...k, user_id: d.user_id, role: d.role, added_at: e.created_at })
            .onConflict(['project_id', 'thread_id', 'user_id'])
            .merge(['role']);
          return;
        case 'member.removed':
          await tx('thread_members')
            .where({ ...k, user_id: d.user_id })
            .del();
          return;
        case 'message.created':
          return 'created';
        case 'message.edited':
        case 'message.deleted': {
          const deleted = e.type === 'message.deleted';
          await tx('messages')
            .where({ ...k, id: messageId })
            .update({
              body: deleted ? null : JSON.stringify(d.body ?? null),
              deleted,
              version: tx.raw('version + 1'),
              version_seqs: tx.raw('array_append(version_seqs, ?::bigint)', [e.seq]),
              edited_at: e.created_at,
            });
          return;
        }
        case 'reaction.added':
        case 'reaction.removed':
          return 'reaction';
      }
    },

    /** Current-state rows for a run of message.created events, in one statement. */
    async insertMessages(tx: Knex.Transaction, projectId: string, events: EventLine[]) {
      if (events.length === 0) return;
      await tx('messages').insert(
        events.map((e) => ({
          project_id: projectId,
          thread_id: e.thread_id,
          seq: e.seq,
          id: messageIdOf(e),
          author: (e.data.author ?? e.actor) as string,
          body: JSON.stringify(e.data.body ?? null),
          version: 1,
          version_seqs: [e.seq],
          created_at: e.created_at,
          reply_to: typeof e.data.reply_to === 'string' ? e.data.reply_to : null,
        })),
      );
    },

    /** After a batch: the thread's activity time is its newest event's (as a live append sets it). */
    async touch(tx: Knex.Transaction, projectId: string, threadId: string, at: string) {
      await tx('threads').where({ project_id: projectId, id: threadId }).update({ last_activity_at: at });
    },
  };
}

export type ExportStore = ReturnType<typeof createExportStore>;
