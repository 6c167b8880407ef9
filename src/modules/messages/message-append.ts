import type { Knex } from 'knex';
import { type AppError, conflict } from '../../lib/errors';
import { CommitPointers, NOTIFY_CHANNEL, notifyPayloads } from '../ingest/thread-log';
import { jsonEqual } from '../../lib/json-equal';
import type { MessageView } from './messages-schemas';

export interface NewMessage {
  id: string;
  /** Client-chosen ids make retries idempotent; generated ids cannot collide. */
  clientChosen: boolean;
  author: string;
  /** As stored: with encrypted paths sealed when the project encrypts. */
  body: unknown;
  /** The body as sent, when `body` is sealed (idempotent retries compare plaintexts). */
  plain?: unknown;
  /** Whether a stored (sealed) body holds this message's plaintext. */
  sameBody?: (stored: unknown) => boolean;
}

export interface AppendRequest {
  projectId: string;
  threadId: string;
  messages: NewMessage[];
}

export interface AppendOutcome {
  messages: MessageView[];
  /** Per message: it already existed (an idempotent retry), nothing was written for it. */
  existed: boolean[];
}

/** The thread does not exist or is deleted: the caller decides whether to create it. */
export const THREAD_MISSING = Symbol('thread-missing');
export type AppendResult = AppendOutcome | AppError | typeof THREAD_MISSING;

const key = (projectId: string, threadId: string, id = '') => `${projectId}\u0000${threadId}\u0000${id}`;

/**
 * Appends the messages of many requests, across many threads, in a fixed number of
 * statements: one look-up of client-chosen ids, one UPDATE allocating every thread's seq range,
 * one INSERT of all events and current-state rows. Requests are independent: a conflicting
 * client id fails only its own request.
 */
export async function appendMany(
  tx: Knex.Transaction,
  pointers: CommitPointers,
  requests: AppendRequest[],
  opts: { notifyWith?: CommitPointers } = {},
): Promise<AppendResult[] & { notified?: boolean }> {
  const results: AppendResult[] & { notified?: boolean } = new Array(requests.length);

  // 1. Client-chosen ids that already exist make a request a replay (same content) or a
  //    conflict. Both are judged against the message as first created — its message.created
  //    event — so a retry after an edit still replays, and replays the first response.
  const existing = new Map<string, MessageView>();
  const probe = requests.flatMap((r) =>
    r.messages.filter((m) => m.clientChosen).map((m) => [r.projectId, r.threadId, m.id]),
  );
  if (probe.length > 0) {
    const { rows } = await tx.raw(
      `select m.project_id, m.thread_id, m.id, m.author, m.seq, e.data->'body' as body, e.created_at
         from messages m
         join unnest(?::text[], ?::text[], ?::text[]) as k(project_id, thread_id, id)
           on m.project_id = k.project_id and m.thread_id = k.thread_id and m.id = k.id
         join events e on e.project_id = m.project_id and e.thread_id = m.thread_id and e.seq = m.seq`,
      [probe.map((p) => p[0]), probe.map((p) => p[1]), probe.map((p) => p[2])],
    );
    for (const row of rows) {
      existing.set(key(row.project_id, row.thread_id, row.id), {
        id: row.id,
        thread_id: row.thread_id,
        author: row.author,
        seq: Number(row.seq),
        body: row.body ?? null,
        version: 1,
        created_at: row.created_at,
        edited_at: null,
        deleted: false,
        reactions: {},
      });
    }
  }

  // 2. Decide, per request, which messages are new; ids repeated inside this group resolve
  //    to their first occurrence.
  const claimed = new Map<string, NewMessage>();
  const plans: Array<{ fresh: NewMessage[]; refs: Array<{ existing?: MessageView; fresh?: NewMessage }> } | null> = [];
  requests.forEach((r, i) => {
    const refs: Array<{ existing?: MessageView; fresh?: NewMessage }> = [];
    const fresh: NewMessage[] = [];
    const local = new Map<string, NewMessage>();
    for (const m of r.messages) {
      const k = key(r.projectId, r.threadId, m.id);
      const prior = existing.get(k);
      const sameContent = (o: NewMessage) => o.author === m.author && jsonEqual(o.plain ?? o.body, m.plain ?? m.body);
      if (prior) {
        const same = m.sameBody ? m.sameBody(prior.body) : jsonEqual(prior.body, m.body);
        if (prior.author !== m.author || !same) {
          results[i] = conflict(`Message id "${m.id}" already exists in this thread with different content.`);
          break;
        }
        refs.push({ existing: prior });
        continue;
      }
      const twin = local.get(k) ?? claimed.get(k);
      if (twin) {
        if (!sameContent(twin)) {
          results[i] = conflict(`Message id "${m.id}" is used twice with different content.`);
          break;
        }
        refs.push({ fresh: twin });
        continue;
      }
      local.set(k, m);
      fresh.push(m);
      refs.push({ fresh: m });
    }
    if (results[i]) return plans.push(null);
    for (const [k, m] of local) claimed.set(k, m);
    plans.push({ fresh, refs });
  });

  // 3. One seq-range allocation per thread. Threads that are missing or deleted come back
  //    without a row, and their requests are handed back to the caller.
  const counts = new Map<string, { projectId: string; threadId: string; n: number }>();
  requests.forEach((r, i) => {
    if (!plans[i]) return;
    const k = key(r.projectId, r.threadId);
    const c = counts.get(k) ?? { projectId: r.projectId, threadId: r.threadId, n: 0 };
    c.n += plans[i].fresh.length;
    counts.set(k, c);
  });
  const allocs = [...counts.values()]
    .filter((c) => c.n > 0)
    .sort((a, b) => (key(a.projectId, a.threadId) < key(b.projectId, b.threadId) ? -1 : 1));
  const next = new Map<string, { seq: number; at: string }>();
  if (allocs.length > 0) {
    const { rows } = await tx.raw(
      `update threads t set last_seq = t.last_seq + v.n, last_activity_at = now()
         from unnest(?::text[], ?::text[], ?::int[]) as v(project_id, id, n)
        where t.project_id = v.project_id and t.id = v.id and t.deleted_at is null
        returning t.project_id, t.id, t.last_seq, v.n, now() as at`,
      [allocs.map((a) => a.projectId), allocs.map((a) => a.threadId), allocs.map((a) => a.n)],
    );
    for (const row of rows) {
      next.set(key(row.project_id, row.id), { seq: Number(row.last_seq) - Number(row.n) + 1, at: row.at });
      pointers.record(row.project_id, row.id, Number(row.last_seq), Number(row.last_seq) - Number(row.n) + 1);
    }
  }

  // 4. Seqs in request order, then one INSERT for every event and current-state row.
  const inserts: Array<{
    project_id: string;
    thread_id: string;
    seq: number;
    id: string;
    author: string;
    body: unknown;
  }> = [];
  const views = new Map<NewMessage, MessageView>();
  requests.forEach((r, i) => {
    const plan = plans[i];
    if (!plan) return;
    if (plan.fresh.length === 0) return;
    const slot = next.get(key(r.projectId, r.threadId));
    if (!slot) {
      results[i] = THREAD_MISSING;
      return;
    }
    for (const m of plan.fresh) {
      const seq = slot.seq++;
      inserts.push({
        project_id: r.projectId,
        thread_id: r.threadId,
        seq,
        id: m.id,
        author: m.author,
        body: m.body ?? null,
      });
      views.set(m, {
        id: m.id,
        thread_id: r.threadId,
        author: m.author,
        seq,
        body: m.body ?? null,
        version: 1,
        created_at: slot.at,
        edited_at: null,
        deleted: false,
        reactions: {},
      });
    }
  });
  if (inserts.length > 0) {
    // When the caller says this is the group's last write, its NOTIFY rides on the INSERT
    // (one round trip fewer): it carries `notifyWith` (what the group wrote before) and ours.
    let payloads: string[] = [];
    if (opts.notifyWith) {
      const all = new CommitPointers();
      all.mergeFrom(opts.notifyWith);
      all.mergeFrom(pointers);
      payloads = notifyPayloads(all);
      results.notified = true;
    }
    await tx.raw(
      `with r as (
         select * from jsonb_to_recordset(?::jsonb)
           as r(project_id text, thread_id text, seq bigint, id text, author text, body jsonb)
       ), e as (
         insert into events (project_id, thread_id, seq, type, message_id, actor, data)
         select project_id, thread_id, seq, 'message.created', id, author,
                jsonb_build_object('id', id, 'author', author, 'body', body, 'version', 1)
           from r
       ), m as (
         insert into messages (project_id, thread_id, seq, id, author, body, version, version_seqs, created_at)
         select project_id, thread_id, seq, id, author, body, 1, array[seq], now() from r
       )
       select pg_notify(?, x) from unnest(?::text[]) as x`,
      [JSON.stringify(inserts), NOTIFY_CHANNEL, payloads],
    );
  }

  requests.forEach((_r, i) => {
    const plan = plans[i];
    if (!plan || results[i]) return;
    results[i] = {
      messages: plan.refs.map((ref) => ref.existing ?? views.get(ref.fresh!)!),
      existed: plan.refs.map((ref) => Boolean(ref.existing)),
    };
  });
  return results;
}
