import type { Knex } from 'knex';
import type { Logger } from '../../lib/logger';
import type { PgListener } from '../../lib/pg-listener';
import type { EventView } from '../events/events-schemas';
import type { EventsStore } from '../events/events-store';
import { CHANNELS } from '../../lib/channels';
import { toRfc3339 } from '../../lib/db';

const PAGE = 500;
const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 2_000;
/**
 * A fan-out hands events to subscribers for at most this long before it yields to the event
 * loop. One socket write costs tens of microseconds, so a thread with thousands of local
 * subscribers would otherwise hold the loop for tens of milliseconds — and the COMMIT reply
 * of the very group being fanned out (PostgreSQL signals listeners at commit, so the NOTIFY
 * and the reply arrive together) would wait behind it, and every request with it.
 */
const FANOUT_SLICE_MS = 2;
/** Subscribers handed events between two looks at the clock. */
const FANOUT_CLOCK_EVERY = 16;

export type CloseReason = 'removed' | 'thread_deleted' | 'forbidden' | 'unsubscribed' | 'shutdown';

/** Where a subscription's events go: an SSE response or one thread of a WebSocket. */
export interface TailSink {
  /** Events in seq order, contiguous after the previous call. */
  send(events: EventView[]): void;
  /** The initial replay is done; live events follow. */
  ready(seq: number): void;
  /**
   * Events after the subscriber's cursor up to `purgedThroughSeq` were removed by retention:
   * the replay restarts at purgedThroughSeq + 1 (the client must reload state, not resume).
   */
  reset(purgedThroughSeq: number): void;
  /** Resolves when the consumer has room again (replay backpressure). */
  drain(): Promise<void>;
  /** The hub ended the subscription (the sink is no longer called after this). */
  closed(reason: CloseReason): void;
}

export interface SubscribeOptions {
  projectId: string;
  threadId: string;
  /** Deliver events with seq > afterSeq. */
  afterSeq: number;
  /** The thread's last_seq as read when authorising (seeds the thread's read cursor). */
  threadLastSeq: number;
  /** The thread's retention horizon as read when authorising (0: nothing purged). */
  purgedThroughSeq?: number;
  userId: string | null;
  sink: TailSink;
  /**
   * Re-checks read access after a change of the subscriber's membership (removed, role changed)
   * or of the thread's policies; false ends the subscription.
   */
  recheck(): Promise<boolean>;
}

class Subscriber {
  cursor: number;
  /** While true, the subscriber reads the log itself and ignores fan-out (join, gap, recheck). */
  catchingUp = true;
  /** Highest seq offered while catching up: catch-up continues until it has passed it. */
  wanted: number;
  needsRecheck = false;
  closed = false;
  constructor(
    readonly opts: SubscribeOptions,
    private readonly remove: (sub: Subscriber) => void,
  ) {
    this.cursor = opts.afterSeq;
    this.wanted = opts.threadLastSeq;
  }
  /** Ends the subscription silently (the client went away). */
  close() {
    this.remove(this);
  }
}
type Sub = Subscriber;

interface ThreadState {
  projectId: string;
  threadId: string;
  /** Highest seq this replica has read for the thread (from where the next read starts). */
  lastSeq: number;
  dirty: boolean;
  reading: boolean;
  failures: number;
  retry: NodeJS.Timeout | null;
  subs: Set<Sub>;
  /** When the oldest wake-up not yet fanned out arrived (for the NOTIFY-lag metric). */
  notifiedAt?: number;
  /** Events read or carried, in seq order, still being handed to the subscribers of the time. */
  fanOuts: FanOut[];
}

/** One batch of a thread's events and the subscribers it goes to (`next`: the first not yet offered). */
interface FanOut {
  rows: EventView[];
  subs: Sub[];
  next: number;
  /** When the wake-up that led to it arrived, if it is the one the NOTIFY-lag metric times. */
  notifiedAt?: number;
}

const key = (projectId: string, threadId: string) => `${projectId}\u0000${threadId}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const backoff = (n: number) => Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** n) * (0.5 + Math.random() / 2);

/**
 * Live tail fan-in for one replica. NOTIFY wake-ups (from the shared LISTEN connection) name
 * threads and seqs; for each thread with local subscribers the hub reads the new events once,
 * from the last seq it read, and offers them to every subscriber. Each subscriber keeps its own
 * cursor and only ever takes seq = cursor + 1: anything older is a duplicate and skipped,
 * anything newer means it missed something (joining, or a lost wake-up) and it reads the gap
 * from the log itself. So the log, not the notifications, decides what a client sees: no gap,
 * no duplicate, whatever NOTIFY does.
 */
export function createTailHub(deps: {
  db: Knex;
  listener: PgListener;
  eventsStore: EventsStore;
  logger: Logger;
  onLag?: (seconds: number) => void;
}) {
  const { db, eventsStore, logger } = deps;
  const threads = new Map<string, ThreadState>();
  let stopped = false;

  const read = (s: { projectId: string; threadId: string }, after: number) =>
    eventsStore.after(db, s.projectId, s.threadId, after, PAGE);

  function onNotify(payload: string) {
    let pointers: unknown;
    let carried: unknown;
    try {
      ({ p: pointers, e: carried } = JSON.parse(payload) as { p?: unknown; e?: unknown });
    } catch {
      return;
    }
    if (!Array.isArray(pointers)) return;
    const now = performance.now();
    for (const p of pointers) {
      if (!Array.isArray(p) || p.length < 3) continue;
      const state = threads.get(key(String(p[0]), String(p[1])));
      const seq = Number(p[2]);
      if (!state || seq <= state.lastSeq) continue;
      if (Array.isArray(carried) && fanOutCarried(state, seq, carried, now)) continue;
      state.dirty = true;
      state.notifiedAt ??= now;
      void pump(state);
    }
  }

  /**
   * The events the NOTIFY carried (thread-log-store's notifyWithEventsFragment), fanned out
   * without reading them back — only when they are exactly the thread's next events
   * (lastSeq + 1 … seq) and no read of the thread is under way or due, so they are what
   * pump would have read, in the same order. Anything else (pointers only, a gap, a read in
   * flight) goes through pump and the log as before; subscribers check seq = cursor + 1
   * either way.
   */
  function fanOutCarried(state: ThreadState, seq: number, carried: unknown[], now: number): boolean {
    if (state.reading || state.retry || state.dirty || stopped || state.subs.size === 0) return false;
    let rows: EventView[] | null = null;
    for (const c of carried) {
      if (!Array.isArray(c) || c.length < 8 || c[0] !== state.projectId || c[1] !== state.threadId) continue;
      const next = (rows?.length ?? 0) + state.lastSeq + 1;
      if (c[2] !== next) return false;
      // As events-store's read-back returns them: same fields, same order, same timestamp text.
      (rows ??= []).push({
        seq: next,
        type: c[3],
        thread_id: c[1],
        message_id: c[4],
        actor: c[5],
        data: c[6],
        created_at: toRfc3339(String(c[7])),
      });
    }
    // Sealed bodies are opened by the store's read (encryption): those go through pump.
    if (!rows || rows[rows.length - 1].seq !== seq || eventsStore.needsOpening(rows)) return false;
    state.lastSeq = seq;
    fanOut(state, rows, now);
    return true;
  }

  /**
   * Queues `rows` (the thread's next events) for every current subscriber. The fan-out starts in
   * a setImmediate — after the I/O that arrived with the wake-up (the COMMIT reply of the group
   * that sent it, on the replica that wrote it) — and yields every FANOUT_SLICE_MS. A thread's
   * batches go out one after the other, each to all its subscribers, so every subscriber still
   * sees its events in seq order; subscribers check seq = cursor + 1 anyway (offer).
   */
  function fanOut(state: ThreadState, rows: EventView[], notifiedAt?: number) {
    state.fanOuts.push({ rows, subs: [...state.subs], next: 0, notifiedAt });
    if (state.fanOuts.length === 1) setImmediate(runFanOuts, state);
  }

  function runFanOuts(state: ThreadState) {
    const deadline = performance.now() + FANOUT_SLICE_MS;
    while (state.fanOuts.length > 0) {
      const job = state.fanOuts[0];
      while (job.next < job.subs.length) {
        offer(job.subs[job.next++], job.rows);
        if (job.next % FANOUT_CLOCK_EVERY === 0 && job.next < job.subs.length && performance.now() > deadline) {
          setImmediate(runFanOuts, state);
          return;
        }
      }
      state.fanOuts.shift();
      if (job.notifiedAt !== undefined) deps.onLag?.((performance.now() - job.notifiedAt) / 1000);
    }
  }

  /** One read loop per thread at a time; wake-ups during a read coalesce into one more read. */
  async function pump(state: ThreadState) {
    if (state.reading || state.retry || stopped) return;
    state.reading = true;
    try {
      while (state.dirty && state.subs.size > 0 && !stopped) {
        state.dirty = false;
        const notifiedAt = state.notifiedAt;
        for (;;) {
          const rows = await read(state, state.lastSeq);
          if (rows.length > 0) {
            state.lastSeq = rows[rows.length - 1].seq;
            const timed = notifiedAt !== undefined && state.notifiedAt === notifiedAt;
            if (timed) state.notifiedAt = undefined;
            fanOut(state, rows, timed ? notifiedAt : undefined);
          }
          if (rows.length < PAGE) break;
        }
      }
      state.failures = 0;
    } catch (err) {
      // Database unavailable: keep the subscribers, try again (and again after 'reconnected').
      state.dirty = true;
      logger.warn({ err: (err as Error).message, thread: state.threadId }, 'live tail read failed; retrying');
      state.retry = setTimeout(() => {
        state.retry = null;
        void pump(state);
      }, backoff(state.failures++));
      state.retry.unref();
    } finally {
      state.reading = false;
    }
  }

  function offer(sub: Sub, rows: EventView[]) {
    if (sub.closed) return;
    const last = rows[rows.length - 1].seq;
    if (sub.catchingUp) {
      sub.wanted = Math.max(sub.wanted, last);
      return;
    }
    let i = 0;
    while (i < rows.length && rows[i].seq <= sub.cursor) i++;
    if (i === rows.length) return;
    if (rows[i].seq !== sub.cursor + 1) {
      sub.wanted = last;
      void catchUp(sub);
      return;
    }
    deliver(sub, i === 0 ? rows : rows.slice(i));
  }

  /** Sends rows (all past the cursor) up to any event that ends the subscription or re-checks access. */
  function deliver(sub: Sub, rows: EventView[]) {
    let cut = rows.length;
    let action: 'end' | 'recheck' | null = null;
    for (let i = 0; i < rows.length; i++) {
      const e = rows[i];
      // Any membership change of this subscriber (removed, or a role change written as
      // member.added) and any policy change may take its read access away: re-check.
      const aboutMe =
        (e.type === 'member.removed' || e.type === 'member.added') &&
        sub.opts.userId !== null &&
        e.data.user_id === sub.opts.userId;
      const policyChanged = e.type === 'thread.updated' && e.data.policies !== undefined;
      if (e.type === 'thread.deleted' || aboutMe || policyChanged) {
        cut = i + 1;
        action = e.type === 'thread.deleted' ? 'end' : 'recheck';
        break;
      }
    }
    const out = cut === rows.length ? rows : rows.slice(0, cut);
    sub.cursor = out[out.length - 1].seq;
    sub.opts.sink.send(out);
    if (sub.closed || !action) return;
    if (action === 'end') return end(sub, 'thread_deleted');
    // Nothing after this event goes out until access is confirmed again.
    sub.needsRecheck = true;
    sub.wanted = Math.max(sub.wanted, rows[rows.length - 1].seq);
    if (!sub.catchingUp) void catchUp(sub);
  }

  /** The subscriber reads the log itself from its cursor until it has caught up with fan-out. */
  async function catchUp(sub: Sub, initial = false) {
    sub.catchingUp = true;
    let failures = 0;
    while (!sub.closed) {
      try {
        if (sub.needsRecheck) {
          if (!(await sub.opts.recheck())) return end(sub, 'removed');
          sub.needsRecheck = false;
          if (sub.closed) return;
        }
        const rows = await read(sub.opts, sub.cursor);
        failures = 0;
        if (sub.closed) return;
        const fresh = rows.filter((r) => r.seq > sub.cursor);
        // The log has no gaps, except below a retention horizon: a read that does not start at
        // cursor + 1 (or finds nothing where events existed) means the prefix was purged.
        const horizon =
          fresh.length > 0
            ? fresh[0].seq - 1
            : initial && sub.cursor < sub.opts.threadLastSeq
              ? sub.opts.threadLastSeq
              : 0;
        if (horizon > sub.cursor) {
          sub.cursor = horizon;
          sub.opts.sink.reset(horizon);
          if (sub.closed) return;
        }
        if (fresh.length > 0) {
          deliver(sub, fresh);
          if (sub.closed) return;
          if (sub.needsRecheck) continue;
        }
        if (rows.length < PAGE && sub.cursor >= sub.wanted) break;
        if (rows.length === PAGE) await sub.opts.sink.drain();
      } catch (err) {
        if (sub.closed) return;
        logger.warn({ err: (err as Error).message, thread: sub.opts.threadId }, 'live tail catch-up failed; retrying');
        await sleep(backoff(failures++));
      }
    }
    if (sub.closed) return;
    // Synchronously from the last read to here: no fan-out can slip in between.
    sub.catchingUp = false;
    if (initial) sub.opts.sink.ready(sub.cursor);
  }

  function end(sub: Sub, reason: CloseReason) {
    if (sub.closed) return;
    remove(sub);
    sub.opts.sink.closed(reason);
  }

  function remove(sub: Sub) {
    sub.closed = true;
    const k = key(sub.opts.projectId, sub.opts.threadId);
    const state = threads.get(k);
    if (!state) return;
    state.subs.delete(sub);
    if (state.subs.size === 0) {
      if (state.retry) clearTimeout(state.retry);
      threads.delete(k);
    }
  }

  /** After LISTEN comes back, anything committed while it was down is read for every thread. */
  function refreshAll() {
    for (const state of threads.values()) {
      state.dirty = true;
      if (state.retry) {
        clearTimeout(state.retry);
        state.retry = null;
      }
      void pump(state);
    }
  }

  return {
    async start() {
      await deps.listener.listen(CHANNELS.events, onNotify);
      deps.listener.on('reconnected', refreshAll);
    },

    /**
     * Registers a subscriber, replays the log after `afterSeq`, then calls sink.ready and goes
     * live. Returns a handle whose close() ends it silently (the client went away).
     */
    subscribe(opts: SubscribeOptions): { close(): void } {
      const k = key(opts.projectId, opts.threadId);
      let state = threads.get(k);
      if (!state) {
        state = {
          projectId: opts.projectId,
          threadId: opts.threadId,
          lastSeq: opts.threadLastSeq,
          dirty: false,
          reading: false,
          failures: 0,
          retry: null,
          subs: new Set(),
          fanOuts: [],
        };
        threads.set(k, state);
      }
      const sub: Sub = new Subscriber(opts, remove);
      state.subs.add(sub);
      if ((opts.purgedThroughSeq ?? 0) > opts.afterSeq) {
        sub.cursor = opts.purgedThroughSeq!;
        opts.sink.reset(sub.cursor);
      }
      void catchUp(sub, true);
      // The subscriber is its own handle (close() removes it): no closure per subscription.
      return sub;
    },

    /** Ends every subscription (shutdown); sinks get closed('shutdown'). */
    closeAll() {
      stopped = true;
      for (const state of [...threads.values()]) for (const sub of [...state.subs]) end(sub, 'shutdown');
    },

    stats() {
      let subscribers = 0;
      for (const s of threads.values()) subscribers += s.subs.size;
      return { threads: threads.size, subscribers };
    },
  };
}

export type TailHub = ReturnType<typeof createTailHub>;
