import type { Knex } from 'knex';
import { queryDirect, type Db } from '../../lib/db';
import type { Role, ThreadView } from './threads-schemas';

/** Whose read of which thread (`readAccessMany`); userId null: a key without an end user. */
export interface ReadAccessKey {
  projectId: string;
  threadId: string;
  userId: string | null;
}

/** The columns a read is decided and versioned by (`threads.authorizeRead`). */
export interface ReadAccessRow {
  read_policy: ThreadRow['read_policy'];
  write_policy: ThreadRow['write_policy'];
  last_seq: number | string;
  purged_through_seq: number | string;
  role: Role | null;
}

export interface ThreadRow {
  project_id: string;
  id: string;
  type: 'dm' | 'group' | 'channel';
  title: string | null;
  attributes: Record<string, unknown>;
  read_policy: 'public' | 'members' | 'owners';
  write_policy: 'public' | 'members' | 'owners';
  created_by: string | null;
  dm_key: string | null;
  created_at: string;
  updated_at: string;
  last_seq: number;
  /** Events up to this seq were removed by retention (0: none). */
  purged_through_seq: number;
  last_activity_at: string;
  deleted_at: string | null;
}

export const toThreadView = (t: ThreadRow): ThreadView => ({
  id: t.id,
  type: t.type,
  title: t.title,
  attributes: t.attributes ?? {},
  policies: { read: t.read_policy, write: t.write_policy },
  created_by: t.created_by,
  created_at: t.created_at,
  updated_at: t.updated_at,
  last_seq: Number(t.last_seq),
  purged_through_seq: Number(t.purged_through_seq ?? 0),
  last_activity_at: t.last_activity_at,
  deleted: t.deleted_at !== null,
});

export function createThreadsStore() {
  return {
    /**
     * What reads need to know, for many (project, thread, user) keys in one prepared statement
     * on the driver: the policies, the caller's role (null without a user or membership) and the
     * thread's version (`last_seq`, `purged_through_seq`: what the page cache checks). Answers
     * by position; undefined: no live thread.
     */
    async readAccessMany(db: Knex, keys: ReadonlyArray<ReadAccessKey>): Promise<Array<ReadAccessRow | undefined>> {
      const projects = new Array<string>(keys.length);
      const threads = new Array<string>(keys.length);
      const users = new Array<string | null>(keys.length);
      for (let i = 0; i < keys.length; i++) {
        projects[i] = keys[i].projectId;
        threads[i] = keys[i].threadId;
        users[i] = keys[i].userId;
      }
      const rows = await queryDirect<ReadAccessRow & { i: number }>(db, {
        name: 'progressdb_thread_read_access_many',
        // The role as a subquery on the whole members key: as a left join, the generic plan
        // probed (project_id, thread_id) only and filtered every member of a big thread.
        text: `select k.i, t.read_policy, t.write_policy, t.last_seq, t.purged_through_seq,
                      (select m.role from thread_members m
                        where m.project_id = k.project_id and m.thread_id = k.thread_id and m.user_id = k.user_id) as role
                 from unnest($1::text[], $2::text[], $3::text[]) with ordinality as k(project_id, thread_id, user_id, i)
                 join threads t on t.project_id = k.project_id and t.id = k.thread_id and t.deleted_at is null`,
        values: [projects, threads, users],
      });
      const answers = new Array<ReadAccessRow | undefined>(keys.length).fill(undefined);
      for (const { i, ...row } of rows) answers[Number(i) - 1] = row;
      return answers;
    },

    /**
     * The live thread with the user's role. With `lock`, the thread row is locked first and the
     * role read by a second statement: a lock that waited for another transaction re-reads the
     * thread row only, so a role joined in the same statement could predate a membership change
     * that transaction committed.
     */
    async getWithRole(
      db: Db,
      projectId: string,
      threadId: string,
      userId: string | null,
      opts: { lock?: boolean } = {},
    ): Promise<(ThreadRow & { role: Role | null }) | undefined> {
      if (opts.lock) {
        const thread = (await db('threads')
          .first('*')
          .where({ project_id: projectId, id: threadId })
          .whereNull('deleted_at')
          .forUpdate()) as ThreadRow | undefined;
        if (!thread) return undefined;
        const member = userId ? await this.getMember(db, projectId, threadId, userId) : undefined;
        return { ...thread, role: member?.role ?? null };
      }
      const q = db('threads as t')
        .first('t.*', userId ? 'm.role' : db.raw('null::text as role'))
        .where({ 't.project_id': projectId, 't.id': threadId })
        .whereNull('t.deleted_at');
      if (userId)
        q.leftJoin('thread_members as m', (j) =>
          j.on('m.project_id', 't.project_id').andOn('m.thread_id', 't.id').andOnVal('m.user_id', userId),
        );
      return (await q) as (ThreadRow & { role: Role | null }) | undefined;
    },

    /**
     * The write rule (`assertAccess(…, 'write')` of thread-access.ts, for end users) as a CTE
     * named `name`, for a statement that writes to these threads: one row per live thread with
     * `ok` (every writer checked on it may write, by its write policy and the writer's role) and
     * `seen` (its `last_seq` in the statement's snapshot). A write that also requires
     * `seen = last_seq` on the row it updates has the rule decided on the thread as locked:
     * every change of membership or policy appends an event, so it moves `last_seq`.
     */
    writeGuard(
      name: string,
      keys: Array<{ projectId: string; threadId: string; userId: string | null }>,
    ): { sql: string; bindings: Knex.RawBinding[] } {
      return {
        sql: `${name} as (
                select k.project_id, k.thread_id, min(t.last_seq) as seen,
                       bool_and(case t.write_policy when 'public' then true
                                                    when 'members' then m.role is not null
                                                    else coalesce(m.role in ('owner', 'admin'), false) end) as ok
                  from unnest(?::text[], ?::text[], ?::text[]) as k(project_id, thread_id, user_id)
                  join threads t on t.project_id = k.project_id and t.id = k.thread_id
                  left join thread_members m
                    on m.project_id = k.project_id and m.thread_id = k.thread_id and m.user_id = k.user_id
                 group by k.project_id, k.thread_id
              )`,
        // A null user (a key without an end user) is a null element: no role, as in `getWithRole`.
        bindings: [
          keys.map((k) => k.projectId),
          keys.map((k) => k.threadId),
          keys.map((k) => k.userId) as Knex.RawBinding as string[],
        ],
      };
    },

    async exists(db: Db, projectId: string, threadId: string): Promise<'live' | 'deleted' | 'none'> {
      const row = await db('threads').first('deleted_at').where({ project_id: projectId, id: threadId });
      return !row ? 'none' : row.deleted_at ? 'deleted' : 'live';
    },

    async findDm(db: Db, projectId: string, dmKey: string): Promise<ThreadRow | undefined> {
      return db('threads').first('*').where({ project_id: projectId, dm_key: dmKey }).whereNull('deleted_at');
    },

    /** Inserts a thread with last_seq 0; undefined when the id (or dm pair) is taken. */
    async insert(
      db: Db,
      row: Omit<
        ThreadRow,
        'created_at' | 'updated_at' | 'last_seq' | 'purged_through_seq' | 'last_activity_at' | 'deleted_at'
      >,
    ) {
      const rows = await db('threads')
        .insert({ ...row, attributes: JSON.stringify(row.attributes) })
        .onConflict()
        .ignore()
        .returning('*');
      return rows[0] as ThreadRow | undefined;
    },

    async update(db: Db, projectId: string, threadId: string, patch: Record<string, unknown>) {
      const [row] = await db('threads')
        .where({ project_id: projectId, id: threadId })
        .update({ ...patch, updated_at: db.fn.now() })
        .returning('*');
      return row as ThreadRow;
    },

    /**
     * Threads newest first by latest activity (or by creation), keyset-paginated on
     * (last_activity_at, id) or (created_at, id). For a user: the threads they are a member of.
     */
    async list(
      db: Db,
      projectId: string,
      userId: string | null,
      limit: number,
      after?: { at: string; id: string },
      sort: 'last_activity' | 'created' = 'last_activity',
    ) {
      const at = sort === 'created' ? 't.created_at' : 't.last_activity_at';
      const q = db('threads as t').select('t.*').where('t.project_id', projectId).whereNull('t.deleted_at');
      if (userId) {
        q.join('thread_members as m', (j) => j.on('m.project_id', 't.project_id').andOn('m.thread_id', 't.id')).where(
          'm.user_id',
          userId,
        );
      }
      if (after) q.whereRaw(`(${at}, t.id) < (?::timestamptz, ?)`, [after.at, after.id]);
      return (await q
        .orderBy([
          { column: at, order: 'desc' },
          { column: 't.id', order: 'desc' },
        ])
        .limit(limit + 1)) as ThreadRow[];
    },

    /** Members by user id after `afterUserId`: a range scan of the primary key. */
    async members(db: Db, projectId: string, threadId: string, limit: number, afterUserId?: string) {
      const q = db('thread_members')
        .select('user_id', 'role', 'added_at')
        .where({ project_id: projectId, thread_id: threadId });
      if (afterUserId !== undefined) q.where('user_id', '>', afterUserId);
      return (await q.orderBy('user_id').limit(limit)) as Array<{ user_id: string; role: Role; added_at: string }>;
    },

    async upsertMember(db: Db, projectId: string, threadId: string, userId: string, role: Role) {
      const [row] = await db('thread_members')
        .insert({ project_id: projectId, thread_id: threadId, user_id: userId, role })
        .onConflict(['project_id', 'thread_id', 'user_id'])
        .merge({ role })
        .returning(['user_id', 'role', 'added_at']);
      return row as { user_id: string; role: Role; added_at: string };
    },

    async getMember(db: Db, projectId: string, threadId: string, userId: string) {
      return (await db('thread_members')
        .first('user_id', 'role', 'added_at')
        .where({ project_id: projectId, thread_id: threadId, user_id: userId })) as
        { user_id: string; role: Role; added_at: string } | undefined;
    },

    async removeMember(db: Db, projectId: string, threadId: string, userId: string) {
      return (
        (await db('thread_members').where({ project_id: projectId, thread_id: threadId, user_id: userId }).del()) > 0
      );
    },
  };
}

export type ThreadsStore = ReturnType<typeof createThreadsStore>;
