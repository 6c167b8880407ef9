import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { api, startInstance, startTestApp, type TestContext } from './helpers/app';
import { sample } from './helpers/metrics';

describe('metrics', () => {
  let t: TestContext;
  let sk: string;
  before(async () => {
    t = await startTestApp();
    sk = (await t.project()).keys.secret;
  });
  after(() => t.stop());

  const scrape = async (url = t.url) => {
    const r = await fetch(`${url}/metrics`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    return r.text();
  };

  test('labels request durations with the route pattern and status, never the raw URL', async () => {
    const threadId = 'raw-url-thread-7f3a';
    assert.equal(
      (await api(t.url, 'POST', `/v1/threads/${threadId}/messages`, { key: sk, user: 'al', body: { body: 'x' } }))
        .status,
      201,
    );
    assert.equal((await api(t.url, 'GET', `/v1/threads/${threadId}/messages?limit=5`, { key: sk })).status, 200);
    assert.equal((await api(t.url, 'GET', `/v1/threads/no-such-thread-91/messages`, { key: sk })).status, 404);
    assert.equal((await api(t.url, 'GET', `/nowhere/at/all-5521`)).status, 404);
    const text = await scrape();
    const route = '/v1/threads/:thread_id/messages';
    assert.equal(
      sample(text, 'progressdb_http_request_duration_seconds_count', { method: 'POST', route, status: '201' }),
      1,
    );
    assert.equal(
      sample(text, 'progressdb_http_request_duration_seconds_count', { method: 'GET', route, status: '200' }),
      1,
    );
    assert.equal(
      sample(text, 'progressdb_http_request_duration_seconds_count', { method: 'GET', route, status: '404' }),
      1,
    );
    assert.equal(
      sample(text, 'progressdb_http_request_duration_seconds_count', {
        method: 'GET',
        route: 'unmatched',
        status: '404',
      }),
      1,
    );
    assert.ok(
      !text.includes(threadId) && !text.includes('no-such-thread-91') && !text.includes('all-5521'),
      'no raw path in any label',
    );
  });

  test('reports ingest group size and commit time from the group-commit pipeline', async () => {
    const before = sample(await scrape(), 'progressdb_ingest_group_size_sum') ?? 0;
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        api(t.url, 'POST', '/v1/threads/groups/messages', { key: sk, user: 'al', body: { body: { i } } }),
      ),
    );
    const text = await scrape();
    // 10 appends (plus the thread.created of the first post) went through some number of groups.
    assert.ok((sample(text, 'progressdb_ingest_group_size_sum') ?? 0) - before >= 10);
    assert.ok((sample(text, 'progressdb_ingest_group_size_count') ?? 0) >= 1);
    assert.ok((sample(text, 'progressdb_ingest_commit_seconds_count') ?? 0) >= 1);
    assert.ok((sample(text, 'progressdb_ingest_commit_seconds_sum') ?? 0) > 0);
  });

  test('exposes pool usage, process metrics and the realtime and rate-limit series', async () => {
    const text = await scrape();
    for (const state of ['used', 'free', 'pending']) {
      const v = sample(text, 'progressdb_db_pool_connections', { pool: 'main', state });
      assert.ok(v !== undefined && v >= 0, `pool ${state}`);
    }
    // The scrape itself runs no query, but earlier requests left connections in the pool.
    assert.ok((sample(text, 'progressdb_db_pool_connections', { pool: 'main', state: 'free' }) ?? 0) >= 1);
    assert.ok((sample(text, 'progressdb_process_resident_memory_bytes') ?? 0) > 0);
    assert.ok(sample(text, 'progressdb_nodejs_eventloop_lag_seconds') !== undefined);
    assert.match(text, /# TYPE progressdb_notify_delivery_lag_seconds histogram/);
    assert.match(text, /# TYPE progressdb_realtime_connections gauge/);
    assert.match(text, /# TYPE progressdb_rate_limit_refusals_total counter/);
    assert.match(text, /# TYPE progressdb_slow_queries_total counter/);
  });

  test("counts the rate limiter's 429 refusals by class", async () => {
    const limited = await startInstance(t.databaseUrl, { RATE_LIMIT_WRITE: '2', RATE_LIMIT_READ: '3' });
    try {
      const post = () =>
        api(limited.url, 'POST', '/v1/threads/limited/messages', { key: sk, user: 'rl', body: { body: 1 } });
      const get = () => api(limited.url, 'GET', '/v1/threads/limited/messages', { key: sk, user: 'rl' });
      const writes = [await post(), await post(), await post(), await post()].map((r) => r.status);
      const reads = [await get(), await get(), await get(), await get(), await get()].map((r) => r.status);
      assert.deepEqual(writes, [201, 201, 429, 429]);
      assert.deepEqual(reads, [200, 200, 200, 429, 429]);
      const text = await scrape(limited.url);
      assert.equal(sample(text, 'progressdb_rate_limit_refusals_total', { class: 'write' }), 2);
      assert.equal(sample(text, 'progressdb_rate_limit_refusals_total', { class: 'read' }), 2);
    } finally {
      await limited.close();
    }
  });

  test('counts open SSE streams and WebSockets, and observes NOTIFY-to-delivery lag', async () => {
    const lagBefore = sample(await scrape(), 'progressdb_notify_delivery_lag_seconds_count') ?? 0;
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'live-metrics', type: 'channel' } });
    const ac = new AbortController();
    const tail = await fetch(`${t.url}/v1/threads/live-metrics/tail`, {
      headers: { authorization: `Bearer ${sk}` },
      signal: ac.signal,
    });
    assert.equal(tail.status, 200);
    const reader = tail.body!.getReader();
    let text = '';
    const readUntil = async (pattern: RegExp) => {
      while (!pattern.test(text)) {
        const { value, done } = await reader.read();
        assert.ok(!done, `stream ended before ${pattern}`);
        text += Buffer.from(value).toString('utf8');
      }
    };
    const ws = new WebSocket(`${t.url.replace('http', 'ws')}/v1/ws`, {
      headers: { authorization: `Bearer ${sk}`, 'x-user-id': 'u1' },
    });
    try {
      await new Promise<void>((resolve, reject) => (ws.once('open', () => resolve()), ws.once('error', reject)));
      await readUntil(/event: ready/);
      const text1 = await scrape();
      assert.equal(sample(text1, 'progressdb_realtime_connections', { transport: 'sse' }), 1);
      assert.equal(sample(text1, 'progressdb_realtime_connections', { transport: 'ws' }), 1);
      assert.equal(
        (await api(t.url, 'POST', '/v1/threads/live-metrics/messages', { key: sk, user: 'u1', body: { body: 'x' } }))
          .status,
        201,
      );
      await readUntil(/\nid: 2\n/);
      assert.ok(
        (sample(await scrape(), 'progressdb_notify_delivery_lag_seconds_count') ?? 0) > lagBefore,
        'the live delivery was observed',
      );
    } finally {
      ws.close();
      ac.abort();
    }
    for (let i = 0; ; i++) {
      const after = await scrape();
      if (
        sample(after, 'progressdb_realtime_connections', { transport: 'sse' }) === 0 &&
        sample(after, 'progressdb_realtime_connections', { transport: 'ws' }) === 0
      )
        break;
      assert.ok(i < 100, 'the gauges went back to 0 after the clients left');
      await new Promise((r) => setTimeout(r, 20));
    }
  });

  test('two app instances in one process keep separate registries', async () => {
    const other = await startInstance(t.databaseUrl);
    try {
      assert.notEqual(other.app.metrics.registry, t.app.metrics.registry);
      const route = '/v1/threads/:thread_id';
      const mine =
        sample(await scrape(), 'progressdb_http_request_duration_seconds_count', {
          method: 'GET',
          route,
          status: '404',
        }) ?? 0;
      assert.equal((await api(other.url, 'GET', '/v1/threads/elsewhere', { key: sk })).status, 404);
      assert.equal(
        sample(await scrape(other.url), 'progressdb_http_request_duration_seconds_count', {
          method: 'GET',
          route,
          status: '404',
        }),
        1,
      );
      assert.equal(
        sample(await scrape(), 'progressdb_http_request_duration_seconds_count', {
          method: 'GET',
          route,
          status: '404',
        }) ?? 0,
        mine,
      );
    } finally {
      await other.close();
    }
  });

  test('METRICS_TOKEN puts the endpoint behind a bearer token', async () => {
    const token = 'metrics-token-0123456789abcdef';
    const guarded = await startInstance(t.databaseUrl, { METRICS_TOKEN: token });
    try {
      const anonymous = await api(guarded.url, 'GET', '/metrics');
      assert.equal(anonymous.status, 401);
      assert.match(anonymous.headers.get('content-type') ?? '', /application\/problem\+json/);
      assert.equal((await api(guarded.url, 'GET', '/metrics', { key: 'wrong-token-0123456789abcdef' })).status, 401);
      const ok = await api(guarded.url, 'GET', '/metrics', { key: token });
      assert.equal(ok.status, 200);
      assert.match(ok.text, /progressdb_http_request_duration_seconds/);
    } finally {
      await guarded.close();
    }
  });
});
