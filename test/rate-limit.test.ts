import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { api, startInstance, startTestApp, type ApiResponse, type TestContext, type TestInstance } from './helpers/app';
import { maxLeaseUnits } from '../src/modules/rate-limit/rate-limiter';

const policyOf = (r: ApiResponse) => r.headers.get('ratelimit-policy');
const stateOf = (r: ApiResponse) => {
  const m = /^"(\w+)";r=(\d+);t=(\d+)$/.exec(r.headers.get('ratelimit') ?? '');
  assert.ok(m, `RateLimit header malformed: ${r.headers.get('ratelimit')}`);
  return { name: m[1], r: Number(m[2]), t: Number(m[3]) };
};

describe('rate limits across two replicas', () => {
  let t: TestContext;
  let second: TestInstance;
  const urls = () => [t.url, second.url];
  const project = async (rateLimits: object) =>
    (await t.app.projects.createProject({ name: 'rl', settings: { rate_limits: rateLimits } })).keys.secret;

  before(async () => {
    // Per-user limits are the subject here: the key's aggregate over all its users (RATE_LIMIT_KEY_FACTOR ×
    // the per-user limit) is set out of the way (test/operator-ceilings.test.ts covers it).
    const env = { RATE_LIMIT_KEY_FACTOR: '1000' };
    t = await startTestApp(env);
    second = await startInstance(t.databaseUrl, env);
  });
  after(async () => {
    await second.close();
    await t.stop();
  });

  test('requests alternating between replicas are admitted up to the limit and no further, with draft headers', async () => {
    const sk = await project({ write: { limit: 10, window_seconds: 30 } });
    for (let i = 0; i < 10; i++) {
      const r = await api(urls()[i % 2], 'POST', '/v1/threads/alt/messages', {
        key: sk,
        user: 'u1',
        body: { body: i },
      });
      assert.equal(r.status, 201, r.text);
      assert.equal(policyOf(r), '"write";q=10;w=30');
      const s = stateOf(r);
      assert.equal(s.name, 'write');
      assert.equal(s.r, 9 - i, 'remaining counts down across both replicas');
      assert.ok(s.t >= 25 && s.t <= 30, `t=${s.t}: the first request ages out about 30 s after it was admitted`);
    }
    for (const url of urls()) {
      const refused = await api(url, 'POST', '/v1/threads/alt/messages', {
        key: sk,
        user: 'u1',
        body: { body: 'over' },
      });
      assert.equal(refused.status, 429);
      assert.match(refused.headers.get('content-type') ?? '', /application\/problem\+json/);
      assert.equal(refused.body.type, 'https://progressdb.dev/problems/quota-exceeded');
      const retry = Number(refused.headers.get('retry-after'));
      assert.ok(retry >= 20 && retry <= 30, `Retry-After ${retry}`);
      assert.equal(policyOf(refused), '"write";q=10;w=30');
      assert.deepEqual(stateOf(refused), { name: 'write', r: 0, t: retry });
    }
    const { rows } = await t.db.raw(`select count(*)::int as n from messages where thread_id = 'alt'`);
    assert.equal(rows[0].n, 10, 'refused requests wrote nothing');
  });

  test('the window slides: requests are admitted again as old ones age out, not all at once', async () => {
    const sk = await project({ read: { limit: 4, window_seconds: 3 } });
    const get = (i: number) => api(urls()[i % 2], 'GET', '/v1/threads', { key: sk });
    const start = Date.now();
    assert.deepEqual([(await get(0)).status, (await get(1)).status], [200, 200]);
    await sleep(1_500);
    assert.deepEqual([(await get(0)).status, (await get(1)).status], [200, 200]);
    const refused = await get(0);
    assert.equal(refused.status, 429);
    const retry = Number(refused.headers.get('retry-after'));
    assert.ok(retry >= 1 && retry <= 2, `the first pair ages out within ~1.5 s, Retry-After ${retry}`);
    // After the first pair has aged out (3 s) but before the second pair does (4.5 s).
    await sleep(Math.max(0, 3_300 - (Date.now() - start)));
    assert.deepEqual([(await get(1)).status, (await get(0)).status], [200, 200]);
    assert.equal((await get(1)).status, 429, 'the second pair still counts: a fixed window would have reset entirely');
  });

  test('read and write classes are independent', async () => {
    const sk = await project({ write: { limit: 2, window_seconds: 60 }, read: { limit: 5, window_seconds: 60 } });
    for (let i = 0; i < 2; i++)
      assert.equal((await api(urls()[i % 2], 'POST', '/v1/threads', { key: sk, body: { type: 'group' } })).status, 201);
    assert.equal((await api(t.url, 'POST', '/v1/threads', { key: sk, body: { type: 'group' } })).status, 429);
    const read = await api(second.url, 'GET', '/v1/threads', { key: sk });
    assert.equal(read.status, 200);
    assert.equal(policyOf(read), '"read";q=5;w=60');
    assert.equal(stateOf(read).r, 4);
  });

  test("one project's exhaustion does not affect another's, nor another user's of the same key", async () => {
    const limits = { write: { limit: 2, window_seconds: 60 } };
    const a = await project(limits);
    const b = await project(limits);
    for (let i = 0; i < 2; i++)
      assert.equal(
        (await api(urls()[i % 2], 'POST', '/v1/threads', { key: a, user: 'x', body: { type: 'group' } })).status,
        201,
      );
    assert.equal((await api(t.url, 'POST', '/v1/threads', { key: a, user: 'x', body: { type: 'group' } })).status, 429);
    const other = await api(t.url, 'POST', '/v1/threads', { key: b, user: 'x', body: { type: 'group' } });
    assert.equal(other.status, 201);
    assert.equal(stateOf(other).r, 1);
    assert.equal(
      (await api(second.url, 'POST', '/v1/threads', { key: a, user: 'y', body: { type: 'group' } })).status,
      201,
    );
  });

  test('under concurrent load on both replicas the overshoot stays within 2 leases', async () => {
    const limit = 200;
    const bound = 2 * maxLeaseUnits(limit);
    const creds = await t.app.projects.createProject({
      name: 'rl',
      settings: { rate_limits: { read: { limit, window_seconds: 120 } } },
    });
    const sk = creds.keys.secret;
    let next = 0;
    const statuses: number[] = [];
    await Promise.all(
      Array.from({ length: 16 }, (_, w) =>
        (async () => {
          while (next < 320) {
            next++;
            statuses.push((await api(urls()[w % 2], 'GET', '/v1/threads?limit=1', { key: sk })).status);
          }
        })(),
      ),
    );
    const admitted = statuses.filter((s) => s === 200).length;
    assert.equal(statuses.filter((s) => s !== 200 && s !== 429).length, 0);
    assert.ok(admitted <= limit + bound, `admitted ${admitted} > ${limit} + ${bound}`);
    assert.ok(admitted >= limit - bound, `admitted ${admitted} < ${limit} - ${bound}`);
    const { rows } = await t.db.raw(`select max(units) as biggest from rate_limit_leases where project_id = ?`, [
      creds.project_id,
    ]);
    assert.ok(Number(rows[0].biggest) > 1, 'replicas reserved multi-unit leases (the path this bound is about)');
  });

  test('many end users at once on both replicas: each gets exactly its own limit', async () => {
    const sk = await project({ read: { limit: 3, window_seconds: 120 } });
    const users = Array.from({ length: 40 }, (_, i) => `user-${i}`);
    // 5 requests per user, all in flight together, spread over both replicas: lease requests of
    // many buckets share round trips (rate_limit_acquire_many) and must still count exactly.
    const results = await Promise.all(
      users.flatMap((user, u) =>
        Array.from({ length: 5 }, (_, i) =>
          api(urls()[(u + i) % 2], 'GET', '/v1/threads?limit=1', { key: sk, user }).then((r) => ({
            user,
            status: r.status,
          })),
        ),
      ),
    );
    for (const user of users) {
      const mine = results.filter((r) => r.user === user);
      assert.deepEqual(
        mine.map((r) => r.status).sort(),
        [200, 200, 200, 429, 429],
        `${user}: ${mine.map((r) => r.status).join(',')}`,
      );
    }
  });

  test('limits live in PostgreSQL: a replica started later sees the exhausted window', async () => {
    const sk = await project({ write: { limit: 2, window_seconds: 60 } });
    for (let i = 0; i < 2; i++)
      assert.equal((await api(t.url, 'POST', '/v1/threads', { key: sk, body: { type: 'group' } })).status, 201);
    const fresh = await startInstance(t.databaseUrl);
    try {
      const r = await api(fresh.url, 'POST', '/v1/threads', { key: sk, body: { type: 'group' } });
      assert.equal(r.status, 429);
      assert.ok(Number(r.headers.get('retry-after')) > 50);
    } finally {
      await fresh.close();
    }
  });
});

describe('per-IP limits for sign-in routes', () => {
  let t: TestContext;
  before(async () => {
    t = await startTestApp({ RATE_LIMIT_IP: '3', RATE_LIMIT_WINDOW_SECONDS: '30' });
  });
  after(() => t.stop());

  test('limits /auth/* per client IP and leaves health probes alone', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await api(t.url, 'GET', '/auth/providers');
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('ratelimit-policy'), '"auth";q=3;w=30');
    }
    const refused = await api(t.url, 'POST', '/auth/logout');
    assert.equal(refused.status, 429);
    assert.equal(refused.body.type, 'https://progressdb.dev/problems/quota-exceeded');
    assert.ok(Number(refused.headers.get('retry-after')) >= 1);
    for (let i = 0; i < 5; i++) {
      const h = await api(t.url, 'GET', '/healthz');
      assert.equal(h.status, 200);
      assert.equal(h.headers.get('ratelimit'), null);
    }
  });
});
