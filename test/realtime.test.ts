import assert from 'node:assert/strict';
import { connect } from 'node:net';
import pg from 'pg';
import { after, before, describe, test } from 'node:test';
import { CHANNELS } from '../src/lib/channels';
import { signUserId } from '../src/modules/keys/key-auth-service';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startInstance, startTestApp, type TestContext, type TestInstance } from './helpers/app';
import { as, openSse, openWs, range, seqs } from './realtime-clients';

const ENV = { RATE_LIMIT_ENABLED: 'false', REALTIME_PRESENCE_GRACE_MS: '300', REALTIME_HEARTBEAT_MS: '2000' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const wsUrl = (base: string, query = '') => `${base.replace(/^http/, 'ws')}/v1/ws${query}`;

describe('realtime: live tail over SSE and WebSocket', () => {
  let t: TestContext;
  let t2: TestInstance;
  let creds: ProjectCredentials;
  let sk: string;
  /** Publishable key + signed user id: an end user, with read/write policies applied. */
  let user: (id: string) => Record<string, string>;

  before(async () => {
    t = await startTestApp(ENV);
    t2 = await startInstance(t.databaseUrl, ENV);
    creds = await t.project();
    sk = creds.keys.secret;
    user = (id) => ({
      authorization: `Bearer ${creds.keys.publishable}`,
      'x-user-id': id,
      'x-user-signature': signUserId(creds.signing_secret, id),
    });
  });
  after(async () => {
    await t2.close();
    await t.stop();
  });

  async function post(base: string, threadId: string, n: number, prefix: string) {
    const acked: number[] = [];
    for (let i = 0; i < n; i++) {
      const r = await api(base, 'POST', `/v1/threads/${threadId}/messages`, {
        key: sk,
        user: 'writer',
        body: { id: `${prefix}${i}`, body: { text: `${prefix} ${i}` } },
      });
      assert.equal(r.status, 201, r.text);
      acked.push(r.body.seq);
    }
    return acked;
  }

  test('SSE replays stored events, sends ready, streams live ones; Last-Event-ID and after_seq resume at N+1', async () => {
    assert.equal(
      (await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'sse-1', type: 'channel' } })).status,
      201,
    );
    await post(t.url, 'sse-1', 5, 'a'); // seqs 2..6
    const tail = await openSse(`${t.url}/v1/threads/sse-1/tail?after_seq=0`, as(sk));
    assert.equal(tail.status, 200);
    const ready = await tail.waitFor(() => tail.messages.find((m) => m.event === 'ready'), 'ready');
    assert.deepEqual(JSON.parse(ready.data), { seq: 6 });
    assert.deepEqual(seqs(tail.events()), range(1, 6));
    assert.deepEqual(
      tail.messages.filter((m) => m.event === undefined).map((m) => m.id),
      range(1, 6).map(String),
    );
    assert.equal(tail.events()[1].type, 'message.created');

    await post(t2.url, 'sse-1', 3, 'b'); // through the other replica: seqs 7..9
    assert.deepEqual(seqs(await tail.waitForEvents(9)), range(1, 9));
    tail.close();

    await post(t.url, 'sse-1', 2, 'c'); // 10, 11 while nobody listens
    const resumed = await openSse(`${t2.url}/v1/threads/sse-1/tail?after_seq=1`, { ...as(sk), 'last-event-id': '4' });
    await resumed.waitFor(() => resumed.messages.find((m) => m.event === 'ready'), 'ready');
    await post(t.url, 'sse-1', 1, 'd'); // 12, live
    assert.deepEqual(seqs(await resumed.waitForEvents(8)), range(5, 12));
    await sleep(200);
    assert.deepEqual(seqs(resumed.events()), range(5, 12), 'nothing twice at the seam');
    resumed.close();

    const bad = await api(t.url, 'GET', '/v1/threads/sse-1/tail', { key: sk, headers: { 'last-event-id': 'abc' } });
    assert.equal(bad.status, 400);
    assert.match(bad.headers.get('content-type') ?? '', /problem\+json/);
  });

  test('a subscriber on instance 1 gets 1,000 messages appended concurrently through instance 2, in order, exactly once', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'fan-in', type: 'channel' } });
    const sse = await openSse(`${t.url}/v1/threads/fan-in/tail`, as(sk));
    await sse.waitFor(() => sse.messages.find((m) => m.event === 'ready'), 'ready');
    const ws = await openWs(wsUrl(t.url), as(sk));
    ws.send({ type: 'subscribe', thread_id: 'fan-in', id: 's1' });
    await ws.waitFor((m) => m.type === 'ready' && m.thread_id === 'fan-in', 'ws ready');

    const acked = new Map<string, number>();
    await Promise.all(
      Array.from({ length: 20 }, (_, w) =>
        (async () => {
          for (let i = 0; i < 50; i++) {
            const id = `w${w}-${i}`;
            const r = await api(t2.url, 'POST', '/v1/threads/fan-in/messages', {
              key: sk,
              user: `u${w}`,
              body: { id, body: { w, i } },
            });
            assert.equal(r.status, 201, r.text);
            acked.set(id, r.body.seq);
          }
        })(),
      ),
    );
    const viaSse = await sse.waitForEvents(1000, 60_000);
    const viaWs = await ws.waitForEvents('fan-in', 1000, 60_000);
    await sleep(300);
    for (const events of [sse.events(), ws.eventsOf('fan-in')]) {
      assert.equal(events.length, 1000);
      assert.deepEqual(seqs(events), range(2, 1001));
      assert.deepEqual(new Map(events.map((e: any) => [e.message_id, e.seq])), acked);
    }
    assert.equal(viaSse.length, 1000);
    assert.equal(viaWs.length, 1000);
    sse.close();
    ws.close();
  });

  test('events a NOTIFY carries reach subscribers exactly as the log reads them back (appends, an edit, a reaction)', async () => {
    // Hear the replicas' own channel, to see that the events did ride on the NOTIFY.
    const listen = new pg.Client({ connectionString: t.databaseUrl });
    await listen.connect();
    const payloads: string[] = [];
    listen.on('notification', (n) => payloads.push(n.payload ?? ''));
    await listen.query(`listen ${CHANNELS.events}`);
    try {
      await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'carried', type: 'channel' } });
      const ws = await openWs(wsUrl(t.url), as(sk));
      ws.send({ type: 'subscribe', thread_id: 'carried', id: 's1' });
      await ws.waitFor((m) => m.type === 'ready' && m.thread_id === 'carried', 'ws ready');
      const sse = await openSse(`${t.url}/v1/threads/carried/tail`, as(sk));
      await sse.waitFor(() => sse.messages.find((m) => m.event === 'ready'), 'ready');

      await post(t2.url, 'carried', 5, 'c');
      const edit = await api(t2.url, 'PATCH', '/v1/threads/carried/messages/c1', {
        key: sk,
        body: { body: { text: 'edited', nested: { unicode: 'é ✓', n: 1.5 } } },
      });
      assert.equal(edit.status, 200, edit.text);
      const react = await api(t2.url, 'PUT', '/v1/threads/carried/messages/c2/reactions/thumbs_up', {
        key: sk,
        user: 'reactor',
      });
      assert.equal(react.status, 200, react.text);

      const logged = await api(t.url, 'GET', '/v1/threads/carried/events?after_seq=1', { key: sk });
      assert.equal(logged.status, 200, logged.text);
      assert.equal(logged.body.data.length, 7);
      assert.deepEqual(await ws.waitForEvents('carried', 7), logged.body.data);
      assert.deepEqual(await sse.waitForEvents(7), logged.body.data);
      const carried = payloads.flatMap((p) => (JSON.parse(p) as { e?: unknown[][] }).e ?? []);
      assert.ok(
        carried.some((e) => e[1] === 'carried' && e[3] === 'message.created'),
        'an append group carried its event',
      );
      assert.ok(
        carried.some((e) => e[1] === 'carried' && e[3] === 'message.edited'),
        'an edit group carried its event',
      );
      ws.close();
      sse.close();
    } finally {
      await listen.end();
    }
  });

  test('WebSocket: several threads on one socket, each resuming exactly after its after_seq; unsubscribe stops delivery', async () => {
    for (const id of ['ws-a', 'ws-b'])
      await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id, type: 'channel' } });
    await post(t.url, 'ws-a', 4, 'a'); // 2..5
    await post(t.url, 'ws-b', 4, 'b'); // 2..5
    const ws = await openWs(wsUrl(t.url), as(sk));
    assert.equal(ws.messages[0]?.type ?? (await ws.waitFor((m) => m.type === 'welcome', 'welcome')).type, 'welcome');
    ws.send({ type: 'subscribe', thread_id: 'ws-a', after_seq: 0, id: 'a' });
    ws.send({ type: 'subscribe', thread_id: 'ws-b', after_seq: 3, id: 'b' });
    const subscribed = await ws.waitFor((m) => m.type === 'subscribed' && m.id === 'b', 'subscribed b');
    assert.deepEqual([subscribed.thread_id, subscribed.after_seq, subscribed.last_seq], ['ws-b', 3, 5]);
    await ws.waitFor((m) => m.type === 'ready' && m.thread_id === 'ws-a', 'ready a');
    await ws.waitFor((m) => m.type === 'ready' && m.thread_id === 'ws-b', 'ready b');
    assert.deepEqual(seqs(ws.eventsOf('ws-a')), range(1, 5));
    assert.deepEqual(seqs(ws.eventsOf('ws-b')), [4, 5]);

    await post(t2.url, 'ws-b', 2, 'b2'); // 6, 7
    assert.deepEqual(seqs(await ws.waitForEvents('ws-b', 4)), [4, 5, 6, 7]);
    ws.close();
    await ws.closed;

    await post(t2.url, 'ws-a', 3, 'a2'); // 6..8 while away
    const again = await openWs(wsUrl(t2.url), as(sk));
    again.send({ type: 'subscribe', thread_id: 'ws-a', after_seq: 5 });
    again.send({ type: 'subscribe', thread_id: 'ws-b', after_seq: 7 });
    await again.waitFor((m) => m.type === 'ready' && m.thread_id === 'ws-a', 'ready a');
    assert.deepEqual(seqs(again.eventsOf('ws-a')), [6, 7, 8]);

    again.send({ type: 'unsubscribe', thread_id: 'ws-b', id: 'u' });
    await again.waitFor((m) => m.type === 'unsubscribed' && m.id === 'u', 'unsubscribed');
    await post(t.url, 'ws-b', 1, 'b3');
    await post(t.url, 'ws-a', 1, 'a3'); // 9
    await again.waitForEvents('ws-a', 4);
    await sleep(200);
    assert.deepEqual(seqs(again.eventsOf('ws-b')), [], 'no events after unsubscribe');

    again.send({ type: 'subscribe', thread_id: 'nope' });
    again.send('not json');
    again.send({ type: 'subscribe' });
    const notFound = await again.waitFor((m) => m.type === 'error' && m.thread_id === 'nope', 'not found error');
    assert.equal(notFound.code, 'not_found');
    await again.waitFor((m) => m.type === 'error' && /thread_id/.test(m.message), 'validation error');
    again.send({ type: 'ping', id: 'p' });
    await again.waitFor((m) => m.type === 'pong' && m.id === 'p', 'pong');
    // A protocol-level ping is answered with a pong carrying its payload (the gateway's, not ws's).
    const pong = new Promise<Buffer>((r) => again.ws.once('pong', r));
    again.ws.ping('are you there');
    assert.equal((await pong).toString(), 'are you there');
    // A flood is cut to the socket's message budget instead of reaching the database.
    for (let i = 0; i < 400; i++) again.send({ type: 'ping', id: `f${i}` });
    await again.waitFor((m) => m.type === 'error' && m.code === 'rate_limited', 'rate limited');
    const pongs = again.messages.filter((m) => m.type === 'pong' && String(m.id).startsWith('f')).length;
    assert.ok(pongs >= 190 && pongs < 400, `${pongs} of 400 flooded pings answered`);
    again.close();
  });

  test('typing, presence and read marks from instance 2 reach a socket on instance 1', async () => {
    await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      body: { id: 'room', type: 'group', members: ['alice', 'bob'] },
    });
    const alice = await openWs(wsUrl(t.url), user('alice'));
    alice.send({ type: 'subscribe', thread_id: 'room' });
    await alice.waitFor((m) => m.type === 'ready', 'alice ready');
    await alice.waitFor((m) => m.type === 'presence' && m.user_id === 'alice' && m.state === 'online', 'own presence');

    const bob = await openWs(wsUrl(t2.url), user('bob'));
    bob.send({ type: 'subscribe', thread_id: 'room' });
    const bobSubscribed = await bob.waitFor((m) => m.type === 'subscribed', 'bob subscribed');
    assert.deepEqual(bobSubscribed.presence, ['alice'], 'instance 2 knows alice is online on instance 1');
    await alice.waitFor((m) => m.type === 'presence' && m.user_id === 'bob' && m.state === 'online', 'bob online');

    await bob.waitFor((m) => m.type === 'ready', 'bob ready');
    bob.send({ type: 'typing', thread_id: 'room' });
    const typing = await alice.waitFor((m) => m.type === 'typing', 'typing');
    assert.deepEqual(typing, { type: 'typing', thread_id: 'room', user_id: 'bob', state: 'start' });

    const msg = await api(t2.url, 'POST', '/v1/threads/room/messages', {
      headers: user('bob'),
      body: { body: { text: 'hi' } },
    });
    assert.equal(msg.status, 201, msg.text);
    bob.send({ type: 'read', thread_id: 'room', seq: msg.body.seq, id: 'r' });
    const ok = await bob.waitFor((m) => m.type === 'read.ok', 'read ok');
    assert.equal(ok.last_read_seq, msg.body.seq);
    const read = await alice.waitFor((m) => m.type === 'read', 'read mark');
    assert.deepEqual(read, { type: 'read', thread_id: 'room', user_id: 'bob', seq: msg.body.seq });
    assert.equal(alice.messages.filter((m) => m.type === 'typing' && m.user_id === 'alice').length, 0);

    bob.close();
    const offline = await alice.waitFor(
      (m) => m.type === 'presence' && m.user_id === 'bob' && m.state === 'offline',
      'bob offline after grace',
    );
    assert.ok(offline);
    alice.close();
  });

  test('a non-member cannot subscribe to a members thread; a removed member stops receiving it', async () => {
    await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      body: { id: 'private', type: 'group', members: ['alice', 'dave'] },
    });
    const refused = await api(t.url, 'GET', '/v1/threads/private/tail', { headers: user('mallory') });
    assert.equal(refused.status, 403);
    assert.match(refused.headers.get('content-type') ?? '', /problem\+json/);
    assert.equal((await api(t.url, 'GET', '/v1/threads/missing/tail', { headers: user('mallory') })).status, 404);
    const mallory = await openWs(wsUrl(t2.url), user('mallory'));
    mallory.send({ type: 'subscribe', thread_id: 'private', id: 'm' });
    assert.equal((await mallory.waitFor((m) => m.type === 'error' && m.id === 'm', 'forbidden')).code, 'forbidden');
    assert.equal(mallory.eventsOf('private').length, 0);
    mallory.close();

    const daveSse = await openSse(`${t.url}/v1/threads/private/tail?after_seq=0`, user('dave'));
    await daveSse.waitFor(() => daveSse.messages.find((m) => m.event === 'ready'), 'ready');
    const daveWs = await openWs(wsUrl(t2.url), user('dave'));
    daveWs.send({ type: 'subscribe', thread_id: 'private', after_seq: 0 });
    await daveWs.waitFor((m) => m.type === 'ready', 'ws ready');

    assert.equal((await api(t.url, 'DELETE', '/v1/threads/private/members/dave', { key: sk })).status, 204);
    await api(t.url, 'POST', '/v1/threads/private/messages', {
      headers: user('alice'),
      body: { body: { text: 'secret' } },
    });
    await daveSse.waitForEnd();
    const closed = daveSse.messages.find((m) => m.event === 'closed');
    assert.deepEqual(JSON.parse(closed!.data), { reason: 'removed' });
    assert.equal(daveSse.events().at(-1).type, 'member.removed');
    assert.equal(daveSse.events().filter((e: any) => e.type === 'message.created').length, 0);

    const unsub = await daveWs.waitFor((m) => m.type === 'unsubscribed', 'ws unsubscribed');
    assert.equal(unsub.reason, 'removed');
    assert.equal(daveWs.eventsOf('private').at(-1).type, 'member.removed');
    assert.equal(daveWs.eventsOf('private').filter((e: any) => e.type === 'message.created').length, 0);
    daveWs.close();
  });

  test('WebSocket authentication: headers like REST, or a short-lived token; bad credentials are refused at upgrade', async () => {
    await assert.rejects(openWs(wsUrl(t.url)), (e: any) => e.status === 401);
    await assert.rejects(
      openWs(wsUrl(t.url), {
        authorization: `Bearer ${creds.keys.publishable}`,
        'x-user-id': 'eve',
        'x-user-signature': '0'.repeat(64),
      }),
      (e: any) => e.status === 401,
    );
    await assert.rejects(openWs(wsUrl(t.url, '?token=rt_garbage.abc')), (e: any) => e.status === 401);
    await assert.rejects(openWs(wsUrl(t.url), as(creds.keys.admin)), (e: any) => e.status === 403);

    assert.equal((await api(t.url, 'POST', '/v1/realtime/token', { key: sk })).status, 400, 'a token needs a user');
    const issued = await api(t.url, 'POST', '/v1/realtime/token', { headers: user('alice') });
    assert.equal(issued.status, 201, issued.text);
    assert.match(issued.body.token, /^rt_/);
    const ws = await openWs(wsUrl(t2.url, `?token=${encodeURIComponent(issued.body.token)}`));
    const welcome = await ws.waitFor((m) => m.type === 'welcome', 'welcome');
    assert.equal(welcome.user_id, 'alice');
    // The token acts as the user, not with a secret key's full access.
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'not-alices', type: 'group', members: ['zed'] } });
    ws.send({ type: 'subscribe', thread_id: 'not-alices', id: 'x' });
    assert.equal((await ws.waitFor((m) => m.type === 'error' && m.id === 'x', 'forbidden')).code, 'forbidden');
    ws.close();

    // The same token serves SSE for EventSource, which cannot set headers either.
    const viaToken = await openSse(
      `${t.url}/v1/threads/private/tail?after_seq=0&token=${encodeURIComponent(issued.body.token)}`,
      {},
    );
    assert.equal(viaToken.status, 200);
    await viaToken.waitFor(() => viaToken.messages.find((m) => m.event === 'ready'), 'ready');
    assert.equal(viaToken.events()[0].type, 'thread.created');
    viaToken.close();
    assert.equal(
      (await api(t.url, 'GET', `/v1/threads/not-alices/tail?token=${encodeURIComponent(issued.body.token)}`)).status,
      403,
    );
    assert.equal((await api(t.url, 'GET', '/v1/threads/private/tail?token=rt_nope.nope')).status, 401);

    const tampered = issued.body.token.slice(0, -2) + (issued.body.token.endsWith('A') ? 'BB' : 'AA');
    await assert.rejects(openWs(wsUrl(t.url, `?token=${tampered}`)), (e: any) => e.status === 401);
  });

  test("WebSocket upgrades obey the project's ip_allowlist, publishable keys' allowed_origins", async () => {
    const fenced = await t.app.projects.createProject({
      name: 'fenced',
      settings: { ip_allowlist: ['203.0.113.0/24'] },
    });
    await assert.rejects(openWs(wsUrl(t.url), as(fenced.keys.secret)), (e: any) => e.status === 403);
    const web = await t.app.projects.createProject({
      name: 'web',
      settings: { allowed_origins: ['https://app.example.com'] },
    });
    const ann = {
      authorization: `Bearer ${web.keys.publishable}`,
      'x-user-id': 'ann',
      'x-user-signature': signUserId(web.signing_secret, 'ann'),
    };
    await assert.rejects(
      openWs(wsUrl(t.url), { ...ann, origin: 'https://evil.example' }),
      (e: any) => e.status === 403,
    );
    const ok = await openWs(wsUrl(t.url), { ...ann, origin: 'https://app.example.com' });
    assert.equal((await ok.waitFor((m) => m.type === 'welcome', 'welcome')).user_id, 'ann');
    ok.close();
  });

  test('nothing is lost when the LISTEN connection drops: replicas re-read subscribed threads after reconnecting', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'relisten', type: 'channel' } });
    const sse = await openSse(`${t.url}/v1/threads/relisten/tail`, as(sk));
    await sse.waitFor(() => sse.messages.find((m) => m.event === 'ready'), 'ready');
    const dbName = new URL(t.databaseUrl).pathname.slice(1);
    // Kill every replica's LISTEN connection, then write while they reconnect: those NOTIFYs are lost.
    await t.db.raw(
      `select pg_terminate_backend(pid) from pg_stat_activity where datname = ? and application_name = 'progressdb-listener'`,
      [dbName],
    );
    const acked = await post(t2.url, 'relisten', 20, 'x');
    assert.deepEqual(seqs(await sse.waitForEvents(20)), acked);
    sse.close();
  });

  test('revoking a key ends its live streams on every replica (WebSocket 1008, SSE closed: revoked)', async () => {
    const doomed = await t.app.projects.createKey(creds.project_id, 'secret');
    const created = await api(t.url, 'POST', '/v1/threads', {
      key: doomed.key,
      body: { id: 'revoke-me', type: 'channel' },
    });
    assert.equal(created.status, 201, created.text);
    const sse = await openSse(`${t2.url}/v1/threads/revoke-me/tail`, as(doomed.key));
    await sse.waitFor(() => sse.messages.find((m) => m.event === 'ready'), 'ready');
    const ws = await openWs(wsUrl(t.url), as(doomed.key));
    ws.send({ type: 'subscribe', thread_id: 'revoke-me' });
    await ws.waitFor((m) => m.type === 'ready', 'ready');
    const bystander = await openWs(wsUrl(t.url), as(sk));
    bystander.send({ type: 'subscribe', thread_id: 'revoke-me' });
    await bystander.waitFor((m) => m.type === 'ready', 'ready');

    await t.app.projects.revokeKey(creds.project_id, doomed.id);
    const closed = await ws.closed;
    assert.deepEqual(closed, { code: 1008, reason: 'API key revoked' });
    await sse.waitForEnd();
    assert.deepEqual(JSON.parse(sse.messages.find((m) => m.event === 'closed')!.data), { reason: 'revoked' });
    bystander.send({ type: 'ping', id: 'still-here' });
    await bystander.waitFor((m) => m.type === 'pong' && m.id === 'still-here', 'other keys keep their sockets');
    bystander.close();
  });

  test('close() ends SSE streams with a reconnect hint and closes sockets with 1012', async () => {
    const t3 = await startInstance(t.databaseUrl, ENV);
    await api(t3.url, 'POST', '/v1/threads', { key: sk, body: { id: 'bye', type: 'channel' } });
    const sse = await openSse(`${t3.url}/v1/threads/bye/tail`, as(sk));
    await sse.waitFor(() => sse.messages.find((m) => m.event === 'ready'), 'ready');
    const ws = await openWs(wsUrl(t3.url), as(sk));
    ws.send({ type: 'subscribe', thread_id: 'bye' });
    await ws.waitFor((m) => m.type === 'ready', 'ready');
    // What app.close() does first (the test helper's close() cuts HTTP connections before it).
    await t3.app.realtime.close();
    assert.equal((await ws.closed).code, 1012);
    await sse.waitForEnd();
    assert.deepEqual(JSON.parse(sse.messages.find((m) => m.event === 'reconnect')!.data), { reason: 'shutdown' });
    await t3.close();
  });
});

describe('realtime: slow consumers are bounded', () => {
  let t: TestContext;
  before(async () => {
    t = await startTestApp({ RATE_LIMIT_ENABLED: 'false', REALTIME_MAX_BUFFERED_BYTES: String(64 * 1024) });
  });
  after(() => t.stop());

  test('a WebSocket that stops reading is closed with 4008 instead of growing server memory', async () => {
    const sk = (await t.project()).keys.secret;
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'firehose', type: 'channel' } });
    const ws = await openWs(wsUrl(t.url), as(sk));
    ws.send({ type: 'subscribe', thread_id: 'firehose' });
    await ws.waitFor((m) => m.type === 'ready', 'ready');
    // Stop reading: the kernel buffers fill, then the server's per-socket buffer.
    (ws.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
    const text = 'x'.repeat(60 * 1024);
    for (let b = 0; b < 12 && t.app.realtime.stats().slow_consumer_closes === 0; b++) {
      const r = await api(t.url, 'POST', '/v1/threads/firehose/messages/batch', {
        key: sk,
        user: 'w',
        body: { messages: Array.from({ length: 50 }, () => ({ body: { text } })) },
      });
      assert.equal(r.status, 201, r.text);
      await sleep(100);
    }
    const deadline = Date.now() + 10_000;
    while (t.app.realtime.stats().sockets > 0 && Date.now() < deadline) await sleep(50);
    assert.equal(t.app.realtime.stats().slow_consumer_closes, 1);
    assert.equal(t.app.realtime.stats().sockets, 0);
    (ws.ws as unknown as { _socket: { resume(): void } })._socket.resume();
    const { code } = await ws.closed;
    // The close frame queues behind the unsent data; if the peer still does not read it, the socket is cut (1006).
    assert.ok(code === 4008 || code === 1006, `closed with ${code}`);
  });

  test('an SSE client that stops reading gets its stream ended instead of an unbounded buffer', async () => {
    const sk = (await t.project('sse slow')).keys.secret;
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'sse-firehose', type: 'channel' } });
    const { port } = new URL(t.url);
    const socket = connect(Number(port), '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    let head = '';
    socket.on('data', (d) => (head += d.toString()));
    socket.write(
      `GET /v1/threads/sse-firehose/tail HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${sk}\r\nAccept: text/event-stream\r\n\r\n`,
    );
    while (!head.includes('event: ready')) await sleep(20);
    socket.pause();
    assert.equal(t.app.realtime.stats().sse_streams, 1);
    const text = 'y'.repeat(60 * 1024);
    for (let b = 0; b < 12 && t.app.realtime.stats().sse_streams > 0; b++) {
      const r = await api(t.url, 'POST', '/v1/threads/sse-firehose/messages/batch', {
        key: sk,
        user: 'w',
        body: { messages: Array.from({ length: 50 }, () => ({ body: { text } })) },
      });
      assert.equal(r.status, 201, r.text);
      await sleep(100);
    }
    assert.equal(t.app.realtime.stats().sse_streams, 0, 'the stream was ended');
    socket.resume();
    await new Promise((resolve) => socket.once('close', resolve));
    assert.match(head, /event: reconnect\ndata: \{"reason":"slow_consumer"\}/);
  });
});

describe('realtime: presence grace period', () => {
  let t: TestContext;
  let t2: TestInstance;
  before(async () => {
    const env = { RATE_LIMIT_ENABLED: 'false', REALTIME_PRESENCE_GRACE_MS: '2500', REALTIME_HEARTBEAT_MS: '5000' };
    t = await startTestApp(env);
    t2 = await startInstance(t.databaseUrl, env);
  });
  after(async () => {
    await t2.close();
    await t.stop();
  });

  test('a quick reconnect (even to another replica) does not flap; leaving for longer than the grace says offline once', async () => {
    const sk = (await t.project()).keys.secret;
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'lobby', type: 'channel' } });
    const watcher = await openWs(wsUrl(t.url), as(sk, 'watcher'));
    watcher.send({ type: 'subscribe', thread_id: 'lobby' });
    await watcher.waitFor((m) => m.type === 'ready', 'ready');

    const first = await openWs(wsUrl(t.url), as(sk, 'zoe'));
    first.send({ type: 'subscribe', thread_id: 'lobby' });
    await watcher.waitFor((m) => m.type === 'presence' && m.user_id === 'zoe' && m.state === 'online', 'zoe online');
    first.close();
    await first.closed;
    // Back within the grace period, through the other replica.
    const second = await openWs(wsUrl(t2.url), as(sk, 'zoe'));
    second.send({ type: 'subscribe', thread_id: 'lobby' });
    await second.waitFor((m) => m.type === 'ready', 'ready');
    const subscribed = second.messages.find((m) => m.type === 'subscribed');
    assert.ok(
      subscribed.presence.includes('zoe') && subscribed.presence.includes('watcher'),
      JSON.stringify(subscribed.presence),
    );
    await sleep(3_500);
    const zoe = () => watcher.messages.filter((m) => m.type === 'presence' && m.user_id === 'zoe').map((m) => m.state);
    assert.deepEqual(zoe(), ['online'], 'no offline/online flap');

    second.close();
    await watcher.waitFor((m) => m.type === 'presence' && m.user_id === 'zoe' && m.state === 'offline', 'zoe offline');
    assert.deepEqual(zoe(), ['online', 'offline']);
    watcher.close();
  });
});
