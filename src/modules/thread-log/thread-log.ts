import type { Knex } from 'knex';
import { CHANNELS } from '../../lib/channels';
import { notFound } from '../../lib/errors';
import type { GroupScope, IngestEngine, WorkItem } from '../ingest/ingest-pipeline';
import { createThreadLogStore, type EventProjection } from './thread-log-store';

export type EventType =
  | 'thread.created'
  | 'thread.updated'
  | 'thread.deleted'
  | 'member.added'
  | 'member.removed'
  | 'message.created'
  | 'message.edited'
  | 'message.deleted'
  | 'reaction.added'
  | 'reaction.removed'
  | 'keys.destroyed';

export interface EventInput {
  type: EventType;
  messageId?: string | null;
  actor: string | null;
  data: Record<string, unknown>;
  /** When it happened, for imported history; default: now(). */
  at?: string;
}

/**
 * Pointers to what a group committed: per thread, the highest seq (NOTIFY carries only
 * these) and the lowest (so in-transaction hooks can select the group's events).
 */
export class CommitPointers {
  readonly latest = new Map<string, { projectId: string; threadId: string; seq: number; first: number }>();

  record(projectId: string, threadId: string, seq: number, first = seq) {
    const key = `${projectId}\u0000${threadId}`;
    const prev = this.latest.get(key);
    this.latest.set(key, {
      projectId,
      threadId,
      seq: Math.max(seq, prev?.seq ?? seq),
      first: Math.min(first, prev?.first ?? first),
    });
  }

  mergeFrom(other: CommitPointers) {
    for (const p of other.latest.values()) this.record(p.projectId, p.threadId, p.seq, p.first);
  }
}

/** The group-commit scope of the thread log: each group (and savepoint) collects commit pointers. */
export const commitScope: GroupScope<CommitPointers> = {
  create: () => new CommitPointers(),
  merge: (into, from) => into.mergeFrom(from),
};

const NOTIFY_MAX_BYTES = 7_900;
/** Groups of more events send pointers only (their events would not fit one payload anyway). */
const NOTIFY_CARRY_MAX_EVENTS = 32;

/** The NOTIFY payloads for these pointers: {"p":[[project_id, thread_id, seq], …]}, each under 8,000 bytes. */
export function notifyPayloads(pointers: CommitPointers): string[] {
  const payloads: string[] = [];
  let batch: Array<[string, string, number]> = [];
  let size = 8;
  for (const p of pointers.latest.values()) {
    const item: [string, string, number] = [p.projectId, p.threadId, p.seq];
    const itemSize = Buffer.byteLength(JSON.stringify(item)) + 1;
    if (size + itemSize > NOTIFY_MAX_BYTES && batch.length > 0) {
      payloads.push(JSON.stringify({ p: batch }));
      batch = [];
      size = 8;
    }
    batch.push(item);
    size += itemSize;
  }
  if (batch.length > 0) payloads.push(JSON.stringify({ p: batch }));
  return payloads;
}

const threadKey = (projectId: string, threadId: string) => `${projectId}\u0000${threadId}`;

/**
 * A group's `beforeCommit` hook (same `name`) as a CTE of `appendRecords`' statement: it reads
 * the events inserted there (CTE `e`: project_id, thread_id, seq, type, message_id, actor, data,
 * created_at) of these threads, e.g. to write their webhook outbox rows.
 */
export interface StatementFold {
  name: string;
  cte(threads: Array<{ projectId: string; threadId: string }>): { sql: string; bindings: Knex.RawBinding[] };
}

/**
 * A CTE under the given name with columns (project_id, thread_id, ok, seen) vetoing an
 * `appendRecords` statement's threads: one it lists is written only when `ok` and its
 * `last_seq` is still `seen` when the statement locks it.
 */
export type ThreadGuard = (name: string) => { sql: string; bindings: Knex.RawBinding[] };

/**
 * The thread log: the one owner of seq allocation, event inserts and the NOTIFY that tells
 * every replica what committed. Everything here runs inside the caller's (group) transaction.
 */
export function createThreadLog() {
  const store = createThreadLogStore();
  const folds: StatementFold[] = [];
  const foldNames = new Set<string>();

  return {
    /** Appends events to one thread; 404 when it is missing (or deleted, unless allowed). */
    async append(
      tx: Knex.Transaction,
      pointers: CommitPointers,
      projectId: string,
      threadId: string,
      events: EventInput[],
      opts: { allowDeleted?: boolean } = {},
    ): Promise<{ firstSeq: number; lastSeq: number; at: string }> {
      const row = await store.allocate(tx, projectId, threadId, events.length, opts.allowDeleted ?? false);
      if (!row) throw notFound('thread');
      const lastSeq = Number(row.last_seq);
      const firstSeq = lastSeq - events.length + 1;
      await store.insert(
        tx,
        events.map((e, i) => ({
          project_id: projectId,
          thread_id: threadId,
          seq: firstSeq + i,
          type: e.type,
          message_id: e.messageId ?? null,
          actor: e.actor,
          data: JSON.stringify(e.data),
          ...(e.at ? { created_at: e.at } : {}),
        })),
      );
      pointers.record(projectId, threadId, lastSeq, firstSeq);
      return { firstSeq, lastSeq, at: row.at };
    },

    /**
     * Appends records to many threads in one statement: every thread's seq range (locked in key
     * order, so two groups cannot deadlock on each other's rows), the events built from the
     * records and another module's projection of them (`how`, e.g. current message state). Each
     * record's `seq` is its 1-based position among its thread's records here and is stored as
     * its seq from the thread's range. Returns, per thread with n > 0, its first seq and the
     * commit timestamp, keyed by `threadKey`; missing or deleted threads are absent and their
     * records are not written. With `notifyAlso`, the statement also sends the NOTIFY for what
     * it allocated and for `notifyAlso` (the group's finishing step, folded in); with
     * `foldHooks`, it also runs every registered `StatementFold` (the group's hooks, folded in).
     * With `guard` (a CTE from the caller's module, e.g. the threads' write rule for end users),
     * a thread it does not admit is left out as if it were missing.
     */
    async appendRecords(
      tx: Knex.Transaction,
      pointers: CommitPointers,
      counts: Iterable<{ projectId: string; threadId: string; n: number }>,
      records: object[],
      how: EventProjection,
      opts: { notifyAlso?: CommitPointers; foldHooks?: boolean; guard?: ThreadGuard | null } = {},
    ): Promise<Map<string, { seq: number; at: string }>> {
      const { notifyAlso, foldHooks = false, guard = null } = opts;
      const allocs = [...counts]
        .filter((c) => c.n > 0)
        .sort((a, b) => (threadKey(a.projectId, a.threadId) < threadKey(b.projectId, b.threadId) ? -1 : 1));
      const next = new Map<string, { seq: number; at: string }>();
      if (allocs.length === 0) return next;
      let notify = null;
      if (notifyAlso) {
        const extra = [...notifyAlso.latest.values()].map((p) => JSON.stringify([p.projectId, p.threadId, p.seq]));
        // A small group's events ride on its NOTIFY (as in notify() below) when it covers only them.
        const carry = extra.length === 0 && records.length <= NOTIFY_CARRY_MAX_EVENTS;
        notify = { channel: CHANNELS.events, extra, carry };
      }
      const ctes = foldHooks ? folds.map((f) => f.cte(allocs)) : [];
      for (const row of await store.allocateAndInsert(tx, allocs, records, how, notify, ctes, guard?.('g') ?? null)) {
        const first = Number(row.last_seq) - Number(row.n) + 1;
        next.set(threadKey(row.project_id, row.id), { seq: first, at: row.at });
        pointers.record(row.project_id, row.id, Number(row.last_seq), first);
      }
      return next;
    },

    /**
     * One NOTIFY per committed group (more only if the pointers exceed PostgreSQL's 8,000-byte
     * payload): the group-commit engine's finishing step.
     */
    async notify(tx: Knex.Transaction, pointers: CommitPointers) {
      const payloads = notifyPayloads(pointers);
      // A small group's events ride along (the live tail then need not read them back).
      const ranges = [...pointers.latest.values()];
      const events = ranges.reduce((n, r) => n + r.seq - r.first + 1, 0);
      if (payloads.length === 1 && events <= NOTIFY_CARRY_MAX_EVENTS)
        await store.notifyWithEvents(tx, payloads[0], ranges);
      else if (payloads.length > 0) await store.notify(tx, payloads);
    },

    /** Registers a hook that `appendRecords` can fold into its statement (see `StatementFold`). */
    fold(f: StatementFold) {
      folds.push(f);
      foldNames.add(f.name);
    },

    /** The names of the registered folds (a batcher's `folds`). */
    folds: foldNames as ReadonlySet<string>,

    threadKey,
  };
}

export type ThreadLog = ReturnType<typeof createThreadLog>;

/** The service's group-commit engine: groups collect commit pointers, items run on knex transactions. */
export type LogIngest = IngestEngine<CommitPointers, Knex.Transaction>;
export type LogWorkItem<T> = WorkItem<T, CommitPointers, Knex.Transaction>;
