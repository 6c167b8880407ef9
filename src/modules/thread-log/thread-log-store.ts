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

/**
 * How another module's rows become events in the same statement as its own insert: the
 * columns of its JSON records (`r`), the select that turns them into events, and its own CTE.
 */
export interface EventProjection {
  recordColumns: string;
  eventsSelect: string;
  projection: string;
}

/** Bytes of pointers per NOTIFY payload (PostgreSQL's limit is 8,000, with the wrapper). */
const NOTIFY_CHUNK = 7_800;

const ranked = new Map<string, string>();

/**
 * The record columns of a projection with `seq` (a record's position among its thread's new
 * records, from 1) replaced by its seq from the thread's allocated range (`a`).
 */
function rankedColumns(how: EventProjection): string {
  let cols = ranked.get(how.recordColumns);
  if (!cols) {
    cols = how.recordColumns
      .split(',')
      .map((c) => c.trim().split(/\s+/)[0])
      .map((c) => (c === 'seq' ? 'a.last_seq - a.n + x.seq as seq' : `x.${c}`))
      .join(', ');
    ranked.set(how.recordColumns, cols);
  }
  return cols;
}

/** A statement that sends a NOTIFY. */
interface NotifyFragment {
  sql: string;
  bindings: Knex.RawBinding[];
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
     * Seq allocation, the events and their projection in one statement (one round trip instead
     * of two): the UPDATE allocates each thread's range (rows locked in the order of `allocs`,
     * which the caller sorts) and returns it; each record's `seq` field is its 1-based position
     * among the thread's new records, turned into its seq from that range. Records of threads
     * the UPDATE did not find (missing or deleted) are not inserted. With `notify`, the
     * statement also sends the NOTIFY for what it allocated plus `notify.extra` pointers
     * ([project_id, thread_id, seq] JSON texts), in payloads under 8,000 bytes; with
     * `notify.carry`, one payload that has room also carries the events inserted here. `folds`
     * are further CTEs (named, reading `e`), run as part of the statement. `guard`, a CTE named
     * `g` (project_id, thread_id, ok, seen), vetoes threads: one it lists is allocated only when
     * `ok` and its `last_seq` is still `seen` as the UPDATE locks the row (so what `g` read in the
     * statement's snapshot is what holds at the write); otherwise it is left out like a missing one.
     */
    async allocateAndInsert(
      tx: Knex.Transaction,
      allocs: Array<{ projectId: string; threadId: string; n: number }>,
      records: object[],
      how: EventProjection,
      notify: { channel: string; extra: string[]; carry: boolean } | null,
      folds: Array<{ sql: string; bindings: Knex.RawBinding[] }> = [],
      guard: { sql: string; bindings: Knex.RawBinding[] } | null = null,
    ) {
      // With `carry`, a single payload also carries the inserted events when they fit beside the
      // pointers (as notifyWithEventsFragment does for groups that notify on their own).
      const notifyCte = notify
        ? `, p as (
             select json_build_array(project_id, id, last_seq)::text as item from a
             union all select unnest(?::text[])
           ), c as (
             select '{"p":[' || string_agg(item, ',') || ']}' as payload, count(*) over () as chunks
               from (select item, sum(octet_length(item) + 1) over (order by item rows unbounded preceding) / ${NOTIFY_CHUNK} as chunk
                       from p) c
              group by chunk
           ), ev as (
             select json_agg(json_build_array(project_id, thread_id, seq, type, message_id, actor, data, created_at::text)
                             order by project_id, thread_id, seq)::text as j
               from e
           ), n as (
             select pg_notify(?, case when ?::boolean and c.chunks = 1
                                           and octet_length(c.payload) + octet_length(ev.j) < ${NOTIFY_CARRY_MAX_BYTES}
                                      then left(c.payload, -1) || ',"e":' || ev.j || '}' else c.payload end)
               from c, ev
           )`
        : '';
      const notifyTail = notify
        ? `union all select null::text, null::text, null::bigint, null::int, null::timestamptz from n`
        : '';
      const { rows } = await tx.raw(
        `with ${guard ? `${guard.sql}, ` : ''}a as (
           update threads t set last_seq = t.last_seq + v.n, last_activity_at = now()
             from unnest(?::text[], ?::text[], ?::int[]) as v(project_id, id, n)
             ${guard ? 'left join g on g.project_id = v.project_id and g.thread_id = v.id' : ''}
            where t.project_id = v.project_id and t.id = v.id and t.deleted_at is null
              ${guard ? 'and (g.thread_id is null or (g.ok and g.seen = t.last_seq))' : ''}
            returning t.project_id, t.id, t.last_seq, v.n, now() as at
         ), r as (
           select ${rankedColumns(how)}
             from jsonb_to_recordset(?::jsonb) as x(${how.recordColumns})
             join a on a.project_id = x.project_id and a.id = x.thread_id
         ), e as (
           insert into events (project_id, thread_id, seq, type, message_id, actor, data)
           ${how.eventsSelect}
           returning project_id, thread_id, seq, type, message_id, actor, data, created_at
         ), m as (
           ${how.projection}
         )${notifyCte}${folds.map((f) => `, ${f.sql}`).join('')}
         select project_id, id, last_seq, n, at from a
         ${notifyTail}`,
        [
          ...(guard ? guard.bindings : []),
          allocs.map((a) => a.projectId),
          allocs.map((a) => a.threadId),
          allocs.map((a) => a.n),
          JSON.stringify(records),
          ...(notify ? [notify.extra, notify.channel, notify.carry] : []),
          ...folds.flatMap((f) => f.bindings),
        ],
      );
      return (rows as Array<{ project_id: string | null; id: string; last_seq: number; n: number; at: string }>).filter(
        (r): r is { project_id: string; id: string; last_seq: number; n: number; at: string } => r.project_id !== null,
      );
    },

    async insert(tx: Knex.Transaction, rows: EventRow[]) {
      await tx('events').insert(rows);
    },

    async notify(tx: Knex.Transaction, payloads: string[]) {
      await tx.raw('select pg_notify(?, x) from unnest(?::text[]) as x', [CHANNELS.events, payloads]);
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
