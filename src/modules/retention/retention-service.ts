import type { Knex } from 'knex';
import { notFound } from '../../lib/errors';
import { readSettings } from '../projects/project-settings';
import type { PurgeReason, RetentionStore, ThreadHorizon } from './retention-store';
import type { RetentionRunResult, ThreadPurge } from './retention-schemas';

const DAY_MS = 86_400_000;
/** Threads read per candidate query. */
const THREAD_PAGE = 500;

export interface RetentionPolicy {
  retentionDays: number | null;
  deletedThreadRetentionDays: number | null;
  maxMessagesPerThread: number | null;
}

export function policyOf(settings: unknown): RetentionPolicy {
  const s = readSettings(settings);
  return {
    retentionDays: s.retention_days ?? null,
    deletedThreadRetentionDays: s.deleted_thread_retention_days ?? null,
    maxMessagesPerThread: s.max_messages_per_thread ?? null,
  };
}

export const hasPolicy = (p: RetentionPolicy) =>
  p.retentionDays !== null || p.deletedThreadRetentionDays !== null || p.maxMessagesPerThread !== null;

export interface RunOptions {
  dryRun: boolean;
  /** 'policy' for scheduled runs, 'on_demand' for POST /v1/admin/retention/run. */
  reason: Exclude<PurgeReason, 'thread_purge'>;
  /** Who ran it, for the audit row: `scheduler:<replica>` or `admin_key:<key id>`. */
  actor: string;
  /** Checked between batches: a replica shutting down stops there (the next leader continues). */
  shouldStop?: () => boolean;
  now?: Date;
}

/**
 * Applies a project's retention policy: each thread loses a prefix of its log, in batches of at
 * most `batchSize` events, each batch one short transaction through progressdb_purge_prefix()
 * (audited, horizon moved in the same transaction). A run that stops halfway leaves every
 * thread consistent; running again continues from each thread's horizon.
 */
export function createRetentionService(deps: { db: Knex; store: RetentionStore; batchSize: number }) {
  const { db, store, batchSize } = deps;

  /** Removes (or, dry, counts) events horizon+1 … target of one thread. */
  async function purgeTo(
    projectId: string,
    thread: ThreadHorizon,
    target: number,
    reason: PurgeReason,
    o: RunOptions,
  ): Promise<ThreadPurge | null> {
    const from = Number(thread.purged_through_seq);
    if (target <= from) return null;
    if (o.dryRun) {
      return {
        thread_id: thread.id,
        reason,
        from_seq: from + 1,
        through_seq: target,
        events: target - from,
        messages: await store.messagesInRange(db, projectId, thread.id, from, target),
      };
    }
    const out: ThreadPurge = {
      thread_id: thread.id,
      reason,
      from_seq: from + 1,
      through_seq: from,
      events: 0,
      messages: 0,
    };
    let horizon = from;
    while (horizon < target && !o.shouldStop?.()) {
      const through = Math.min(horizon + batchSize, target);
      const last = through === target && reason === 'thread_purge';
      const r = await db.transaction(async (tx) => {
        const range = await store.purgePrefix(tx, projectId, thread.id, through, reason, o.actor);
        if (last) await store.clearDeletedThread(tx, projectId, thread.id);
        return range;
      });
      if (!r) break; // another purge got there first
      horizon = Number(r.through_seq);
      out.through_seq = horizon;
      out.events += Number(r.events_removed);
      out.messages += Number(r.messages_removed);
    }
    return out.events > 0 ? out : null;
  }

  /** The end of the longest prefix after the horizon whose events are all older than `cutoff`. */
  async function agePrefixEnd(projectId: string, t: ThreadHorizon, cutoff: string): Promise<number> {
    const last = Number(t.last_seq);
    let h = Number(t.purged_through_seq);
    while (h < last) {
      const first = await store.firstEventAtOrAfter(db, projectId, t.id, h, batchSize * 10, cutoff);
      if (first !== null) return first - 1;
      h = Math.min(h + batchSize * 10, last);
    }
    return last;
  }

  async function forEachCandidate(
    list: (afterId: string) => Promise<ThreadHorizon[]>,
    each: (t: ThreadHorizon) => Promise<void>,
    o: RunOptions,
  ) {
    let afterId = '';
    for (;;) {
      const page = await list(afterId);
      for (const t of page) {
        if (o.shouldStop?.()) return;
        await each(t);
      }
      if (page.length < THREAD_PAGE) return;
      afterId = page[page.length - 1].id;
    }
  }

  async function runWithPolicy(projectId: string, policy: RetentionPolicy, o: RunOptions): Promise<RetentionRunResult> {
    const now = o.now ?? new Date();
    const purges: ThreadPurge[] = [];
    const record = (p: ThreadPurge | null) => void (p && purges.push(p));
    // In a dry run nothing moves, so later policies must start where earlier ones would end.
    const planned = new Map<string, number>();
    const current = (t: ThreadHorizon): ThreadHorizon => ({
      ...t,
      purged_through_seq: Math.max(Number(t.purged_through_seq), planned.get(t.id) ?? 0),
    });
    const note = (p: ThreadPurge | null) => {
      record(p);
      if (p) planned.set(p.thread_id, p.through_seq);
    };

    if (policy.deletedThreadRetentionDays !== null) {
      const cutoff = new Date(now.getTime() - policy.deletedThreadRetentionDays * DAY_MS).toISOString();
      await forEachCandidate(
        (after) => store.deletedThreadsBefore(db, projectId, cutoff, after, THREAD_PAGE),
        async (t) => note(await purgeTo(projectId, t, Number(t.last_seq), 'thread_purge', o)),
        o,
      );
    }
    if (policy.retentionDays !== null) {
      const cutoff = new Date(now.getTime() - policy.retentionDays * DAY_MS).toISOString();
      await forEachCandidate(
        (after) => store.threadsWithEventsBefore(db, projectId, cutoff, after, THREAD_PAGE),
        async (raw) => {
          const t = current(raw);
          if (Number(t.purged_through_seq) >= Number(t.last_seq)) return;
          note(await purgeTo(projectId, t, await agePrefixEnd(projectId, t, cutoff), o.reason, o));
        },
        o,
      );
    }
    if (policy.maxMessagesPerThread !== null) {
      const keep = policy.maxMessagesPerThread;
      await forEachCandidate(
        (after) => store.threadsLongerThan(db, projectId, keep, after, THREAD_PAGE),
        async (raw) => {
          const t = current(raw);
          const seq = await store.seqBeyondNewest(db, projectId, t.id, keep);
          if (seq === null) return;
          note(await purgeTo(projectId, t, seq, o.reason, o));
        },
        o,
      );
    }

    const merged = mergeByThread(purges);
    return {
      project_id: projectId,
      dry_run: o.dryRun,
      policy: {
        retention_days: policy.retentionDays,
        deleted_thread_retention_days: policy.deletedThreadRetentionDays,
        max_messages_per_thread: policy.maxMessagesPerThread,
      },
      threads: merged,
      totals: {
        threads: merged.length,
        events: merged.reduce((n, p) => n + p.events, 0),
        messages: merged.reduce((n, p) => n + p.messages, 0),
      },
    };
  }

  return {
    /** Runs one project's policy now (on demand or from the scheduler). */
    async runProject(projectId: string, o: RunOptions): Promise<RetentionRunResult> {
      const settings = await store.projectSettings(db, projectId);
      if (!settings) throw notFound('project');
      return runWithPolicy(projectId, policyOf(settings), o);
    },

    /** Every project with a policy, one after the other (the scheduler's run). */
    async runAll(o: RunOptions) {
      const totals = { threads: 0, events: 0, messages: 0 };
      for (const p of await store.projectsWithPolicies(db)) {
        if (o.shouldStop?.()) break;
        const policy = policyOf(p.settings);
        if (!hasPolicy(policy)) continue;
        const r = await runWithPolicy(p.id, policy, o);
        totals.threads += r.totals.threads;
        totals.events += r.totals.events;
        totals.messages += r.totals.messages;
      }
      return totals;
    },

    totals: (projectId: string) => store.totals(db, projectId),
    audit: (projectId: string, limit: number, beforeId?: number) => store.audit(db, projectId, limit, beforeId),
  };
}

/** One entry per thread (a thread may lose a prefix to several policies in one run). */
function mergeByThread(purges: ThreadPurge[]): ThreadPurge[] {
  const byThread = new Map<string, ThreadPurge>();
  for (const p of purges) {
    const prev = byThread.get(p.thread_id);
    if (!prev) byThread.set(p.thread_id, { ...p });
    else {
      prev.through_seq = Math.max(prev.through_seq, p.through_seq);
      prev.from_seq = Math.min(prev.from_seq, p.from_seq);
      prev.events += p.events;
      prev.messages += p.messages;
      if (p.reason === 'thread_purge') prev.reason = p.reason;
    }
  }
  return [...byThread.values()].sort((a, b) => (a.thread_id < b.thread_id ? -1 : 1));
}

export type RetentionService = ReturnType<typeof createRetentionService>;
