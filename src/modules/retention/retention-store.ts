import type { Knex } from 'knex';
import type { Db } from '../../lib/db';

export type PurgeReason = 'policy' | 'on_demand' | 'thread_purge';

export interface ThreadHorizon {
  id: string;
  last_seq: number;
  purged_through_seq: number;
  deleted_at: string | null;
}

export interface PurgedRange {
  from_seq: number;
  through_seq: number;
  events_removed: number;
  messages_removed: number;
}

// Any fixed number (pg_try_advisory_lock's key): the replica holding it leads scheduled runs.
const LEADER_LOCK_ID = 7_310_6000;

export function createRetentionStore() {
  return {
    /** Live projects that set any retention policy. */
    async projectsWithPolicies(db: Db): Promise<Array<{ id: string; settings: Record<string, unknown> }>> {
      const { rows } = await db.raw(
        `select id, settings from projects
          where deleted_at is null
            and (settings->'retention_days' is not null and settings->'retention_days' <> 'null'::jsonb
              or settings->'deleted_thread_retention_days' is not null and settings->'deleted_thread_retention_days' <> 'null'::jsonb
              or settings->'max_messages_per_thread' is not null and settings->'max_messages_per_thread' <> 'null'::jsonb)
          order by id`,
      );
      return rows as Array<{ id: string; settings: Record<string, unknown> }>;
    },

    async projectSettings(db: Db, projectId: string): Promise<Record<string, unknown> | undefined> {
      const row = (await db('projects').first('settings').where({ id: projectId }).whereNull('deleted_at')) as
        { settings: Record<string, unknown> | null } | undefined;
      return row ? (row.settings ?? {}) : undefined;
    },

    /**
     * Threads whose oldest retained event is older than `cutoff` (one primary-key probe per
     * thread, at seq = horizon + 1), keyset-paginated by id.
     */
    async threadsWithEventsBefore(
      db: Db,
      projectId: string,
      cutoff: string,
      afterId: string,
      limit: number,
    ): Promise<ThreadHorizon[]> {
      const { rows } = await db.raw(
        `select t.id, t.last_seq, t.purged_through_seq, t.deleted_at
           from threads t
           join events e on e.project_id = t.project_id and e.thread_id = t.id and e.seq = t.purged_through_seq + 1
          where t.project_id = ? and t.id > ? and t.last_seq > t.purged_through_seq and e.created_at < ?
          order by t.id limit ?`,
        [projectId, afterId, cutoff, limit],
      );
      return rows as ThreadHorizon[];
    },

    /** Threads soft-deleted before `cutoff` whose log is not yet fully purged. */
    async deletedThreadsBefore(
      db: Db,
      projectId: string,
      cutoff: string,
      afterId: string,
      limit: number,
    ): Promise<ThreadHorizon[]> {
      const { rows } = await db.raw(
        `select id, last_seq, purged_through_seq, deleted_at from threads
          where project_id = ? and id > ? and deleted_at < ? and last_seq > purged_through_seq
          order by id limit ?`,
        [projectId, afterId, cutoff, limit],
      );
      return rows as ThreadHorizon[];
    },

    /** Threads whose retained log is longer than `max` events (so they may hold more than `max` messages). */
    async threadsLongerThan(
      db: Db,
      projectId: string,
      max: number,
      afterId: string,
      limit: number,
    ): Promise<ThreadHorizon[]> {
      const { rows } = await db.raw(
        `select id, last_seq, purged_through_seq, deleted_at from threads
          where project_id = ? and id > ? and last_seq - purged_through_seq > ?
          order by id limit ?`,
        [projectId, afterId, max, limit],
      );
      return rows as ThreadHorizon[];
    },

    /**
     * The first seq in (after, after + span] whose event is not older than `cutoff`, or null
     * when every event of that window is older (a bounded primary-key range scan).
     */
    async firstEventAtOrAfter(
      db: Db,
      projectId: string,
      threadId: string,
      after: number,
      span: number,
      cutoff: string,
    ): Promise<number | null> {
      const { rows } = await db.raw(
        `select min(seq) as seq from events
          where project_id = ? and thread_id = ? and seq > ? and seq <= ? and created_at >= ?`,
        [projectId, threadId, after, after + span, cutoff],
      );
      return rows[0].seq === null ? null : Number(rows[0].seq);
    },

    /** The seq of the (keep+1)-th newest message: purging through it leaves `keep` messages. */
    async seqBeyondNewest(db: Db, projectId: string, threadId: string, keep: number): Promise<number | null> {
      const { rows } = await db.raw(
        `select seq from messages where project_id = ? and thread_id = ? order by seq desc offset ? limit 1`,
        [projectId, threadId, keep],
      );
      return rows.length === 0 ? null : Number(rows[0].seq);
    },

    async messagesInRange(db: Db, projectId: string, threadId: string, after: number, through: number) {
      const { rows } = await db.raw(
        `select count(*)::bigint as n from messages where project_id = ? and thread_id = ? and seq > ? and seq <= ?`,
        [projectId, threadId, after, through],
      );
      return Number(rows[0].n);
    },

    /** Removes events horizon+1 … through (one bounded batch) through the audited database function. */
    async purgePrefix(
      tx: Knex.Transaction,
      projectId: string,
      threadId: string,
      through: number,
      reason: PurgeReason,
      actor: string,
    ): Promise<PurgedRange | null> {
      const { rows } = await tx.raw(`select * from progressdb_purge_prefix(?, ?, ?, ?, ?)`, [
        projectId,
        threadId,
        through,
        reason,
        actor,
      ]);
      return rows.length === 0 ? null : (rows[0] as PurgedRange);
    },

    /** A fully purged deleted thread keeps its row (ids and seqs are never reused) but no content. */
    async clearDeletedThread(db: Db, projectId: string, threadId: string) {
      await db('thread_members').where({ project_id: projectId, thread_id: threadId }).del();
      await db('read_marks').where({ project_id: projectId, thread_id: threadId }).del();
      await db('threads')
        .where({ project_id: projectId, id: threadId })
        .whereNotNull('deleted_at')
        .update({ title: null, attributes: '{}' });
    },

    async horizon(db: Db, projectId: string, threadId: string): Promise<ThreadHorizon | undefined> {
      return (await db('threads')
        .first('id', 'last_seq', 'purged_through_seq', 'deleted_at')
        .where({ project_id: projectId, id: threadId })) as ThreadHorizon | undefined;
    },

    async totals(db: Db, projectId: string) {
      const { rows } = await db.raw(
        `select count(*)::bigint as purges, coalesce(sum(events_removed), 0)::bigint as events,
                coalesce(sum(messages_removed), 0)::bigint as messages, max(purged_at) as last_purge_at,
                (select count(*) from threads where project_id = ? and purged_through_seq > 0)::bigint as threads
           from retention_audit where project_id = ?`,
        [projectId, projectId],
      );
      const r = rows[0];
      return {
        purges: Number(r.purges),
        threads: Number(r.threads),
        events: Number(r.events),
        messages: Number(r.messages),
        last_purge_at: (r.last_purge_at as string | null) ?? null,
      };
    },

    async audit(db: Db, projectId: string, limit: number, beforeId?: number) {
      const q = db('retention_audit')
        .select(
          'id',
          'thread_id',
          'from_seq',
          'through_seq',
          'events_removed',
          'messages_removed',
          'reason',
          'actor',
          'purged_at',
        )
        .where({ project_id: projectId })
        .orderBy('id', 'desc')
        .limit(limit);
      if (beforeId !== undefined) q.andWhere('id', '<', beforeId);
      return q;
    },

    // Scheduler bookkeeping.

    /** Tries to become the leader on a connection held for the whole run (released on death). */
    async tryLead(db: Knex): Promise<null | { release(): Promise<void> }> {
      const conn = (await db.client.acquireConnection()) as {
        query(sql: string, params: unknown[]): Promise<{ rows: Array<{ ok: boolean }> }>;
      };
      try {
        const { rows } = await conn.query('select pg_try_advisory_lock($1) as ok', [LEADER_LOCK_ID]);
        if (!rows[0].ok) {
          await db.client.releaseConnection(conn);
          return null;
        }
      } catch (e) {
        await db.client.releaseConnection(conn);
        throw e;
      }
      return {
        async release() {
          try {
            await conn.query('select pg_advisory_unlock($1)', [LEADER_LOCK_ID]);
          } finally {
            await db.client.releaseConnection(conn);
          }
        },
      };
    },

    /** The latest scheduled run, and whether the interval since it started has passed. */
    async lastRun(db: Db, intervalMs: number) {
      const { rows } = await db.raw(
        `select id, started_at, completed_at, started_at <= now() - make_interval(secs => ? / 1000.0) as due
           from retention_runs order by id desc limit 1`,
        [intervalMs],
      );
      return rows[0] as { id: number; started_at: string; completed_at: string | null; due: boolean } | undefined;
    },

    async startRun(db: Db, replica: string): Promise<number> {
      const [row] = await db('retention_runs').insert({ replica }).returning('id');
      return Number((row as { id: number }).id);
    },

    async completeRun(db: Db, id: number, t: { threads: number; events: number; messages: number }) {
      await db('retention_runs').where({ id }).update({
        completed_at: db.fn.now(),
        threads_purged: t.threads,
        events_removed: t.events,
        messages_removed: t.messages,
      });
    },
  };
}

export type RetentionStore = ReturnType<typeof createRetentionStore>;
