import type { Knex } from 'knex';
import { AppError, conflict, unprocessable } from '../../lib/errors';
import { jsonEqual } from '../../lib/json-equal';
import type { ApiPrincipal } from '../../lib/http/route';
import { RUN_ALONE, type Batcher, type BatchResult } from '../ingest/ingest-pipeline';
import type { CommitPointers, ThreadGuard, ThreadLog } from '../thread-log/thread-log';
import type { MessagesStore } from './messages-store';
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
  /** The message it replies to: one already in the thread, or an earlier one of the same request. */
  replyTo: string | null;
}

export interface AppendRequest {
  projectId: string;
  threadId: string;
  messages: NewMessage[];
  /**
   * An end user (not a secret key): may write only where the thread's write policy admits this
   * user. Decided in the statement that writes (`WriteGuard`), on the thread as that statement
   * locks it, so a removal committed before the write is seen; a request it does not admit runs
   * alone, where the full rule answers (create the thread, 403 or 404).
   */
  writer?: ApiPrincipal;
}

/** The threads' write rule for these end users, as a guard of the statement that writes. */
export type WriteGuard = (checks: Array<{ projectId: string; threadId: string; userId: string | null }>) => ThreadGuard;

export interface AppendOutcome {
  messages: MessageView[];
  /** Per message: it already existed (an idempotent retry), nothing was written for it. */
  existed: boolean[];
}

/** The thread does not exist or is deleted: the caller decides whether to create it. */
export const THREAD_MISSING = Symbol('thread-missing');
/**
 * The write guard did not admit the writer's thread (or the request writes nothing, so no guard
 * decided it): the full rule decides, alone (403, 404, create, or the answer to a replay).
 */
export const WRITE_DENIED = Symbol('write-denied');
export type AppendResult = AppendOutcome | AppError | typeof THREAD_MISSING | typeof WRITE_DENIED;

/** Per request: the messages it writes, and per message either what exists already or what it writes. */
export interface AppendPlan {
  fresh: NewMessage[];
  refs: Array<{ existing: MessageView } | { fresh: NewMessage }>;
}

export const messageKey = (projectId: string, threadId: string, id = '') => `${projectId}\u0000${threadId}\u0000${id}`;

/**
 * Decides, per request, which messages are new. A client-chosen id that exists already makes
 * its message a replay (same author, body and reply_to) or the request a conflict; ids repeated
 * inside the group resolve to their first occurrence. A reply_to must name a message in
 * `parents` (existing, keyed by `messageKey`) or an earlier one of the same request. A conflict
 * or an unknown parent fails only its own request.
 */
export function planAppends(
  requests: AppendRequest[],
  existing: Map<string, MessageView>,
  parents: Set<string> = new Set(),
): Array<AppendPlan | AppError> {
  const claimed = new Map<string, NewMessage>();
  return requests.map((r) => {
    const refs: AppendPlan['refs'] = [];
    const fresh: NewMessage[] = [];
    const local = new Map<string, NewMessage>();
    for (const m of r.messages) {
      const k = messageKey(r.projectId, r.threadId, m.id);
      const sameContent = (o: NewMessage) =>
        o.author === m.author && o.replyTo === m.replyTo && jsonEqual(o.plain ?? o.body, m.plain ?? m.body);
      const prior = existing.get(k);
      if (prior) {
        const same = m.sameBody ? m.sameBody(prior.body) : jsonEqual(prior.body, m.body);
        if (prior.author !== m.author || prior.reply_to !== m.replyTo || !same)
          return conflict(`Message id "${m.id}" already exists in this thread with different content.`);
        refs.push({ existing: prior });
        continue;
      }
      const twin = local.get(k) ?? claimed.get(k);
      if (twin) {
        if (!sameContent(twin)) return conflict(`Message id "${m.id}" is used twice with different content.`);
        refs.push({ fresh: twin });
        continue;
      }
      if (m.replyTo !== null && !parents.has(messageKey(r.projectId, r.threadId, m.replyTo))) {
        if (!local.has(messageKey(r.projectId, r.threadId, m.replyTo)))
          return unprocessable(`reply_to "${m.replyTo}" is not a message of this thread.`);
      }
      local.set(k, m);
      fresh.push(m);
      refs.push({ fresh: m });
    }
    for (const [k, m] of local) claimed.set(k, m);
    return { fresh, refs };
  });
}

/** How many seqs each thread needs for these plans. */
export function seqCounts(requests: AppendRequest[], plans: Array<AppendPlan | AppError>) {
  const counts = new Map<string, { projectId: string; threadId: string; n: number }>();
  requests.forEach((r, i) => {
    const plan = plans[i];
    if (!('fresh' in plan)) return;
    const k = messageKey(r.projectId, r.threadId);
    const c = counts.get(k) ?? { projectId: r.projectId, threadId: r.threadId, n: 0 };
    c.n += plan.fresh.length;
    counts.set(k, c);
  });
  return counts.values();
}

/**
 * The records of every fresh message, in request order, each with `seq` set to its 1-based
 * position among its thread's fresh messages here: `assignSeqs`' order, so position k of a
 * thread whose range starts at s is the message `assignSeqs` gives seq s + k - 1.
 */
export function rankRecords(requests: AppendRequest[], plans: Array<AppendPlan | AppError>): CreatedRecord[] {
  const records: CreatedRecord[] = [];
  const taken = new Map<string, number>();
  requests.forEach((r, i) => {
    const plan = plans[i];
    if (!('fresh' in plan) || plan.fresh.length === 0) return;
    const k = messageKey(r.projectId, r.threadId);
    let rank = taken.get(k) ?? 0;
    for (const m of plan.fresh) {
      records.push({
        project_id: r.projectId,
        thread_id: r.threadId,
        seq: ++rank,
        id: m.id,
        author: m.author,
        body: m.body ?? null,
        reply_to: m.replyTo,
      });
    }
    taken.set(k, rank);
  });
  return records;
}

/** A new message with its seq: one event and one current-state row. */
export interface CreatedRecord {
  project_id: string;
  thread_id: string;
  seq: number;
  id: string;
  author: string;
  body: unknown;
  reply_to: string | null;
}

/**
 * Every fresh message's view with its seq, in request order, from each thread's allocated range
 * (`slots`, keyed by thread). Requests whose thread got no range are THREAD_MISSING.
 */
export function assignSeqs(
  requests: AppendRequest[],
  plans: Array<AppendPlan | AppError>,
  slots: Map<string, { seq: number; at: string }>,
  threadKey: (projectId: string, threadId: string) => string,
) {
  const views = new Map<NewMessage, MessageView>();
  const missing = new Set<number>();
  requests.forEach((r, i) => {
    const plan = plans[i];
    if (!('fresh' in plan) || plan.fresh.length === 0) return;
    const slot = slots.get(threadKey(r.projectId, r.threadId));
    if (!slot) {
      missing.add(i);
      return;
    }
    for (const m of plan.fresh) {
      const seq = slot.seq++;
      const body = m.body ?? null;
      views.set(m, {
        id: m.id,
        thread_id: r.threadId,
        author: m.author,
        seq,
        body,
        version: 1,
        created_at: slot.at,
        edited_at: null,
        deleted: false,
        reactions: {},
        reply_to: m.replyTo,
      });
    }
  });
  return { views, missing };
}

/**
 * Appends the messages of many requests, across many threads, in a fixed number of
 * statements: one look-up of client-chosen ids, one of reply_to parents (each only when
 * needed), and one statement allocating every thread's seq range and inserting all events and
 * current-state rows (carrying the group's NOTIFY when `notifyAlso` says this is its last
 * statement, the group's hooks with `foldHooks`, and with `writeGuard` the write rule of every
 * end user). Requests are independent, except that a thread the guard refuses is written by
 * none of them (each then runs alone); that statement is the only one that writes.
 */
export async function appendMany(
  deps: { log: ThreadLog; messagesStore: MessagesStore; writeGuard?: WriteGuard },
  tx: Knex.Transaction,
  pointers: CommitPointers,
  requests: AppendRequest[],
  opts: { notifyAlso?: CommitPointers; foldHooks?: boolean } = {},
): Promise<{ results: AppendResult[]; notified: boolean }> {
  const existing = await deps.messagesStore.findAsCreated(
    tx,
    requests.flatMap((r) =>
      r.messages.filter((m) => m.clientChosen).map((m) => ({ projectId: r.projectId, threadId: r.threadId, id: m.id })),
    ),
  );
  const parents = await deps.messagesStore.existing(
    tx,
    requests.flatMap((r) =>
      r.messages.flatMap((m) =>
        m.replyTo === null ? [] : [{ projectId: r.projectId, threadId: r.threadId, id: m.replyTo }],
      ),
    ),
  );
  const plans = planAppends(
    requests,
    new Map(existing.map((m) => [messageKey(m.project_id, m.thread_id, m.view.id), m.view])),
    new Set(parents.map((p) => messageKey(p.project_id, p.thread_id, p.id))),
  );
  // End users' write permission, decided by the statement that writes: an end user's request
  // that writes nothing here (a replay, a conflict) is answered alone, after its permission.
  const guarded = (i: number) => deps.writeGuard !== undefined && requests[i].writer !== undefined;
  const writes = (i: number) => {
    const plan = plans[i];
    return 'fresh' in plan && plan.fresh.length > 0;
  };
  const writers = requests.flatMap((r, i) =>
    guarded(i) && writes(i) ? [{ projectId: r.projectId, threadId: r.threadId, userId: r.writer!.userId }] : [],
  );
  // Seq allocation and the inserts in one statement: each record goes in with its position in
  // its thread's new records, which the statement turns into its seq from the allocated range.
  const ranked = rankRecords(requests, plans);
  const slots =
    ranked.length > 0
      ? await deps.log.appendRecords(
          tx,
          pointers,
          seqCounts(requests, plans),
          ranked,
          deps.messagesStore.createdProjection,
          { ...opts, guard: writers.length > 0 ? deps.writeGuard!(writers) : null },
        )
      : new Map<string, { seq: number; at: string }>();
  const { views, missing } = assignSeqs(requests, plans, slots, deps.log.threadKey);
  const notified = ranked.length > 0 && opts.notifyAlso !== undefined;
  const results = plans.map((plan, i): AppendResult => {
    if (guarded(i) && !writes(i)) return WRITE_DENIED;
    if (!('fresh' in plan)) return plan;
    if (missing.has(i)) return THREAD_MISSING;
    return {
      messages: plan.refs.map((ref) => ('existing' in ref ? ref.existing : views.get(ref.fresh)!)),
      existed: plan.refs.map((ref) => 'existing' in ref),
    };
  });
  return { results, notified };
}

/**
 * The group-commit batcher for appends: THREAD_MISSING and WRITE_DENIED send a request back to
 * run alone. It folds the group's hooks (`log.folds`) and NOTIFY into its one writing statement,
 * and end users' write permission too (`writeGuard`), so a group of appends, by secret keys or
 * end users, is one autocommit statement.
 */
export function createAppendBatcher(deps: {
  log: ThreadLog;
  messagesStore: MessagesStore;
  writeGuard: WriteGuard;
}): Batcher<AppendRequest, AppendOutcome, CommitPointers, Knex.Transaction> {
  return {
    name: 'append',
    folds: deps.log.folds,
    // Nothing is checked outside the writing statement (the write guard runs in it).
    autocommits: () => true,
    async run(tx, pointers, requests, finish) {
      const hooks = finish?.hooks === true;
      const { results, notified } = await appendMany(deps, tx, pointers, requests, {
        notifyAlso: finish?.group,
        foldHooks: hooks,
      });
      return {
        finished: notified,
        hooked: notified && hooks,
        results: results.map((r): BatchResult<AppendOutcome> => {
          if (r === THREAD_MISSING || r === WRITE_DENIED) return RUN_ALONE;
          return r instanceof AppError ? { err: r } : { ok: r };
        }),
      };
    },
  };
}
