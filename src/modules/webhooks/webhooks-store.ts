import type { Knex } from 'knex';
import type { Db } from '../../lib/db';
import type { DeliveryListQuery, DeliveryView } from './webhooks-schemas';

export interface EndpointRow {
  project_id: string;
  id: string;
  url: string;
  description: string;
  event_types: string[] | null;
  thread_ids: string[] | null;
  enabled: boolean;
  disabled_reason: string | null;
  secret_ciphertext: string;
  previous_secret_ciphertext: string | null;
  previous_secret_expires_at: string | null;
  created_at: string;
  updated_at: string;
}

export interface EndpointHealth {
  pending: number;
  dead: number;
  delivered_last_hour: number;
  failing_last_hour: number;
  avg_duration_ms_last_hour: number | null;
  max_duration_ms_last_hour: number | null;
  oldest_pending_at: string | null;
}

/** A claimed delivery with what sending it needs: the event, the endpoint, offline members. */
export interface ClaimedDelivery {
  project_id: string;
  id: string;
  endpoint_id: string;
  thread_id: string;
  seq: number;
  event_type: string;
  attempts: number;
  claim_token: string;
  message_id: string | null;
  actor: string | null;
  /** null (with event_created_at) when retention purged the event before it was delivered. */
  data: Record<string, unknown> | null;
  event_created_at: string | null;
  url: string;
  secret_ciphertext: string;
  previous_secret_ciphertext: string | null;
  previous_secret_expires_at: string | null;
  offline_member_ids: string[] | null;
}

/** One attempt's outcome, recorded under the claim that made it. */
export interface SettleOutcome extends Pick<ClaimedDelivery, 'project_id' | 'id' | 'claim_token'> {
  status: 'pending' | 'delivered' | 'dead';
  retryInSeconds?: number;
  statusCode: number | null;
  error: string | null;
  durationMs: number;
}

/** One thread's committed seq range in a group, with who was live in it at commit. */
export interface CommittedRange {
  p: string;
  t: string;
  f: number;
  l: number;
  o: string[];
}

const DELIVERY_COLUMNS = [
  'id',
  'endpoint_id',
  'thread_id',
  'seq',
  'event_type',
  'status',
  'attempts',
  'next_attempt_at',
  'last_attempt_at',
  'last_status_code',
  'last_error',
  'last_duration_ms',
  'delivered_at',
  'dead_at',
  'created_at',
];

const encodeCursor = (createdAt: string, id: string) =>
  Buffer.from(JSON.stringify([createdAt, id])).toString('base64url');
function decodeCursor(cursor: string): [string, string] | null {
  try {
    const v: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && typeof v[1] === 'string') {
      if (Number.isNaN(Date.parse(v[0]))) return null;
      return [v[0], v[1]];
    }
  } catch {
    // falls through: not a cursor of ours
  }
  return null;
}

/**
 * The outbox insert's head: one delivery per (event `e`, endpoint `w`), with the online members
 * of the event's thread from `online`.o for message.created events.
 */
const outboxRows = (online: string) =>
  `insert into webhook_deliveries (project_id, id, endpoint_id, thread_id, seq, event_type, online_user_ids)
   select e.project_id, 'wd_' || replace(gen_random_uuid()::text, '-', ''), w.id, e.thread_id, e.seq, e.type,
          case when e.type = 'message.created' then ${online}.o end`;

/** The enabled endpoints (`w`) of event `e`'s project whose thread and event-type filters it passes. */
const ENDPOINTS_OF_EVENT = `join webhook_endpoints w
  on w.project_id = e.project_id and w.enabled
 and (w.thread_ids is null or e.thread_id = any(w.thread_ids))
 and (w.event_types is null or e.type = any(w.event_types))`;

export function createWebhooksStore() {
  return {
    async insertEndpoint(
      db: Db,
      row: Pick<
        EndpointRow,
        'project_id' | 'id' | 'url' | 'description' | 'event_types' | 'thread_ids' | 'secret_ciphertext'
      >,
    ): Promise<EndpointRow> {
      const [created] = await db('webhook_endpoints').insert(row).returning('*');
      return created as EndpointRow;
    },

    async listEndpoints(db: Db, projectId: string): Promise<EndpointRow[]> {
      return (await db('webhook_endpoints')
        .where({ project_id: projectId })
        .orderBy([{ column: 'created_at', order: 'desc' }, 'id'])) as EndpointRow[];
    },

    async getEndpoint(db: Db, projectId: string, id: string): Promise<EndpointRow | undefined> {
      return (await db('webhook_endpoints').where({ project_id: projectId, id }).first()) as EndpointRow | undefined;
    },

    async updateEndpoint(
      db: Db,
      projectId: string,
      id: string,
      patch: Partial<
        Pick<
          EndpointRow,
          | 'url'
          | 'description'
          | 'event_types'
          | 'thread_ids'
          | 'enabled'
          | 'disabled_reason'
          | 'secret_ciphertext'
          | 'previous_secret_ciphertext'
          | 'previous_secret_expires_at'
        >
      >,
    ): Promise<EndpointRow | undefined> {
      const [row] = await db('webhook_endpoints')
        .where({ project_id: projectId, id })
        .update({
          ...Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined)),
          updated_at: db.fn.now(),
        })
        .returning('*');
      return row as EndpointRow | undefined;
    },

    async deleteEndpoint(db: Db, projectId: string, id: string): Promise<boolean> {
      return (await db('webhook_endpoints').where({ project_id: projectId, id }).delete()) > 0;
    },

    /** Per endpoint of the project: queue and recent-attempt figures for the console. */
    async health(db: Db, projectId: string): Promise<Map<string, EndpointHealth>> {
      const { rows } = await db.raw(
        `select endpoint_id,
                count(*) filter (where status = 'pending')::int as pending,
                count(*) filter (where status = 'dead')::int as dead,
                count(*) filter (where status = 'delivered' and delivered_at > now() - interval '1 hour')::int
                  as delivered_last_hour,
                count(*) filter (where status <> 'delivered' and last_error is not null
                                   and last_attempt_at > now() - interval '1 hour')::int as failing_last_hour,
                avg(last_duration_ms) filter (where last_attempt_at > now() - interval '1 hour')::float8
                  as avg_duration_ms_last_hour,
                max(last_duration_ms) filter (where last_attempt_at > now() - interval '1 hour')::int
                  as max_duration_ms_last_hour,
                min(created_at) filter (where status = 'pending') as oldest_pending_at
           from webhook_deliveries where project_id = ? group by endpoint_id`,
        [projectId],
      );
      return new Map((rows as Array<EndpointHealth & { endpoint_id: string }>).map((r) => [r.endpoint_id, r]));
    },

    /**
     * The outbox write of one ingest group: every committed event of every thread the group
     * touched, for every enabled endpoint of its project whose filters match — one statement.
     */
    async writeOutbox(db: Db, ranges: CommittedRange[]): Promise<void> {
      await db.raw(
        `${outboxRows('r')}
           from jsonb_to_recordset(?::jsonb) as r(p text, t text, f bigint, l bigint, o text[])
           join events e on e.project_id = r.p and e.thread_id = r.t and e.seq between r.f and r.l
           ${ENDPOINTS_OF_EVENT}`,
        [JSON.stringify(ranges)],
      );
    },

    /**
     * `writeOutbox` as a CTE of an append statement (`StatementFold`): the same rows, for the
     * events that statement inserts (its CTE `e`), with each thread's online members (`o`).
     */
    outboxFold(online: Array<{ p: string; t: string; o: string[] }>): { sql: string; bindings: Knex.RawBinding[] } {
      return {
        sql: `webhook_outbox as (
           ${outboxRows('o')}
             from e
             left join jsonb_to_recordset(?::jsonb) as o(p text, t text, o text[])
               on o.p = e.project_id and o.t = e.thread_id
             ${ENDPOINTS_OF_EVENT}
         )`,
        bindings: [JSON.stringify(online)],
      };
    },

    /**
     * Claims up to `limit` due deliveries that are the oldest pending one of their (endpoint,
     * thread) — later events of that pair wait for it — and returns them with the event, the
     * endpoint and, for message.created, the members that were not live at commit.
     */
    async claim(db: Db, opts: { limit: number; claimSeconds: number; token: string }): Promise<ClaimedDelivery[]> {
      const { rows } = await db.raw(
        `with due as (
           select d.project_id, d.id
             from webhook_deliveries d
             join webhook_endpoints w on w.project_id = d.project_id and w.id = d.endpoint_id and w.enabled
             join projects p on p.id = d.project_id and p.deleted_at is null
            where d.status = 'pending' and d.next_attempt_at <= now()
              and (d.claimed_until is null or d.claimed_until < now())
              and not exists (
                select 1 from webhook_deliveries b
                 where b.project_id = d.project_id and b.endpoint_id = d.endpoint_id
                   and b.thread_id = d.thread_id and b.status = 'pending' and b.seq < d.seq)
            order by d.next_attempt_at
            limit ?
            for update of d skip locked
         ), claimed as (
           update webhook_deliveries d
              set claimed_until = now() + make_interval(secs => ?), claim_token = ?,
                  attempts = d.attempts + 1, last_attempt_at = now()
             from due where d.project_id = due.project_id and d.id = due.id
           returning d.project_id, d.id, d.endpoint_id, d.thread_id, d.seq, d.event_type, d.attempts,
                     d.claim_token, d.online_user_ids
         )
         select c.project_id, c.id, c.endpoint_id, c.thread_id, c.seq, c.event_type, c.attempts, c.claim_token,
                e.message_id, e.actor, e.data, e.created_at as event_created_at,
                w.url, w.secret_ciphertext, w.previous_secret_ciphertext, w.previous_secret_expires_at,
                case when c.event_type = 'message.created' then (
                  select coalesce(array_agg(m.user_id order by m.user_id), '{}')
                    from thread_members m
                   where m.project_id = c.project_id and m.thread_id = c.thread_id
                     and m.user_id <> all(coalesce(c.online_user_ids, '{}'))
                     and m.user_id is distinct from e.actor) end as offline_member_ids
           from claimed c
           -- left join: an event purged by retention before delivery still has to be settled
           left join events e on e.project_id = c.project_id and e.thread_id = c.thread_id and e.seq = c.seq
           join webhook_endpoints w on w.project_id = c.project_id and w.id = c.endpoint_id`,
        [opts.limit, opts.claimSeconds, opts.token],
      );
      return rows as ClaimedDelivery[];
    },

    /**
     * Records many attempts' outcomes in one statement (the worker batches what finished while the
     * previous batch was being written), each only while its claim token still holds.
     */
    async settleMany(db: Db, outcomes: SettleOutcome[]): Promise<number> {
      if (outcomes.length === 0) return 0;
      const { rowCount } = await db.raw<{ rowCount: number }>(
        `update webhook_deliveries d
            set status = s.status, claimed_until = null, claim_token = null,
                last_status_code = s.code, last_error = s.error, last_duration_ms = s.ms,
                next_attempt_at = case when s.status = 'pending'
                                       then now() + make_interval(secs => coalesce(s.retry, 0))
                                       else d.next_attempt_at end,
                delivered_at = case when s.status = 'delivered' then now() end,
                dead_at = case when s.status = 'dead' then now() end
           from jsonb_to_recordset(?::jsonb)
                  as s(p text, id text, tok text, status text, retry float8, code int, error text, ms int)
          where d.project_id = s.p and d.id = s.id and d.claim_token = s.tok and d.status = 'pending'`,
        [
          JSON.stringify(
            outcomes.map((o) => ({
              p: o.project_id,
              id: o.id,
              tok: o.claim_token,
              status: o.status,
              retry: o.retryInSeconds ?? 0,
              code: o.statusCode,
              error: o.error,
              ms: Math.round(o.durationMs),
            })),
          ),
        ],
      );
      return rowCount;
    },

    /** Gives claims back untried (shutdown): the attempt does not count. */
    async release(db: Db, token: string): Promise<void> {
      await db('webhook_deliveries')
        .where({ claim_token: token, status: 'pending' })
        .update({ claimed_until: null, claim_token: null, attempts: db.raw('greatest(attempts - 1, 0)') });
    },

    async listDeliveries(
      db: Db,
      projectId: string,
      q: DeliveryListQuery,
    ): Promise<{ data: DeliveryView[]; next_cursor: string | null } | 'bad_cursor'> {
      const query = db('webhook_deliveries')
        .select(DELIVERY_COLUMNS)
        .where({ project_id: projectId })
        .orderBy([
          { column: 'created_at', order: 'desc' },
          { column: 'id', order: 'desc' },
        ])
        .limit(q.limit + 1);
      if (q.status) void query.andWhere({ status: q.status });
      if (q.endpoint_id) void query.andWhere({ endpoint_id: q.endpoint_id });
      if (q.cursor) {
        const c = decodeCursor(q.cursor);
        if (!c) return 'bad_cursor';
        void query.andWhereRaw('(created_at, id) < (?::timestamptz, ?)', c);
      }
      const rows = (await query) as Array<DeliveryView & { next_attempt_at: string }>;
      const page = rows.slice(0, q.limit).map((r) => ({
        ...r,
        next_attempt_at: r.status === 'pending' ? r.next_attempt_at : null,
      }));
      const last = page[page.length - 1];
      return { data: page, next_cursor: rows.length > q.limit && last ? encodeCursor(last.created_at, last.id) : null };
    },

    async getDelivery(db: Db, projectId: string, id: string): Promise<DeliveryView | undefined> {
      return (await db('webhook_deliveries').select(DELIVERY_COLUMNS).where({ project_id: projectId, id }).first()) as
        DeliveryView | undefined;
    },

    /** Dead letters back to pending, due now, with a fresh attempt budget. */
    async replay(db: Db, projectId: string, filter: { id?: string; endpointId?: string }): Promise<number> {
      const q = db('webhook_deliveries').where({ project_id: projectId, status: 'dead' });
      if (filter.id) void q.andWhere({ id: filter.id });
      if (filter.endpointId) void q.andWhere({ endpoint_id: filter.endpointId });
      return q.update({
        status: 'pending',
        attempts: 0,
        next_attempt_at: db.fn.now(),
        dead_at: null,
        claimed_until: null,
        claim_token: null,
      });
    },

    /** Queue depth and age of the oldest due delivery, per project (enabled endpoints only). */
    async queueStats(db: Db): Promise<Array<{ project_id: string; depth: number; oldest_due_seconds: number }>> {
      const { rows } = await db.raw(
        `select d.project_id, count(*)::int as depth,
                coalesce(extract(epoch from now() - min(d.next_attempt_at) filter (where d.next_attempt_at <= now())), 0)::float8
                  as oldest_due_seconds
           from webhook_deliveries d
          where d.status = 'pending'
          group by d.project_id`,
      );
      return rows as Array<{ project_id: string; depth: number; oldest_due_seconds: number }>;
    },

    /** Removes delivered rows older than the retention (the outbox is not the log). */
    async sweepDelivered(db: Db, olderThanSeconds: number): Promise<number> {
      const { rowCount } = await db.raw<{ rowCount: number }>(
        `delete from webhook_deliveries
          where ctid = any(array(select ctid from webhook_deliveries
                                  where status = 'delivered' and delivered_at < now() - make_interval(secs => ?)
                                  limit 10000))`,
        [olderThanSeconds],
      );
      return rowCount;
    },
  };
}

export type WebhooksStore = ReturnType<typeof createWebhooksStore>;
