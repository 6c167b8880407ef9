import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import pg from 'pg';
import { after, before, describe, test } from 'node:test';
import { api, startTestApp, type TestContext } from './helpers/app';
import { createTestDatabase } from './helpers/db';
import { runCli, spawnReplica, type Replica } from './helpers/processes';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';

/** A counter or gauge from the Prometheus text of GET /metrics. */
async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `${name} is exported`);
  return Number(line.split(' ')[1]);
}

describe('page cache: a read that starts after any replica acknowledged a write includes it', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let a: Replica;
  let b: Replica;
  let sk: string;
  const auth = () => ({ authorization: `Bearer ${sk}`, 'x-user-id': 'writer' });

  before(async () => {
    database = await createTestDatabase();
    const creds = await runCli<{ keys: { secret: string } }>(['project', 'create', '--name', 'page cache', '--json'], {
      DATABASE_URL: database.url,
    });
    sk = creds.keys.secret;
    const env = { DATABASE_URL: database.url, RATE_LIMIT_ENABLED: 'false' };
    [a, b] = await Promise.all([spawnReplica('A', env, 180_000), spawnReplica('B', env, 180_000)]);
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await database?.drop();
  });

  test('1,000 times: append on one replica, read the newest and the after_seq page on the other at once', async () => {
    const created = await fetch(`${a.url}/v1/threads`, {
      method: 'POST',
      headers: { ...auth(), 'content-type': 'application/json' },
      body: JSON.stringify({ id: 'hot', type: 'channel' }),
    });
    assert.equal(created.status, 201);
    let previous = 0;
    for (let i = 0; i < 1000; i++) {
      // Alternate the writing replica, so each one's cache is read right after the other wrote.
      const [writer, reader] = i % 2 === 0 ? [a, b] : [b, a];
      const w = await fetch(`${writer.url}/v1/threads/hot/messages`, {
        method: 'POST',
        headers: { ...auth(), 'content-type': 'application/json' },
        body: JSON.stringify({ body: { i } }),
      });
      assert.equal(w.status, 201);
      const written = (await w.json()) as { id: string; seq: number };
      // Alternately the newest page and the after_seq page a resuming client asks for.
      const query = i % 4 < 2 ? 'limit=20' : `after_seq=${previous}`;
      const page = (await (
        await fetch(`${reader.url}/v1/threads/hot/messages?${query}`, { headers: auth() })
      ).json()) as { data: Array<{ id: string }> };
      assert.equal(page.data.at(-1)?.id, written.id, `${query} on ${reader.name} after write ${i}`);
      previous = written.seq;
    }
  });

  test('a cached answer is byte-identical to the uncached one: body, Content-Type and ETag', async () => {
    const miss = await fetch(`${b.url}/v1/threads/hot/messages?limit=7`, { headers: auth() });
    const hits = await metric(b.url, 'progressdb_page_cache_hits_total');
    const hit = await fetch(`${b.url}/v1/threads/hot/messages?limit=7`, { headers: auth() });
    assert.equal(await metric(b.url, 'progressdb_page_cache_hits_total'), hits + 1, 'the second read was a hit');
    assert.equal(hit.status, 200);
    assert.equal(hit.headers.get('content-type'), miss.headers.get('content-type'));
    assert.equal(hit.headers.get('content-type'), 'application/json; charset=utf-8');
    assert.ok(miss.headers.get('etag'));
    assert.equal(hit.headers.get('etag'), miss.headers.get('etag'));
    assert.equal(hit.headers.get('content-length'), miss.headers.get('content-length'));
    assert.deepEqual(Buffer.from(await hit.arrayBuffer()), Buffer.from(await miss.arrayBuffer()));
  });
});

describe('page cache: bounded memory, and access checked on every read', () => {
  let t: TestContext;
  let creds: ProjectCredentials;
  const BUDGET = 64 * 1024;
  const as = (user: string, method: string, path: string, body?: unknown) =>
    api(t.url, method, path, {
      key: creds.keys.publishable,
      user,
      signature: createHmac('sha256', creds.signing_secret).update(user).digest('hex'),
      body,
    });

  before(async () => {
    t = await startTestApp({ PAGE_CACHE_BYTES: String(BUDGET), RATE_LIMIT_ENABLED: 'false' });
    creds = await t.project();
  });
  after(() => t.stop());

  test('evicts least recently used pages to stay within PAGE_CACHE_BYTES, and still answers correctly', async () => {
    const sk = creds.keys.secret;
    const text = 'z'.repeat(1000);
    // 20 threads × a ~10 KB newest page: three times the budget.
    for (let i = 0; i < 20; i++) {
      const r = await api(t.url, 'POST', `/v1/threads/ev${i}/messages/batch`, {
        key: sk,
        user: 'w',
        body: { messages: Array.from({ length: 10 }, (_, j) => ({ body: { text, i, j } })) },
      });
      assert.equal(r.status, 201, r.text);
    }
    const first = await api(t.url, 'GET', '/v1/threads/ev0/messages', { key: sk });
    for (let i = 1; i < 20; i++) {
      const r = await api(t.url, 'GET', `/v1/threads/ev${i}/messages`, { key: sk });
      assert.equal(r.body.data.length, 10);
      assert.ok((await metric(t.url, 'progressdb_page_cache_bytes')) <= BUDGET);
    }
    assert.ok((await metric(t.url, 'progressdb_page_cache_evictions_total')) >= 10);
    // The newest thread read is still held; the first one was evicted and is read again, the same.
    const hits = await metric(t.url, 'progressdb_page_cache_hits_total');
    await api(t.url, 'GET', '/v1/threads/ev19/messages', { key: sk });
    assert.equal(await metric(t.url, 'progressdb_page_cache_hits_total'), hits + 1);
    const misses = await metric(t.url, 'progressdb_page_cache_misses_total');
    const again = await api(t.url, 'GET', '/v1/threads/ev0/messages', { key: sk });
    assert.equal(await metric(t.url, 'progressdb_page_cache_misses_total'), misses + 1);
    assert.equal(again.text, first.text);
  });

  test('removing a member or tightening the read policy denies the next read of a cached page', async () => {
    const sk = creds.keys.secret;
    assert.equal((await as('own', 'POST', '/v1/threads', { id: 'club', type: 'group', members: ['m1'] })).status, 201);
    assert.equal((await as('m1', 'POST', '/v1/threads/club/messages', { body: { text: 'hi' } })).status, 201);
    for (let i = 0; i < 2; i++) assert.equal((await as('m1', 'GET', '/v1/threads/club/messages')).status, 200);
    // An outsider never gets the cached page.
    assert.equal((await as('outsider', 'GET', '/v1/threads/club/messages')).status, 403);
    assert.equal((await api(t.url, 'DELETE', '/v1/threads/club/members/m1', { key: sk })).status, 204);
    assert.equal((await as('m1', 'GET', '/v1/threads/club/messages')).status, 403);
    // Public read policy: an outsider reads; back to members: denied on the very next read.
    const patch = (read: string) =>
      api(t.url, 'PATCH', '/v1/threads/club', { key: sk, body: { policies: { read } } }).then((r) => r.status);
    assert.equal(await patch('public'), 200);
    for (let i = 0; i < 2; i++) assert.equal((await as('outsider', 'GET', '/v1/threads/club/messages')).status, 200);
    assert.equal(await patch('members'), 200);
    assert.equal((await as('outsider', 'GET', '/v1/threads/club/messages')).status, 403);
    // A deleted thread is gone at once, cached page or not.
    for (let i = 0; i < 2; i++) assert.equal((await as('own', 'GET', '/v1/threads/club/messages')).status, 200);
    assert.equal((await api(t.url, 'DELETE', '/v1/threads/club', { key: sk })).status, 204);
    assert.equal((await as('own', 'GET', '/v1/threads/club/messages')).status, 404);
  });

  test('concurrent reads are authorized together in batched queries, each by its own rule', async () => {
    const sk = creds.keys.secret;
    assert.equal(
      (await as('boss', 'POST', '/v1/threads', { id: 'mixed', type: 'group', members: ['in'] })).status,
      201,
    );
    assert.equal((await as('in', 'POST', '/v1/threads/mixed/messages', { body: { text: 'hi' } })).status, 201);
    const batches = await metric(t.url, 'progressdb_read_access_batch_size_count');
    const looked = await metric(t.url, 'progressdb_read_access_batch_size_sum');
    // The look-ups are held by a lock on threads until the reads have reached the server, so
    // they must queue behind the first query (without the lock, a fast machine may answer each
    // read before the next one arrives, and there is nothing to batch).
    const blocker = new pg.Client({ connectionString: t.databaseUrl });
    await blocker.connect();
    await blocker.query('begin');
    await blocker.query('lock table threads in access exclusive mode');
    const reads = Array.from({ length: 10 }, () => [
      as('in', 'GET', '/v1/threads/mixed/messages').then((r) => ({ who: 'member', status: r.status })),
      as('out', 'GET', '/v1/threads/mixed/messages').then((r) => ({ who: 'outsider', status: r.status })),
      as('in', 'GET', '/v1/threads/nowhere/messages').then((r) => ({ who: 'missing', status: r.status })),
      api(t.url, 'GET', '/v1/threads/mixed/messages', { key: sk }).then((r) => ({ who: 'secret', status: r.status })),
    ]).flat();
    try {
      // Every look-up query needs threads, so none is answered while the lock is held: the
      // first one sent waits (for the lock, or for a pool connection behind other waiters)
      // and the reads that arrive meanwhile queue for the next query.
      await new Promise((r) => setTimeout(r, 1_000));
    } finally {
      await blocker.query('rollback');
      await blocker.end();
    }
    const statuses = await Promise.all(reads);
    const expected: Record<string, number> = { member: 200, outsider: 403, missing: 404, secret: 200 };
    for (const { who, status } of statuses) assert.equal(status, expected[who], who);
    const sent = (await metric(t.url, 'progressdb_read_access_batch_size_count')) - batches;
    assert.equal((await metric(t.url, 'progressdb_read_access_batch_size_sum')) - looked, reads.length);
    assert.ok(sent < reads.length, `${reads.length} reads in ${sent} queries`);
  });
});
