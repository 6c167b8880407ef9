import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import type { Knex } from 'knex';
import { createLogger } from '../../src/lib/logger';
import {
  createRateLimiter,
  leaseLifetimeMs,
  maxLeaseUnits,
  type Policy,
  type RateLimiter,
} from '../../src/modules/rate-limit/rate-limiter';
import type { LeaseGrant, LeaseRef, RateLimitStore } from '../../src/modules/rate-limit/rate-limit-store';

const RETRY_MS = 5_000;
const RESET_MS = 30_000;

/**
 * A rate-limit store in memory: one window per bucket counting granted units (nothing ages out
 * unless a test says so), every call recorded.
 */
function fakeStore() {
  const used = new Map<string, number>();
  const leases = new Map<number, { key: string; granted: number }>();
  const acquires: Array<{ bucket: string; limit: number; want: number }> = [];
  const settles: Array<{ id: number; used: number }> = [];
  let nextId = 1;
  const acquire = (projectId: string, bucket: string, limit: number, want: number): LeaseGrant => {
    acquires.push({ bucket, limit, want });
    const key = `${projectId}/${bucket}`;
    const before = used.get(key) ?? 0;
    const granted = Math.max(0, Math.min(want, limit - before));
    used.set(key, before + granted);
    if (granted === 0) return { granted: 0, used: before, row: null, resetMs: RESET_MS, retryMs: RETRY_MS };
    const id = nextId++;
    leases.set(id, { key, granted });
    return { granted, used: before + granted, row: { grantedAt: 'at', id }, resetMs: RESET_MS, retryMs: 0 };
  };
  const store = {
    acquire: async (_db: unknown, p: string, b: string, limit: number, _w: number, want: number) =>
      acquire(p, b, limit, want),
    acquireMany: async (
      _db: unknown,
      reqs: Array<{ projectId: string; bucket: string; limit: number; want: number }>,
    ) => reqs.map((r) => acquire(r.projectId, r.bucket, r.limit, r.want)),
    settle: async (_db: unknown, ref: LeaseRef, u: number) => {
      settles.push({ id: ref.id, used: u });
      const l = leases.get(ref.id)!;
      used.set(l.key, (used.get(l.key) ?? 0) - (l.granted - u));
    },
    sweep: async () => 0,
  };
  return { store: store as unknown as RateLimitStore, acquires, settles, used, leases };
}

describe('rate limiter arithmetic (unit, fake store and clock, no database)', () => {
  let limiter: RateLimiter | null = null;
  let clock = 0;
  function setup() {
    const fake = fakeStore();
    clock = 1_000;
    limiter = createRateLimiter({
      db: {} as Knex,
      store: fake.store,
      logger: createLogger('silent'),
      now: () => clock,
    });
    return { ...fake, limiter };
  }
  afterEach(async () => {
    await limiter?.close();
    limiter = null;
  });
  const policy = (limit: number, windowMs = 60_000): Policy => ({ name: 'write', limit, windowMs });

  test('lease size bound (2 % of the limit, at least 1) and lifetime (a tenth of the window, 10 ms … 1 s)', () => {
    assert.deepEqual([1, 49, 50, 100, 1_000, 10_000].map(maxLeaseUnits), [1, 1, 1, 2, 20, 200]);
    assert.deepEqual(
      [50, 100, 5_000, 10_000, 60_000, 3_600_000].map(leaseLifetimeMs),
      [10, 10, 500, 1_000, 1_000, 1_000],
    );
  });

  test('exactly `limit` requests pass; a refusal carries Retry-After and is not asked again within a lease lifetime', async () => {
    const { limiter: l, acquires } = setup();
    const decisions = [];
    for (let i = 0; i < 5; i++) decisions.push(await l.consume('p', 'k', policy(3)));
    assert.deepEqual(
      decisions.map((d) => d.allowed),
      [true, true, true, false, false],
    );
    assert.deepEqual(
      decisions.map((d) => d.remaining),
      [2, 1, 0, 0, 0],
    );
    assert.equal(decisions[0].retryAfterSeconds, 0);
    assert.equal(decisions[0].resetSeconds, RESET_MS / 1000);
    assert.equal(decisions[3].retryAfterSeconds, RETRY_MS / 1000);
    // Single-unit leases (limit 3): three grants and one refusal; the fifth request was refused locally.
    assert.equal(acquires.length, 4);
    clock += leaseLifetimeMs(60_000);
    assert.equal((await l.consume('p', 'k', policy(3))).allowed, false);
    assert.equal(acquires.length, 5, 'after a lease lifetime the store is asked again');
  });

  test('leases that run dry quickly double, up to 2 % of the limit', async () => {
    const { limiter: l, acquires } = setup();
    for (let i = 0; i < 1 + 2 + 4 + 8 + 16 + 20 + 20; i++)
      assert.ok((await l.consume('p', 'hot', policy(1_000))).allowed);
    assert.deepEqual(
      acquires.map((a) => a.want),
      [1, 2, 4, 8, 16, 20, 20],
    );
  });

  test('unspent units go back to the window, and the next lease shrinks to what was used', async () => {
    const { limiter: l, acquires, settles, used } = setup();
    for (let i = 0; i < 1 + 2 + 1; i++) await l.consume('p', 'k', policy(1_000));
    assert.deepEqual(
      acquires.map((a) => a.want),
      [1, 2, 4],
    );
    // A lease of 4 with 1 spent expires: 3 units are returned.
    clock += leaseLifetimeMs(60_000);
    assert.ok((await l.consume('p', 'k', policy(1_000))).allowed);
    assert.deepEqual(settles, [{ id: 3, used: 1 }]);
    assert.equal(acquires[3].want, 1, 'the next lease is as large as the last one was used');
    assert.equal(used.get('p/k'), 1 + 2 + 1 + 1);
  });

  test('a policy change retires the old lease and leases under the new limit', async () => {
    const { limiter: l, acquires, settles } = setup();
    for (let i = 0; i < 1 + 1; i++) await l.consume('p', 'k', policy(1_000));
    assert.equal((await l.consume('p', 'k', policy(2))).allowed, false, '2 already used: the new limit refuses');
    assert.deepEqual(settles, [{ id: 2, used: 1 }]);
    assert.deepEqual(
      acquires.map((a) => [a.limit, a.want]),
      [
        [1_000, 1],
        [1_000, 2],
        [2, 1],
      ],
    );
  });

  test('invalidate forgets refusals and returns unspent units of one project only', async () => {
    const { limiter: l, acquires, settles } = setup();
    await l.consume('p', 'k', policy(1));
    assert.equal((await l.consume('p', 'k', policy(1))).allowed, false);
    await l.consume('q', 'k', policy(1_000));
    await l.consume('q', 'k', policy(1_000));
    l.invalidate('p');
    assert.deepEqual(settles, [], 'project q keeps its lease');
    assert.equal((await l.consume('p', 'k', policy(1))).allowed, false);
    assert.equal(acquires.filter((a) => a.limit === 1).length, 3, 'the refusal was forgotten: the store is asked');
    l.invalidate();
    assert.deepEqual(settles, [{ id: 3, used: 1 }]);
  });

  test('concurrent requests of one bucket share lease round trips', async () => {
    const { limiter: l, acquires } = setup();
    const decisions = await Promise.all(Array.from({ length: 10 }, () => l.consume('p', 'k', policy(1_000))));
    assert.ok(decisions.every((d) => d.allowed));
    // The first asks for 1; those waiting meanwhile size the next lease (more than doubling would).
    assert.deepEqual(
      acquires.map((a) => a.want),
      [1, 8, 4],
    );
  });
});
