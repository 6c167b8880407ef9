import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import {
  NetworkError,
  ProgressDBError,
  createBackendClient,
  createFrontendClient,
  type Tail,
  type ThreadEvent,
  type WebSocketConstructor,
} from '../sdk/src/index';
import { createTestDatabase } from './helpers/db';
import { startDroppingProxy, startTcpProxy } from './helpers/faulty-proxies';
import { sleep } from './helpers/load';
import { runCli, spawnReplica, type Replica } from './helpers/processes';

const WS = WebSocket as unknown as WebSocketConstructor;
/** Every client a test made, closed after the suite even when a test failed half-way. */
const open: Array<{ close(): void }> = [];
const backendClient = (o: Parameters<typeof createBackendClient>[0]) => {
  const c = createBackendClient(o);
  open.push(c);
  return c;
};
const frontendClient = (o: Parameters<typeof createFrontendClient>[0]) => {
  const c = createFrontendClient(o);
  open.push(c);
  return c;
};

interface Creds {
  signing_secret: string;
  keys: { secret: string; publishable: string };
}

/** Resolves once `check` holds (polled), or fails with `what` after `ms`. */
async function until(check: () => boolean, what: string, ms = 20_000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Iterates a tail in the background: every event, the message.created ones, and resume reports. */
function collect(tail: Tail) {
  const events: ThreadEvent[] = [];
  const messages: ThreadEvent[] = [];
  const resumed: Array<{ recovered: boolean; reconnects: number }> = [];
  const done = (async () => {
    for await (const e of tail) {
      events.push(e);
      if (e.type === 'message.created') messages.push(e);
    }
  })();
  tail.on('resumed', (r) => resumed.push(r));
  return { events, messages, resumed, done };
}

describe('SDK (@progressdb/client) against two real replicas', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let a: Replica;
  let b: Replica;
  let creds: Creds;

  before(async () => {
    database = await createTestDatabase();
    creds = await runCli<Creds>(['project', 'create', '--name', 'sdk', '--json'], { DATABASE_URL: database.url });
    // SSE pings every second, so a client can tell a silent stream from a quiet one.
    // Rate limits off: 10,000 messages in batches would spend a project's default write limit three times over.
    const env = {
      DATABASE_URL: database.url,
      REALTIME_HEARTBEAT_MS: '1000',
      REALTIME_PRESENCE_GRACE_MS: '500',
      RATE_LIMIT_ENABLED: 'false',
    };
    [a, b] = await Promise.all([spawnReplica('A', env), spawnReplica('B', env)]);
  });
  after(async () => {
    for (const c of open) c.close();
    await a?.kill9();
    await b?.stop();
    await database?.drop();
  });

  test('signUser is the same computed locally and by /v1/_sign; a frontend client acts as the signed user', async () => {
    const local = backendClient({ baseUrl: a.url, secretKey: creds.keys.secret, signingSecret: creds.signing_secret });
    const remote = backendClient({ baseUrl: b.url, secretKey: creds.keys.secret });
    const signature = await local.signUser('ada');
    assert.match(signature, /^[0-9a-f]{64}$/);
    assert.equal(await remote.signUser('ada'), signature);
    assert.equal(await local.signUser('ada', { remote: true }), signature);

    const ada = frontendClient({ baseUrl: b.url, publishableKey: creds.keys.publishable, userId: 'ada', signature });
    const thread = await ada.threads.create({ id: 'sdk-front', type: 'group', title: 'Front' });
    assert.equal(thread.created_by, 'ada');
    const m = await ada.messages.send('sdk-front', { body: { text: 'hi' } });
    assert.equal(m.author, 'ada');
    const edited = await ada.messages.edit('sdk-front', m.id, { text: 'hi!' });
    assert.equal(edited.version, 2);
    assert.equal((await ada.messages.react('sdk-front', m.id, 'thumbsup')).reactions.thumbsup, 1);
    assert.deepEqual(
      (await ada.messages.versions('sdk-front', m.id)).map((v) => v.body),
      [{ text: 'hi' }, { text: 'hi!' }],
    );
    const [listed] = (await ada.threads.list()).data;
    assert.equal(listed.id, 'sdk-front');
    await ada.members.set('sdk-front', 'bob');
    const bob = local.asUser('bob');
    assert.equal((await bob.reads.unread()).total, 1);
    const mark = await bob.reads.mark('sdk-front', edited.seq);
    assert.equal(mark.unread, 0);

    // A client with only a realtime token tails as its user, over WebSocket and over SSE.
    const { token } = await bob.realtimeToken();
    for (const WebSocketImpl of [WS, null]) {
      const viaToken = frontendClient({ baseUrl: a.url, realtimeToken: token, WebSocket: WebSocketImpl });
      const created: string[] = [];
      for await (const e of viaToken.tail('sdk-front', { afterSeq: 0 })) {
        if (e.type === 'message.created') created.push(e.message_id!);
        if (e.seq >= edited.seq) break;
      }
      assert.deepEqual(created, [m.id]);
      viaToken.close();
    }

    const forged = frontendClient({
      baseUrl: a.url,
      publishableKey: creds.keys.publishable,
      userId: 'mallory',
      signature,
      retry: { retries: 0 },
    });
    await assert.rejects(forged.threads.list(), (e: unknown) => e instanceof ProgressDBError && e.status === 401);
  });

  test('error answers are typed problem+json errors with status, type, detail and request id', async () => {
    const client = backendClient({ baseUrl: a.url, secretKey: creds.keys.secret });
    const err = await client.messages.get('no-such-thread', 'nope').then(
      () => assert.fail('expected a 404'),
      (e: unknown) => e as ProgressDBError,
    );
    assert.ok(err instanceof ProgressDBError);
    assert.equal(err.status, 404);
    assert.match(err.type, /not-found|about:blank/);
    assert.ok(err.detail.length > 0);
    assert.match(err.requestId ?? '', /\S{8,}/);

    const bad = await client.threads.create({ type: 'nonsense' as 'dm' }).then(
      () => assert.fail('expected a 400'),
      (e: unknown) => e as ProgressDBError,
    );
    assert.equal(bad.status, 400);
    assert.ok(bad.errors.length > 0, 'field errors are surfaced');

    const nowhere = backendClient({
      baseUrl: 'http://127.0.0.1:9',
      secretKey: creds.keys.secret,
      retry: { retries: 1, minDelayMs: 10 },
    });
    const down = await nowhere.threads.list().then(
      () => assert.fail('expected a network error'),
      (e: unknown) => e as ProgressDBError,
    );
    assert.ok(down instanceof NetworkError);
    assert.equal(down.status, 0);
  });

  test('paginates 10,000 messages both ways, written through one replica and read through the other', async () => {
    const writer = backendClient({ baseUrl: a.url, secretKey: creds.keys.secret }).asUser('seeder');
    const reader = backendClient({ baseUrl: b.url, secretKey: creds.keys.secret });
    await writer.threads.create({ id: 'sdk-10k', type: 'channel' });
    const TOTAL = 10_000;
    for (let start = 0; start < TOTAL; start += 1000) {
      const batch = Array.from({ length: 1000 }, (_, i) => ({ id: `m${start + i}`, body: { n: start + i } }));
      const stored = await writer.messages.sendBatch('sdk-10k', batch);
      assert.equal(stored.length, 1000);
    }
    const backward: number[] = [];
    for await (const m of reader.messages.iterate('sdk-10k', { direction: 'backward' }))
      backward.push((m.body as { n: number }).n);
    assert.equal(backward.length, TOTAL);
    assert.deepEqual(
      backward,
      Array.from({ length: TOTAL }, (_, i) => TOTAL - 1 - i),
    );

    const forward: number[] = [];
    const seqs: number[] = [];
    for await (const m of reader.messages.iterate('sdk-10k', { direction: 'forward', pageSize: 137 })) {
      forward.push((m.body as { n: number }).n);
      seqs.push(m.seq);
    }
    assert.deepEqual(
      forward,
      Array.from({ length: TOTAL }, (_, i) => i),
    );
    assert.ok(
      seqs.every((s, i) => i === 0 || s > seqs[i - 1]),
      'ascending seqs',
    );

    // A bounded window, both ways: after/before a seq.
    const mid = seqs[5000];
    let count = 0;
    for await (const m of reader.messages.iterate('sdk-10k', { direction: 'backward', afterSeq: mid })) {
      assert.ok(m.seq > mid);
      count++;
    }
    assert.equal(count, TOTAL - 5001);
    let events = 0;
    for await (const e of reader.events.iterate('sdk-10k', { afterSeq: seqs[TOTAL - 10] })) {
      assert.equal(e.type, 'message.created');
      events++;
    }
    assert.equal(events, 9);
  });

  test('a response lost after commit is retried with the same Idempotency-Key: one message, the first result', async () => {
    const proxy = await startDroppingProxy(b.url);
    try {
      const client = backendClient({
        baseUrl: proxy.url,
        secretKey: creds.keys.secret,
        retry: { retries: 3, minDelayMs: 20 },
      });
      await client.threads.create({ id: 'sdk-idem', type: 'channel' });
      proxy.dropNextResponse((method, path) => method === 'POST' && path === '/v1/threads/sdk-idem/messages');
      const m = await client
        .asUser('carol')
        .messages.send('sdk-idem', { body: { text: 'exactly once' } }, { via: 'rest' });
      const posts = proxy.seen.filter((s) => s.startsWith('POST /v1/threads/sdk-idem/messages '));
      assert.equal(posts.length, 2, 'the lost answer was retried once');
      const keys = posts.map((s) => s.split(' ')[2]);
      assert.ok(keys[0].length > 0 && keys[0] === keys[1], 'both attempts carried the same Idempotency-Key');

      proxy.dropNextResponse((method, path) => method === 'POST' && path.endsWith('/messages/batch'));
      const batch = await client.asUser('carol').messages.sendBatch('sdk-idem', [{ body: 1 }, { body: 2 }]);
      assert.equal(batch.length, 2);

      // 503 + Retry-After: 1 twice; the client waits as told, then gets through.
      proxy.refuseNext((method, path) => method === 'GET' && path.startsWith('/v1/threads/sdk-idem/messages'), 2, 1);
      const started = Date.now();
      const page = await client.messages.list('sdk-idem');
      assert.ok(Date.now() - started >= 1900, `waited ${Date.now() - started} ms for two Retry-After: 1`);

      assert.deepEqual(
        page.data.map((x) => x.body),
        [{ text: 'exactly once' }, 1, 2],
        'nothing was stored twice',
      );
      assert.equal(page.data[0].id, m.id, 'the retry answered with the first result');
    } finally {
      await proxy.close();
    }
  });

  test("typing, presence and read marks reach another user's tail; sends while a socket is open are stored once", async () => {
    const backend = backendClient({ baseUrl: [a.url, b.url], secretKey: creds.keys.secret, WebSocket: WS });
    await backend.threads.create({ id: 'sdk-live', type: 'group', members: ['dana', 'eve'] });
    const dana = frontendClient({
      baseUrl: a.url,
      publishableKey: creds.keys.publishable,
      userId: 'dana',
      signature: () => backend.signUser('dana'),
      WebSocket: WS,
    });
    const eve = frontendClient({
      baseUrl: b.url,
      publishableKey: creds.keys.publishable,
      userId: 'eve',
      signature: await backend.signUser('eve'),
      WebSocket: WS,
    });
    const danaTail = dana.tail('sdk-live', { afterSeq: 0 });
    const typing: string[] = [];
    const reads: Array<{ user_id: string; seq: number }> = [];
    const presence: string[][] = [];
    danaTail.on('typing', (t) => typing.push(`${t.user_id}:${t.state}`));
    danaTail.on('read', (r) => reads.push(r));
    danaTail.on('presence', (p) => presence.push(p.online));
    const seen = collect(danaTail);
    await new Promise<void>((resolve) => danaTail.on('ready', () => resolve()));

    const eveTail = eve.tail('sdk-live', { afterSeq: 0 });
    await new Promise<void>((resolve) => eveTail.on('ready', () => resolve()));
    await until(() => presence.some((p) => p.includes('eve')), 'eve online in dana’s tail');
    assert.equal(eveTail.typing('start'), true);
    await until(() => typing.includes('eve:start'), 'eve typing');

    const sent = await eve.messages.send('sdk-live', { body: { text: 'over the socket, or REST' } });
    await until(() => seen.events.some((e) => e.message_id === sent.id), 'dana sees eve’s message');
    await eve.reads.mark('sdk-live', sent.seq);
    await until(() => reads.some((r) => r.user_id === 'eve' && r.seq === sent.seq), 'eve’s read mark');

    const page = await backend.messages.list('sdk-live');
    assert.deepEqual(
      page.data.map((m) => m.id),
      [sent.id],
    );
    eveTail.close();
    danaTail.close();
    await seen.done;
    dana.close();
    eve.close();
  });

  test('a connection gone silent is detected by the heartbeat and the tail resumes on the other replica', async () => {
    const proxy = await startTcpProxy(a.url);
    try {
      const writer = backendClient({ baseUrl: b.url, secretKey: creds.keys.secret }).asUser('writer');
      await writer.threads.create({ id: 'sdk-silent', type: 'channel' });
      const opts = { secretKey: creds.keys.secret, baseUrl: [proxy.url, b.url] };
      const wsClient = backendClient({ ...opts, WebSocket: WS, heartbeatIntervalMs: 300, heartbeatTimeoutMs: 1500 });
      const sseClient = backendClient({ ...opts, heartbeatTimeoutMs: 2500 });
      const tails = [wsClient.tail('sdk-silent', { afterSeq: 0 }), sseClient.tail('sdk-silent', { afterSeq: 0 })];
      const seen = tails.map(collect);
      await writer.messages.send('sdk-silent', { id: 's0', body: 0 });
      await until(() => seen.every((s) => s.messages.length === 1), 'both tails live through the proxy');
      assert.equal(proxy.connections, 2);

      proxy.silence();
      for (let i = 1; i <= 5; i++) await writer.messages.send('sdk-silent', { id: `s${i}`, body: i });
      await until(() => seen.every((s) => s.messages.length === 6), 'both tails resumed after the silence', 15_000);
      for (const s of seen) {
        assert.deepEqual(
          s.messages.map((e) => e.message_id),
          ['s0', 's1', 's2', 's3', 's4', 's5'],
        );
        assert.ok(s.resumed.length >= 1 && s.resumed.every((r) => r.recovered));
      }
      tails.forEach((t) => t.close());
      await Promise.all(seen.map((s) => s.done));
      wsClient.close();
    } finally {
      await proxy.close();
    }
  });

  test('a tail survives SIGKILL of the replica it is connected to: every message once, in order, recovered', async () => {
    const writer = backendClient({ baseUrl: b.url, secretKey: creds.keys.secret }).asUser('writer');
    await writer.threads.create({ id: 'sdk-kill', type: 'channel' });
    const opts = { secretKey: creds.keys.secret, baseUrl: [a.url, b.url] };
    const wsClient = backendClient({ ...opts, WebSocket: WS });
    const sseClient = backendClient(opts);
    const tails = [wsClient.tail('sdk-kill', { afterSeq: 0 }), sseClient.tail('sdk-kill', { afterSeq: 0 })];
    assert.equal(tails[0].transport, null);
    const seen = tails.map(collect);
    await Promise.all(tails.map((t) => new Promise<void>((resolve) => t.on('ready', () => resolve()))));
    assert.deepEqual(
      tails.map((t) => t.transport),
      ['websocket', 'sse'],
    );

    const TOTAL = 150;
    const ids: string[] = [];
    const writing = (async () => {
      for (let i = 0; i < TOTAL; i++) {
        const id = `k${i}`;
        await writer.messages.send('sdk-kill', { id, body: { i } });
        ids.push(id);
        if (i === 50) await a.kill9();
      }
    })();
    await writing;
    assert.equal(a.alive, false);
    await until(() => seen.every((s) => s.messages.length >= TOTAL), 'every message on both tails', 30_000);
    await sleep(300);
    for (const [n, s] of seen.entries()) {
      const label = n === 0 ? 'websocket' : 'sse';
      assert.deepEqual(
        s.messages.map((e) => e.message_id),
        ids,
        `${label}: every message exactly once, in order`,
      );
      assert.ok(
        s.events.every((e, i) => e.seq === i + 1),
        `${label}: every event of the log from seq 1, gapless`,
      );
      assert.ok(s.resumed.length >= 1, `${label}: resumed after the kill`);
      assert.ok(
        s.resumed.every((r) => r.recovered),
        `${label}: recovered: true`,
      );
      assert.equal(tails[n].recovered, true);
    }
    tails.forEach((t) => t.close());
    await Promise.all(seen.map((s) => s.done));
    wsClient.close();
  });
});
