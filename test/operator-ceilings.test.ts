import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { isAppError } from '../src/lib/errors';
import { api, startTestApp, type TestContext } from './helpers/app';

/** The first frame of `type` on a socket (or the refusal of its upgrade). */
function nextFrame(ws: WebSocket, type: string): Promise<any> {
  return new Promise((resolve, reject) => {
    const onMessage = (data: WebSocket.RawData) => {
      const m = JSON.parse(data.toString());
      if (m.type === type) {
        ws.off('message', onMessage);
        resolve(m);
      }
    };
    ws.on('message', onMessage);
    ws.once('error', reject);
  });
}

function refusal(url: string, headers: Record<string, string>): Promise<{ status: number; body: any; retry: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.once('open', () => reject(new Error('the upgrade was accepted')));
    ws.once('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body: JSON.parse(text), retry: String(res.headers['retry-after']) }),
      );
    });
  });
}

describe('operator ceilings on what tenants set and use', () => {
  let t: TestContext;
  before(async () => {
    t = await startTestApp({
      RATE_LIMIT_MAX_WRITE: '600',
      RATE_LIMIT_WINDOW_SECONDS: '60',
      RATE_LIMIT_KEY_FACTOR: '2',
      REALTIME_MAX_CONNECTIONS_PER_USER: '2',
    });
  });
  after(() => t.stop());

  const project = async (rateLimits: object) =>
    t.app.projects.createProject({ name: 'ceil', settings: { rate_limits: rateLimits } });

  test('a project limit above the operator ceiling is refused with 422 saying the ceiling', async () => {
    const developerId = (
      await t
        .db('developers')
        .insert({ id: 'dev-ceil', google_sub: 'g-ceil', email: 'c@example.com', name: 'C' })
        .returning('id')
    )[0].id as string;
    await assert.rejects(
      t.app.projects.createOwnedProject({
        name: 'too much',
        ownerId: developerId,
        settings: { rate_limits: { write: { limit: 601, window_seconds: 60 } } },
      }),
      (e: unknown) => isAppError(e) && e.kind === 'unprocessable' && /ceiling of 600 per 60 s/.test(e.message),
    );
    const ok = await t.app.projects.createOwnedProject({
      name: 'fine',
      ownerId: developerId,
      settings: { rate_limits: { write: { limit: 600, window_seconds: 60 } } },
    });
    // Scaled to the project's window: 600 per 60 s is 10 per second.
    await assert.rejects(
      t.app.projects.updateProject(ok.id, { settings: { rate_limits: { write: { limit: 11, window_seconds: 1 } } } }),
      (e: unknown) => isAppError(e) && e.kind === 'unprocessable' && /ceiling of 10 per 1 s/.test(e.message),
    );
    await t.app.projects.updateProject(ok.id, {
      settings: { rate_limits: { write: { limit: 10, window_seconds: 1 } } },
    });
  });

  test('a limit stored above a later-lowered ceiling is clamped when enforced', async () => {
    const creds = await project({ write: { limit: 100_000, window_seconds: 60 } });
    const r = await api(t.url, 'POST', '/v1/threads', { key: creds.keys.secret, body: { type: 'group' } });
    assert.equal(r.status, 201);
    assert.equal(r.headers.get('ratelimit-policy'), '"write";q=600;w=60');
  });

  test('a secret key acting as many users is limited in aggregate per key', async () => {
    const sk = (await project({ write: { limit: 3, window_seconds: 60 } })).keys.secret;
    const statuses: number[] = [];
    for (const user of ['a', 'a', 'a', 'b', 'b', 'b', 'c', 'd'])
      statuses.push((await api(t.url, 'POST', '/v1/threads', { key: sk, user, body: { type: 'group' } })).status);
    assert.deepEqual(statuses, [201, 201, 201, 201, 201, 201, 429, 429], 'at most 2 × 3 across all users');
  });

  test('a batch costs as many units as messages', async () => {
    const sk = (await project({ write: { limit: 5, window_seconds: 60 } })).keys.secret;
    const batch = (n: number) =>
      api(t.url, 'POST', '/v1/threads/batchy/messages/batch', {
        key: sk,
        user: 'u',
        body: { messages: Array.from({ length: n }, (_, i) => ({ body: i })) },
      });
    assert.equal((await batch(4)).status, 201);
    const over = await batch(2);
    assert.equal(over.status, 429, over.text);
    const { rows } = await t.db.raw(`select count(*)::int as n from messages where thread_id = 'batchy'`);
    assert.equal(rows[0].n, 4);
  });

  test('live connections are capped per user: the next SSE request or WebSocket upgrade is a 429 problem', async () => {
    const creds = await project({});
    const sk = creds.keys.secret;
    assert.equal(
      (await api(t.url, 'POST', '/v1/threads/live/messages', { key: sk, user: 'lu', body: { body: 1 } })).status,
      201,
    );
    const headers = { authorization: `Bearer ${sk}`, 'x-user-id': 'lu' };
    const controller = new AbortController();
    const first = await fetch(`${t.url}/v1/threads/live/tail`, { headers, signal: controller.signal });
    assert.equal(first.status, 200);
    const ws = new WebSocket(`${t.url.replace('http', 'ws')}/v1/ws`, { headers });
    await nextFrame(ws, 'welcome');
    try {
      const sse = await fetch(`${t.url}/v1/threads/live/tail`, { headers });
      assert.equal(sse.status, 429);
      assert.match(sse.headers.get('content-type') ?? '', /application\/problem\+json/);
      assert.match(((await sse.json()) as { detail: string }).detail, /live connections/);
      const up = await refusal(`${t.url.replace('http', 'ws')}/v1/ws`, headers);
      assert.equal(up.status, 429);
      assert.match(up.body.detail, /at most 2/);
      assert.ok(Number(up.retry) >= 1);
      const other = await fetch(`${t.url}/v1/threads/live/tail`, {
        headers: { ...headers, 'x-user-id': 'someone-else' },
      });
      assert.notEqual(other.status, 429, 'another user is not affected');
      await other.body?.cancel();
    } finally {
      controller.abort();
      ws.close();
    }
    // Closing frees the slots.
    let again = 0;
    for (let i = 0; i < 30 && again !== 200; i++) {
      const r = await fetch(`${t.url}/v1/threads/live/tail`, { headers });
      again = r.status;
      await r.body?.cancel();
      if (again !== 200) await new Promise((res) => setTimeout(res, 100));
    }
    assert.equal(again, 200);
  });

  test("WebSocket actions spend from the project's buckets like REST", async () => {
    const creds = await project({ read: { limit: 3, window_seconds: 60 } });
    const sk = creds.keys.secret;
    for (const id of ['w1', 'w2', 'w3'])
      assert.equal(
        (await api(t.url, 'POST', `/v1/threads/${id}/messages`, { key: sk, user: 'wu', body: { body: 1 } })).status,
        201,
      );
    const ws = new WebSocket(`${t.url.replace('http', 'ws')}/v1/ws`, {
      headers: { authorization: `Bearer ${sk}`, 'x-user-id': 'wu' },
    });
    await nextFrame(ws, 'welcome'); // the upgrade spent one read
    try {
      ws.send(JSON.stringify({ type: 'subscribe', thread_id: 'w1', id: 's1' }));
      assert.equal((await nextFrame(ws, 'subscribed')).id, 's1');
      ws.send(JSON.stringify({ type: 'subscribe', thread_id: 'w2', id: 's2' }));
      assert.equal((await nextFrame(ws, 'subscribed')).id, 's2');
      ws.send(JSON.stringify({ type: 'subscribe', thread_id: 'w3', id: 's3' }));
      const err = await nextFrame(ws, 'error');
      assert.equal(err.id, 's3');
      assert.equal(err.code, 'rate_limited');
    } finally {
      ws.close();
    }
  });
});
