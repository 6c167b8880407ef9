import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Knex } from 'knex';
import WebSocket from 'ws';
import { createDb } from '../src/lib/db';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { createFrontendClient, ProgressDBError, type WebSocketConstructor } from '../sdk/src/index';
import { api, startInstance, startTestApp, type TestContext, type TestInstance } from './helpers/app';
import { createTestDatabase } from './helpers/db';
import { startTcpProxy, type SilenceableProxy } from './helpers/faulty-proxies';
import { as, openWs, type WsClient } from './realtime-clients';

const wsUrl = (base: string) => `${base.replace(/^http/, 'ws')}/v1/ws`;

/** Sends one frame and waits for the ack or error answering it. */
async function request(ws: WsClient, frame: Record<string, unknown> & { id: string }) {
  ws.send(frame);
  return ws.waitFor((m) => (m.type === 'ack' || m.type === 'error') && m.id === frame.id, `answer to ${frame.id}`);
}

/** The problem an error frame must carry: the same fields as a REST problem+json. */
function assertProblem(frame: any, status: number, typeSuffix: string) {
  assert.equal(frame.type, 'error', JSON.stringify(frame));
  assert.equal(frame.status, status);
  assert.equal(frame.problem.status, status);
  assert.match(frame.problem.type, new RegExp(`/problems/${typeSuffix}$`));
  assert.equal(typeof frame.problem.title, 'string');
  assert.equal(typeof frame.problem.detail, 'string');
  assert.equal(typeof frame.problem.request_id, 'string');
}

describe('WebSocket send frames', () => {
  let ctx: TestContext;
  let project: ProjectCredentials;
  const sockets: WsClient[] = [];
  const open = async (headers: Record<string, string>) => {
    const ws = await openWs(wsUrl(ctx.url), headers);
    sockets.push(ws);
    return ws;
  };

  before(async () => {
    ctx = await startTestApp();
    project = await ctx.project('ws send');
  });
  after(async () => {
    for (const ws of sockets) ws.close();
    await ctx?.stop();
  });

  test('acks only after commit: the acked message is already readable over REST, and its event reaches subscribers', async () => {
    const sk = project.keys.secret;
    await api(ctx.url, 'POST', '/v1/threads', { key: sk, body: { id: 'ws-send-1', type: 'group', members: ['ana'] } });
    const ws = await open(as(sk, 'ana'));
    ws.send({ type: 'subscribe', thread_id: 'ws-send-1', after_seq: 0, id: 'sub' });
    await ws.waitFor((m) => m.type === 'ready', 'ready');
    ws.send({ type: 'send', id: 'r1', thread_id: 'ws-send-1', message: { body: { text: 'hello' } } });
    const ack = await ws.waitFor((m) => m.id === 'r1', 'ack');
    // Read at once, before anything else happens: the commit preceded the ack.
    const page = await api(ctx.url, 'GET', '/v1/threads/ws-send-1/messages', { key: sk });
    assert.equal(ack.type, 'ack', JSON.stringify(ack));
    assert.equal(ack.message.author, 'ana');
    assert.deepEqual(ack.message.body, { text: 'hello' });
    assert.equal(ack.seq, ack.message.seq);
    assert.deepEqual(
      page.body.data.map((m: any) => [m.id, m.seq]),
      [[ack.message.id, ack.seq]],
    );
    const [event] = await ws.waitForEvents('ws-send-1', 2);
    assert.ok(
      ws.eventsOf('ws-send-1').some((e) => e.type === 'message.created' && e.message_id === ack.message.id),
      JSON.stringify(event),
    );
  });

  test('a retried send with the same client message id is stored once and answers with the first result', async () => {
    const ws = await open(as(project.keys.secret, 'ben'));
    const message = { id: 'client-msg-1', body: { text: 'once' } };
    const first = await request(ws, { type: 'send', id: 'a', thread_id: 'ws-idem', message });
    const again = await request(ws, { type: 'send', id: 'b', thread_id: 'ws-idem', message });
    assert.equal(first.type, 'ack', JSON.stringify(first));
    assert.equal(again.type, 'ack', JSON.stringify(again));
    assert.equal(first.replayed, false);
    assert.equal(again.replayed, true);
    assert.equal(again.seq, first.seq);
    assert.deepEqual(again.message, first.message);
    // The same id with another body is a conflict, as over REST.
    const other = await request(ws, {
      type: 'send',
      id: 'c',
      thread_id: 'ws-idem',
      message: { id: 'client-msg-1', body: { text: 'different' } },
    });
    assertProblem(other, 409, 'conflict');
    const page = await api(ctx.url, 'GET', '/v1/threads/ws-idem/messages', { key: project.keys.secret });
    assert.deepEqual(
      page.body.data.map((m: any) => m.id),
      ['client-msg-1'],
    );
  });

  test('refuses a user without write access with the problem REST answers (403), writing nothing', async () => {
    const sk = project.keys.secret;
    const created = await api(ctx.url, 'POST', '/v1/threads', {
      key: sk,
      body: { id: 'ws-readonly', type: 'group', members: ['owner'] },
    });
    assert.equal(created.status, 201, created.text);
    const signature = (await api(ctx.url, 'POST', '/v1/_sign', { key: sk, body: { user_id: 'stranger' } })).body
      .signature;
    const rest = await api(ctx.url, 'POST', '/v1/threads/ws-readonly/messages', {
      key: project.keys.publishable,
      user: 'stranger',
      signature,
      body: { body: 'x' },
    });
    const ws = await open({
      authorization: `Bearer ${project.keys.publishable}`,
      'x-user-id': 'stranger',
      'x-user-signature': signature,
    });
    const refused = await request(ws, {
      type: 'send',
      id: 'no-write',
      thread_id: 'ws-readonly',
      message: { body: { text: 'let me in' } },
    });
    assert.ok(rest.status === 403 || rest.status === 404, rest.text);
    assertProblem(refused, rest.status, rest.body.type.split('/').pop());
    assert.equal(refused.id, 'no-write');
    assert.equal(refused.problem.detail, rest.body.detail);
    const page = await api(ctx.url, 'GET', '/v1/threads/ws-readonly/messages', { key: sk });
    assert.deepEqual(page.body.data, []);
  });

  test('invalid messages get a validation problem with field errors (400), like the REST body', async () => {
    const ws = await open(as(project.keys.secret, 'cy'));
    const noBody = await request(ws, { type: 'send', id: 'v1', thread_id: 'ws-valid', message: { text: 'no body' } });
    assertProblem(noBody, 400, 'bad-request');
    assert.ok(
      noBody.problem.errors.some((e: any) => e.path.startsWith('message')),
      JSON.stringify(noBody),
    );
    const badThread = await request(ws, { type: 'send', id: 'v2', thread_id: 'has space', message: { body: 1 } });
    assertProblem(badThread, 400, 'bad-request');
    assert.ok(
      badThread.problem.errors.some((e: any) => e.path.startsWith('thread_id')),
      JSON.stringify(badThread),
    );
    let deep: unknown = 'leaf';
    for (let i = 0; i < 40; i++) deep = [deep];
    const tooDeep = await request(ws, { type: 'send', id: 'v3', thread_id: 'ws-valid', message: { body: deep } });
    assertProblem(tooDeep, 400, 'bad-request');
    // Posting as someone else needs a secret key without a user… and this one acts as cy.
    const pk = await api(ctx.url, 'POST', '/v1/_sign', { key: project.keys.secret, body: { user_id: 'cy' } });
    const front = await open({
      authorization: `Bearer ${project.keys.publishable}`,
      'x-user-id': 'cy',
      'x-user-signature': pk.body.signature,
    });
    const impostor = await request(front, {
      type: 'send',
      id: 'v4',
      thread_id: 'ws-valid',
      message: { body: 1, author: 'someone-else' },
    });
    assertProblem(impostor, 403, 'forbidden');
    const page = await api(ctx.url, 'GET', '/v1/threads/ws-valid/messages', { key: project.keys.secret });
    assert.equal(page.status, 404, 'no thread was created by refused sends');
  });

  test('sends spend from the same write rate limit as REST appends: refused with a 429 problem and retry_after', async () => {
    const limited = await ctx.app.projects.createProject({
      name: 'ws limited',
      settings: { rate_limits: { write: { limit: 3, window_seconds: 60 } } },
    });
    const sk = limited.keys.secret;
    // Two REST appends and one send use up the bucket of (key, user dee); the next send is refused.
    for (const text of ['rest 1', 'rest 2']) {
      const r = await api(ctx.url, 'POST', '/v1/threads/ws-rl/messages', {
        key: sk,
        user: 'dee',
        body: { body: text },
      });
      assert.equal(r.status, 201, r.text);
    }
    const ws = await open(as(sk, 'dee'));
    const third = await request(ws, { type: 'send', id: 'rl3', thread_id: 'ws-rl', message: { body: 'ws 3' } });
    assert.equal(third.type, 'ack', JSON.stringify(third));
    const fourth = await request(ws, { type: 'send', id: 'rl4', thread_id: 'ws-rl', message: { body: 'ws 4' } });
    assertProblem(fourth, 429, 'quota-exceeded');
    assert.equal(fourth.code, 'rate_limited');
    assert.ok(fourth.retry_after >= 1, JSON.stringify(fourth));
    const rest = await api(ctx.url, 'POST', '/v1/threads/ws-rl/messages', { key: sk, user: 'dee', body: { body: 5 } });
    assert.equal(rest.status, 429, 'the REST append shares the bucket the socket used up');
    const page = await api(ctx.url, 'GET', '/v1/threads/ws-rl/messages', { key: sk });
    assert.deepEqual(
      page.body.data.map((m: any) => m.body),
      ['rest 1', 'rest 2', 'ws 3'],
    );
  });

  test('a socket may keep at most 64 sends awaiting their ack; more are refused with a 429 problem, not queued', async () => {
    const ws = await open(as(project.keys.secret, 'flo'));
    const burst = 200;
    // Sent in one go: they arrive long before the first group commits.
    for (let i = 0; i < burst; i++)
      ws.send({ type: 'send', id: `burst-${i}`, thread_id: 'ws-burst', message: { body: i } });
    const answers = await Promise.all(
      Array.from({ length: burst }, (_, i) => ws.waitFor((m) => m.id === `burst-${i}`, `answer ${i}`)),
    );
    const acked = answers.filter((a) => a.type === 'ack');
    const refused = answers.filter((a) => a.type === 'error');
    assert.ok(refused.length >= burst - 2 * 64, `refused ${refused.length} of ${burst}`);
    for (const r of refused) assertProblem(r, 429, 'quota-exceeded');
    const page = await api(ctx.url, 'GET', '/v1/threads/ws-burst/messages?limit=200', { key: project.keys.secret });
    assert.deepEqual(
      page.body.data.map((m: any) => m.id).sort(),
      acked.map((a) => a.message.id).sort(),
      'exactly the acked sends are stored',
    );
  });

  test('the SDK sends over its open tail socket (the REST append route is not hit) and maps error frames to typed errors', async () => {
    const sk = project.keys.secret;
    await api(ctx.url, 'POST', '/v1/threads', { key: sk, body: { id: 'ws-sdk', type: 'group', members: ['eli'] } });
    const client = createFrontendClient({
      baseUrl: ctx.url,
      publishableKey: project.keys.publishable,
      userId: 'eli',
      signature: (await api(ctx.url, 'POST', '/v1/_sign', { key: sk, body: { user_id: 'eli' } })).body.signature,
      WebSocket: WebSocket as unknown as WebSocketConstructor,
    });
    try {
      const tail = client.tail('ws-sdk', { afterSeq: 0 });
      await new Promise<void>((resolve) => tail.on('ready', () => resolve()));
      const before = await restAppends(ctx.url);
      const sent = await client.messages.send('ws-sdk', { body: { text: 'via socket' } });
      const refused = await client.messages.send('ws-sdk', { body: { text: 'not mine' }, author: 'mallory' }).then(
        () => null,
        (e: unknown) => e,
      );
      assert.equal(
        await restAppends(ctx.url),
        before,
        'no POST /v1/threads/:thread_id/messages while the socket was open',
      );
      assert.equal(sent.author, 'eli');
      assert.ok(refused instanceof ProgressDBError, String(refused));
      assert.equal(refused.status, 403);
      assert.match(refused.type, /\/problems\/forbidden$/);
      assert.ok(refused.requestId, 'the problem’s request id');
      const page = await api(ctx.url, 'GET', '/v1/threads/ws-sdk/messages', { key: sk });
      assert.deepEqual(
        page.body.data.map((m: any) => m.id),
        [sent.id],
      );
      tail.close();
    } finally {
      client.close();
    }
  });
});

/** POST …/messages requests this server has answered, from its /metrics. */
async function restAppends(baseUrl: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  let n = 0;
  for (const line of text.split('\n')) {
    if (
      line.startsWith('progressdb_http_request_duration_seconds_count{') &&
      line.includes('method="POST"') &&
      line.includes('route="/v1/threads/:thread_id/messages"')
    )
      n += Number(line.split(' ').pop());
  }
  return n;
}

describe('WebSocket send when PostgreSQL goes away mid-send', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let proxy: SilenceableProxy;
  let instance: TestInstance;
  let direct: Knex;

  before(async () => {
    database = await createTestDatabase();
    proxy = await startTcpProxy(database.url);
    const viaProxy = new URL(database.url);
    viaProxy.port = new URL(proxy.url).port;
    instance = await startInstance(viaProxy.toString());
    direct = createDb(database.url, 2);
  });
  after(async () => {
    await instance?.close();
    await direct?.destroy();
    await database?.drop();
  });

  test('the client gets an error frame (503 problem), and nothing of the message is written', async () => {
    const { keys } = await instance.app.projects.createProject({ name: 'ws fault' });
    const sk = keys.secret;
    const created = await api(instance.url, 'POST', '/v1/threads', {
      key: sk,
      body: { id: 'ws-fault', type: 'group' },
    });
    assert.equal(created.status, 201, created.text);
    const ws = await openWs(wsUrl(instance.url), as(sk, 'fay'));
    try {
      const ok = await request(ws, { type: 'send', id: 'f1', thread_id: 'ws-fault', message: { body: 'before' } });
      assert.equal(ok.type, 'ack', JSON.stringify(ok));

      // The group holding the next send has written its rows; PostgreSQL goes away before COMMIT.
      let armed = true;
      instance.app.ingest.beforeCommit(async (_tx, committed) => {
        if (!armed || ![...committed.latest.values()].some((p) => p.threadId === 'ws-fault')) return;
        armed = false;
        await proxy.close();
      });
      const failed = await request(ws, {
        type: 'send',
        id: 'f2',
        thread_id: 'ws-fault',
        message: { id: 'lost-msg', body: 'during the outage' },
      });
      assert.equal(armed, false, 'the fault fired inside the send’s transaction');
      assertProblem(failed, 503, 'unavailable');
      assert.equal(failed.id, 'f2');

      const rows = await direct('messages').where({ thread_id: 'ws-fault' }).select('id', 'seq').orderBy('seq');
      assert.deepEqual(
        rows.map((r) => [r.id, Number(r.seq)]),
        [[ok.message.id, ok.seq]],
      );
      const events = await direct('events').where({ thread_id: 'ws-fault' }).max('seq as seq').first();
      const thread = await direct('threads').where({ id: 'ws-fault' }).first('last_seq');
      assert.equal(Number(events?.seq), ok.seq, 'no event past the acknowledged one');
      assert.equal(Number(thread.last_seq), ok.seq, 'the thread’s seq did not move');
    } finally {
      ws.close();
    }
  });
});
