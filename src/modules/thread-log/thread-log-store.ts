import type { Knex } from 'knex';
import { CHANNELS } from '../../lib/channels';

/** A row of the log, as stored. */
export interface EventRow {
  project_id: string;
  thread_id: string;
  seq: number;
  type: string;
  message_id: string | null;
  actor: string | null;
  data: string;
  /** Default now(); set for imported history. */
  created_at?: string;
}

/** A statement fragment that sends NOTIFY payloads, to ride on another statement. */
export interface NotifyFragment {
  sql: string;
  bindings: Knex.RawBinding[];
}

/**
 * How another module's rows become events in the same statement as its own insert: the
 * columns of its JSON records (`r`), the select that turns them into events, and its own CTE.
 */
export interface EventProjection {
  recordColumns: string;
  eventsSelect: string;
  projection: string;
}

function notifyFragment(payloads: string[]): NotifyFragment {
  return { sql: 'select pg_notify(?, x) from unnest(?::text[]) as x', bindings: [CHANNELS.events, payloads] };
}

/** A payload with its events stays under PostgreSQL's 8,000-byte NOTIFY limit. */
const NOTIFY_CARRY_MAX_BYTES = 7_900;

/**
 * The NOTIFY of one pointer payload carrying the group's events too, read in the same
 * statement from the rows the transaction inserted: "e": [[project_id, thread_id, seq, type,
 * message_id, actor, data, created_at as text], …], as the live tail would read them back, so
 * listeners need not. When they do not fit beside the pointers, the pointers go alone.
 */
function notifyWithEventsFragment(
  payload: string,
  ranges: Array<{ projectId: string; threadId: string; first: number; seq: number }>,
): NotifyFragment {
  return {
    sql: `select pg_notify(?, case when octet_length(?::text) + octet_length(ev.j) < ${NOTIFY_CARRY_MAX_BYTES}
                                   then left(?::text, -1) || ',"e":' || ev.j || '}' else ?::text end)
            from (select json_agg(json_build_array(e.project_id, e.thread_id, e.seq, e.type, e.message_id, e.actor,
                                                   e.data, e.created_at::text)
                                  order by e.project_id, e.thread_id, e.seq)::text as j
                    from unnest(?::text[], ?::text[], ?::bigint[], ?::bigint[]) as g(project_id, thread_id, first, last)
                    join events e on e.project_id = g.project_id and e.thread_id = g.thread_id
                                 and e.seq between g.first and g.last) as ev`,
    bindings: [
      CHANNELS.events,
      payload,
      payload,
      payload,
      ranges.map((r) => r.projectId),
      ranges.map((r) => r.threadId),
      ranges.map((r) => r.first),
      ranges.map((r) => r.seq),
    ],
  };
}

/** The thread log's SQL: seq allocation, event inserts, NOTIFY. */
export function createThreadLogStore() {
  return {
    /**
     * Takes `n` seqs of one thread. The UPDATE allocates the range and holds the thread row's
     * lock until commit, so seq order is commit order and a rollback leaves no gap.
     */
    async allocate(tx: Knex.Transaction, projectId: string, threadId: string, n: number, allowDeleted: boolean) {
      const { rows } = await tx.raw(
        `update threads set last_seq = last_seq + ?, last_activity_at = now()
          where project_id = ? and id = ? ${allowDeleted ? '' : 'and deleted_at is null'}
          returning last_seq, now() as at`,
        [n, projectId, threadId],
      );
      return rows[0] as { last_seq: number; at: string } | undefined;
    },

    /**
     * Seq ranges for many threads in one statement (locked in key order, so two groups cannot
     * deadlock on each other's rows). Missing or deleted threads come back without a row.
     */
    async allocateMany(tx: Knex.Transaction, allocs: Array<{ projectId: string; threadId: string; n: number }>) {
      const { rows } = await tx.raw(
        `update threads t set last_seq = t.last_seq + v.n, last_activity_at = now()
           from unnest(?::text[], ?::text[], ?::int[]) as v(project_id, id, n)
          where t.project_id = v.project_id and t.id = v.id and t.deleted_at is null
          returning t.project_id, t.id, t.last_seq, v.n, now() as at`,
        [allocs.map((a) => a.projectId), allocs.map((a) => a.threadId), allocs.map((a) => a.n)],
      );
      return rows as Array<{ project_id: string; id: string; last_seq: number; n: number; at: string }>;
    },

    async insert(tx: Knex.Transaction, rows: EventRow[]) {
      await tx('events').insert(rows);
    },

    /**
     * One statement: JSON records → their events, another module's projection of the same
     * records (e.g. current message state), and optionally the group's NOTIFY.
     */
    async insertWithProjection(
      tx: Knex.Transaction,
      records: object[],
      how: EventProjection,
      notify: NotifyFragment | null,
    ) {
      const tail = notify ? notify.sql : 'select 1';
      await tx.raw(
        `with r as (
           select * from jsonb_to_recordset(?::jsonb) as r(${how.recordColumns})
         ), e as (
           insert into events (project_id, thread_id, seq, type, message_id, actor, data)
           ${how.eventsSelect}
         ), m as (
           ${how.projection}
         )
         ${tail}`,
        [JSON.stringify(records), ...(notify?.bindings ?? [])],
      );
    },

    notifyFragment,

    async notify(tx: Knex.Transaction, payloads: string[]) {
      const f = notifyFragment(payloads);
      await tx.raw(f.sql, f.bindings);
    },

    /** notify() of one payload, carrying the events of these seq ranges when they fit (see notifyWithEventsFragment). */
    async notifyWithEvents(
      tx: Knex.Transaction,
      payload: string,
      ranges: Array<{ projectId: string; threadId: string; first: number; seq: number }>,
    ) {
      const f = notifyWithEventsFragment(payload, ranges);
      await tx.raw(f.sql, f.bindings);
    },
  };
}

export type ThreadLogStore = ReturnType<typeof createThreadLogStore>;
