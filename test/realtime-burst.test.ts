import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { api, startTestApp, type TestContext } from './helpers/app';
import { as, openSse, openWs, range, seqs } from './realtime-clients';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const MAX_BUFFERED = 256 * 1024;
const GRACE_MS = 8_000;
// 1,000 messages of 4 KB: about 16 times the buffer limit in one batch, more than the kernel's socket buffers take.
const burst = (from: number) => ({
  messages: Array.from({ length: 1000 }, (_, i) => ({ body: { text: 'b'.repeat(4096), n: from + i } })),
});

/** An SSE request on a raw socket that stops reading once the stream is ready. */
async function stalledSse(url: string, path: string, key: string): Promise<{ socket: Socket; head: () => string }> {
  const { port } = new URL(url);
  const socket = connect(Number(port), '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  let head = '';
  socket.on('data', (d) => (head += d.toString()));
  socket.write(
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${key}\r\nAccept: text/event-stream\r\n\r\n`,
  );
  while (!head.includes('event: ready')) await sleep(20);
  socket.pause();
  return { socket, head: () => head };
}

describe('realtime: one large batch does not cut off a subscriber that is reading', () => {
  let t: TestContext;
  let sk: string;
  before(async () => {
    t = await startTestApp({
      RATE_LIMIT_ENABLED: 'false',
      MAX_REQUEST_BYTES: String(16 * 1024 * 1024),
      REALTIME_MAX_BUFFERED_BYTES: String(MAX_BUFFERED),
      REALTIME_SLOW_CONSUMER_MS: String(GRACE_MS),
    });
    sk = (await t.project('burst')).keys.secret;
    assert.equal(
      (await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'burst', type: 'channel' } })).status,
      201,
    );
  });
  after(() => t.stop());

  test('an SSE and a WebSocket subscriber both receive all 1,000 messages of one batch, and stay connected', async () => {
    const sse = await openSse(`${t.url}/v1/threads/burst/tail`, as(sk));
    assert.equal(sse.status, 200);
    await sse.waitFor(() => sse.messages.find((m) => m.event === 'ready'), 'SSE ready');
    const ws = await openWs(`${t.url.replace('http', 'ws')}/v1/ws`, as(sk));
    ws.send({ type: 'subscribe', thread_id: 'burst' });
    await ws.waitFor((m) => m.type === 'ready', 'WebSocket ready');

    const r = await api(t.url, 'POST', '/v1/threads/burst/messages/batch', { key: sk, user: 'w', body: burst(0) });
    assert.equal(r.status, 201, r.text);
    const first = r.body.data[0].seq as number;
    const expected = range(first, first + 999);
    assert.deepEqual(seqs(await sse.waitForEvents(1000, 60_000)), expected);
    assert.deepEqual(seqs(await ws.waitForEvents('burst', 1000, 60_000)), expected);

    // Past the grace period both are still there, and get what comes next.
    await sleep(GRACE_MS + 1_000);
    assert.equal(sse.ended, false, 'the SSE stream was not ended');
    assert.equal(
      sse.messages.find((m) => m.event === 'reconnect'),
      undefined,
    );
    assert.equal(t.app.realtime.stats().slow_consumer_closes, 0);
    const next = await api(t.url, 'POST', '/v1/threads/burst/messages', {
      key: sk,
      user: 'w',
      body: { body: 'after' },
    });
    assert.equal(next.status, 201);
    assert.equal((await sse.waitForEvents(1001)).at(-1).seq, next.body.seq);
    assert.equal((await ws.waitForEvents('burst', 1001)).at(-1).seq, next.body.seq);
    sse.close();
    ws.close();
  });

  test('a subscriber that stops reading is still cut off once its backlog persists', async () => {
    const stalled = await stalledSse(t.url, '/v1/threads/burst/tail', sk);
    const ws = await openWs(`${t.url.replace('http', 'ws')}/v1/ws`, as(sk));
    ws.send({ type: 'subscribe', thread_id: 'burst' });
    await ws.waitFor((m) => m.type === 'ready', 'WebSocket ready');
    const wsSocket = (ws.ws as unknown as { _socket: Socket })._socket;
    wsSocket.pause();
    const closesBefore = t.app.realtime.stats().slow_consumer_closes;
    const streamsBefore = t.app.realtime.stats().sse_streams;
    assert.equal(streamsBefore, 1);

    const r = await api(t.url, 'POST', '/v1/threads/burst/messages/batch', { key: sk, user: 'w', body: burst(1000) });
    assert.equal(r.status, 201, r.text);
    const deadline = Date.now() + GRACE_MS + 20_000;
    while (
      (t.app.realtime.stats().sse_streams > 0 || t.app.realtime.stats().slow_consumer_closes === closesBefore) &&
      Date.now() < deadline
    )
      await sleep(100);
    assert.equal(t.app.realtime.stats().sse_streams, 0, 'the stalled SSE stream was ended');
    assert.equal(t.app.realtime.stats().slow_consumer_closes, closesBefore + 1, 'the stalled WebSocket was closed');

    stalled.socket.resume();
    await new Promise((resolve) => stalled.socket.once('close', resolve));
    assert.match(stalled.head(), /event: reconnect\ndata: \{"reason":"slow_consumer"\}/);
    wsSocket.resume();
    const { code } = await ws.closed;
    assert.ok(code === 4008 || code === 1006, `closed with ${code}`);
  });
});
