import type { Knex } from 'knex';
import type { Logger } from '../../lib/logger';
import type { LeaseGrant, LeaseRef, LeaseRequest, RateLimitStore } from './rate-limit-store';

export interface Policy {
  /** The policy's name in the RateLimit headers: the action class. */
  name: string;
  limit: number;
  windowMs: number;
}

export interface Decision {
  allowed: boolean;
  /** Units left in the window (an estimate on a replica holding a lease; exact when leases are single units). */
  remaining: number;
  /** Seconds until the oldest counted request ages out of the window. */
  resetSeconds: number;
  /** Seconds until a refused request may be retried (0 when allowed). */
  retryAfterSeconds: number;
}

/**
 * The most units one replica may hold unspent for one bucket: 2% of the limit, at least 1.
 * Two replicas together admit at most limit + 2 × this in any window (docs/RATE-LIMITS.md).
 */
export const maxLeaseUnits = (limit: number) => Math.max(1, Math.floor(limit / 50));

/** How long a replica may keep spending one lease: a tenth of the window, at most a second. */
export const leaseLifetimeMs = (windowMs: number) => Math.max(10, Math.min(1_000, Math.floor(windowMs / 10)));

interface Lease {
  ref: LeaseRef;
  granted: number;
  remaining: number;
  takenAt: number;
  expiresAt: number;
}

interface BucketState {
  projectId: string;
  bucket: string;
  limit: number;
  windowMs: number;
  lease: Lease | null;
  /** Size of the next lease: doubles while leases run dry, shrinks to what was used when they expire. */
  size: number;
  refill: Promise<void> | null;
  waiters: number;
  dbRemaining: number;
  resetAt: number;
  retryAt: number;
  /** A refused bucket is not asked about again before this (at most one lease lifetime). */
  deniedUntil: number;
  lastSeen: number;
}

const IDLE_EVICT_MS = 60_000;
/** Lease round trips one replica runs at once; requests arriving meanwhile share the next one. */
const MAX_IN_FLIGHT = 2;
const MAX_BATCH = 256;
const MAINTENANCE_MS = 250;
const SWEEP_MS = 60_000;

/**
 * Sliding-window limits shared through PostgreSQL. Each replica reserves quota in small leases
 * (rate_limit_acquire serialises grants per bucket and counts the window from the lease log)
 * and spends them in memory, so a hot key costs one database round trip per lease, not per
 * request, and nobody updates one counter row on every request.
 */
export function createRateLimiter(deps: { db: Knex; store: RateLimitStore; logger: Logger; now?: () => number }) {
  const now = deps.now ?? (() => performance.now());
  const buckets = new Map<string, BucketState>();
  const settling = new Set<Promise<void>>();
  const queue: Array<{ req: LeaseRequest; resolve: (g: LeaseGrant) => void; reject: (e: unknown) => void }> = [];
  let inFlight = 0;

  // Like group commit: while round trips are in flight, new lease requests queue, and the next
  // round trip carries all of them, so many quiet buckets do not cost one query each.
  function pump() {
    while (inFlight < MAX_IN_FLIGHT && queue.length > 0) {
      const batch = queue.splice(0, MAX_BATCH);
      inFlight++;
      const call =
        batch.length === 1
          ? deps.store
              .acquire(
                deps.db,
                batch[0].req.projectId,
                batch[0].req.bucket,
                batch[0].req.limit,
                batch[0].req.windowMs,
                batch[0].req.want,
              )
              .then((g) => [g])
          : deps.store.acquireMany(
              deps.db,
              batch.map((b) => b.req),
            );
      call
        .then(
          (grants) => batch.forEach((b, i) => b.resolve(grants[i])),
          (err) => batch.forEach((b) => b.reject(err)),
        )
        .finally(() => {
          inFlight--;
          pump();
        });
    }
  }

  const requestLease = (req: LeaseRequest) =>
    new Promise<LeaseGrant>((resolve, reject) => {
      queue.push({ req, resolve, reject });
      pump();
    });

  function settle(ref: LeaseRef, used: number) {
    const p = deps.store
      .settle(deps.db, ref, used)
      .catch((err) => deps.logger.warn({ err: (err as Error).message }, 'could not return unused rate-limit units'))
      .finally(() => settling.delete(p));
    settling.add(p);
  }

  /** Stops spending a lease; unspent units go back to the window. */
  function retire(b: BucketState, t: number) {
    const l = b.lease;
    if (!l) return;
    b.lease = null;
    const used = l.granted - l.remaining;
    if (l.remaining === 0) {
      if (t - l.takenAt < (l.expiresAt - l.takenAt) / 2) b.size = Math.min(maxLeaseUnits(b.limit), b.size * 2);
    } else {
      b.size = Math.max(1, used);
      settle(l.ref, used);
    }
  }

  async function refill(b: BucketState) {
    const t0 = now();
    retire(b, t0);
    const want = Math.max(1, Math.min(Math.max(b.size, b.waiters), maxLeaseUnits(b.limit), b.limit));
    const g = await requestLease({
      projectId: b.projectId,
      bucket: b.bucket,
      limit: b.limit,
      windowMs: b.windowMs,
      want,
    });
    const t = now();
    b.dbRemaining = Math.max(0, b.limit - g.used);
    b.resetAt = t + g.resetMs;
    if (g.granted > 0 && g.row) {
      const ref = { projectId: b.projectId, bucket: b.bucket, grantedAt: g.row.grantedAt, id: g.row.id };
      // Lifetime counts from arrival: a round trip slower than the lifetime (an overloaded
      // database) must not hand waiters leases that are already dead, or they would refill forever.
      // The overshoot bound does not depend on it (one lease per replica and bucket at a time).
      b.lease = {
        ref,
        granted: g.granted,
        remaining: g.granted,
        takenAt: t0,
        expiresAt: t + leaseLifetimeMs(b.windowMs),
      };
      b.deniedUntil = 0;
    } else {
      b.retryAt = t + g.retryMs;
      b.deniedUntil = t + Math.min(g.retryMs, leaseLifetimeMs(b.windowMs));
    }
  }

  const seconds = (ms: number) => Math.max(0, Math.ceil(ms / 1000));

  const maintenance = setInterval(() => {
    const t = now();
    for (const [key, b] of buckets) {
      if (b.lease && t >= b.lease.expiresAt && !b.refill) retire(b, t);
      if (!b.lease && !b.refill && b.waiters === 0 && t - b.lastSeen > IDLE_EVICT_MS) buckets.delete(key);
    }
  }, MAINTENANCE_MS);
  maintenance.unref();

  const sweeper = setInterval(
    () => {
      deps.store
        .sweep(deps.db)
        .catch((err) => deps.logger.warn({ err: (err as Error).message }, 'rate-limit sweep failed'));
    },
    SWEEP_MS * (0.75 + Math.random() / 2),
  );
  sweeper.unref();

  return {
    /** Takes one unit from `bucket` of `projectId` ('' for limits that belong to no project). */
    async consume(projectId: string, bucket: string, policy: Policy): Promise<Decision> {
      const key = `${projectId}\u0000${bucket}`;
      let b = buckets.get(key);
      if (!b) {
        b = {
          projectId,
          bucket,
          limit: policy.limit,
          windowMs: policy.windowMs,
          lease: null,
          size: 1,
          refill: null,
          waiters: 0,
          dbRemaining: policy.limit,
          resetAt: 0,
          retryAt: 0,
          deniedUntil: 0,
          lastSeen: 0,
        };
        buckets.set(key, b);
      }
      if (b.limit !== policy.limit || b.windowMs !== policy.windowMs) {
        // Settings changed: stop spending leases granted under the old policy.
        retire(b, now());
        b.limit = policy.limit;
        b.windowMs = policy.windowMs;
        b.size = 1;
        b.deniedUntil = 0;
      }
      for (;;) {
        const t = now();
        b.lastSeen = t;
        const l = b.lease;
        if (l && l.remaining > 0 && t < l.expiresAt) {
          l.remaining--;
          return {
            allowed: true,
            remaining: b.dbRemaining + l.remaining,
            resetSeconds: seconds(b.resetAt - t),
            retryAfterSeconds: 0,
          };
        }
        if (b.deniedUntil > t) {
          const retry = Math.max(1, seconds(b.retryAt - t));
          return { allowed: false, remaining: 0, resetSeconds: retry, retryAfterSeconds: retry };
        }
        const state = b;
        b.refill ??= refill(state).finally(() => {
          state.refill = null;
        });
        b.waiters++;
        try {
          await b.refill;
        } finally {
          b.waiters--;
        }
      }
    },

    /** Forgets local leases and refusals for one project (or all), e.g. after a settings change. */
    invalidate(projectId?: string) {
      const t = now();
      for (const b of buckets.values()) {
        if (projectId !== undefined && b.projectId !== projectId) continue;
        if (!b.refill) retire(b, t);
        b.deniedUntil = 0;
      }
    },

    /** Returns unspent units and stops the timers. */
    async close() {
      clearInterval(maintenance);
      clearInterval(sweeper);
      const t = now();
      for (const b of buckets.values()) if (!b.refill) retire(b, t);
      await Promise.all([...settling]);
    },
  };
}

export type RateLimiter = ReturnType<typeof createRateLimiter>;
