import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { api, startTestApp, type TestContext } from './helpers/app';
import { signInThroughProvider, startOAuthProvider } from './helpers/oauth-provider';
import { startReceiver, type Receiver, type Received } from './helpers/webhook-receiver';
import { openSse } from './realtime-clients';

const RETRY = 0.4; // seconds between attempts (WEBHOOK_RETRY_SCHEDULE below, no jitter)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('webhooks: signed, ordered, at-least-once delivery to a real receiver', () => {
  let provider: Awaited<ReturnType<typeof startOAuthProvider>>;
  let t: TestContext;
  let session: string;
  let receiver: Receiver;

  const dev = (method: string, path: string, body?: unknown) =>
    api(t.url, method, path, { body, headers: { authorization: `Bearer ${session}` } });

  /** A project (through the management API) with a secret and an admin key. */
  async function project(name: string) {
    const p = await dev('POST', '/v1/projects', { name });
    assert.equal(p.status, 201, p.text);
    const sk = await dev('POST', `/v1/projects/${p.body.id}/keys`, { kind: 'secret', name: 'backend' });
    const ak = await dev('POST', `/v1/projects/${p.body.id}/keys`, { kind: 'admin', name: 'ops' });
    return { id: p.body.id as string, sk: sk.body.key as string, ak: ak.body.key as string };
  }

  async function endpoint(projectId: string, path: string, extra: Record<string, unknown> = {}) {
    const r = await dev('POST', `/v1/projects/${projectId}/webhooks`, { url: receiver.url + path, ...extra });
    assert.equal(r.status, 201, r.text);
    return r.body as { id: string; secret: string };
  }

  const post = (sk: string, thread: string, body: unknown, user = 'u1') =>
    api(t.url, 'POST', `/v1/threads/${thread}/messages`, { key: sk, user, body: { body } });

  const on = (path: string) => (all: Received[]) => all.filter((r) => r.path === path);
  const verify = (secret: string, r: Received) =>
    new Webhook(secret).verify(r.body, {
      'webhook-id': String(r.headers['webhook-id']),
      'webhook-timestamp': String(r.headers['webhook-timestamp']),
      'webhook-signature': String(r.headers['webhook-signature']),
    }) as any;

  before(async () => {
    provider = await startOAuthProvider();
    receiver = await startReceiver();
    t = await startTestApp({
      ...provider.env,
      WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true',
      WEBHOOK_POLL_MS: '50',
      WEBHOOK_RETRY_SCHEDULE: `${RETRY},${RETRY},${RETRY}`,
      WEBHOOK_RETRY_JITTER: '0',
      WEBHOOK_TIMEOUT_MS: '700',
      REALTIME_PRESENCE_GRACE_MS: '0',
    });
    provider.signInAs({ sub: 'g-hook', name: 'Hook', email: 'hook@example.com' });
    session = (await signInThroughProvider(t.url)).cookies.pdb_session;
  });
  after(async () => {
    await t.stop();
    await receiver.close();
    await provider.stop();
  });

  test('every committed event arrives once, signed (verified by the standardwebhooks package), as /events shows it', async () => {
    const p = await project('signed');
    const ep = await endpoint(p.id, '/signed');
    assert.match(ep.secret, /^whsec_[A-Za-z0-9+/]+=*$/);
    for (let i = 0; i < 3; i++) assert.equal((await post(p.sk, 'room-1', { text: `m${i}` })).status, 201);
    const got = on('/signed')(await receiver.until((all) => on('/signed')(all).length >= 5));
    // The first message created the thread and made its author a member: seq 1..5, in order.
    const payloads = got.map((r) => verify(ep.secret, r));
    assert.deepEqual(
      payloads.map((x) => [x.type, x.data.seq]),
      [
        ['thread.created', 1],
        ['member.added', 2],
        ['message.created', 3],
        ['message.created', 4],
        ['message.created', 5],
      ],
    );
    const events = await api(t.url, 'GET', '/v1/threads/room-1/events', { key: p.sk });
    for (const [i, x] of payloads.entries()) {
      const { project_id, offline_member_ids, ...event } = x.data;
      assert.equal(project_id, p.id);
      assert.deepEqual(event, events.body.data[i]);
      assert.equal(x.timestamp, events.body.data[i].created_at);
      if (x.type === 'message.created') assert.deepEqual(offline_member_ids, []);
    }
    assert.equal(new Set(got.map((r) => r.headers['webhook-id'])).size, 5);
    // A tampered body fails verification: the signature covers it.
    assert.throws(() => verify(ep.secret, { ...got[2], body: got[2].body.replace('m0', 'mX') }));
    await sleep(300);
    assert.equal(on('/signed')(receiver.received).length, 5, 'nothing is delivered twice without a failure');

    const list = await api(t.url, 'GET', '/v1/admin/webhooks/deliveries?status=delivered', { key: p.ak });
    assert.equal(list.status, 200, list.text);
    assert.equal(list.body.data.length, 5);
    assert.ok(list.body.data.every((d: any) => d.last_status_code === 204 && d.attempts === 1));
  });

  test('deliveries reuse kept-alive connections to the checked address instead of one connection per POST', async () => {
    const own = await startReceiver(0, { keepAliveTimeoutMs: 5_000 });
    try {
      const p = await project('keepalive');
      const created = await dev('POST', `/v1/projects/${p.id}/webhooks`, {
        url: `${own.url}/keepalive`,
        event_types: ['message.created'],
      });
      assert.equal(created.status, 201, created.text);
      const ep = created.body as { id: string; secret: string };
      // One thread: its deliveries go strictly one after another, so one connection can carry them all.
      for (let i = 0; i < 12; i++) assert.equal((await post(p.sk, 'ka-1', { text: `k${i}` })).status, 201);
      const got = await own.until((all) => all.length >= 12);
      assert.deepEqual(
        got.map((r) => verify(ep.secret, r).data.seq),
        got.map((_, i) => i + 3),
      );
      assert.ok(own.connections <= 2, `${own.connections} connections for ${got.length} deliveries`);
      // A burst over several threads (several in flight at once) still reuses the pooled connections.
      const before = own.connections;
      await Promise.all(
        Array.from({ length: 6 }, (_, i) => post(p.sk, `ka-burst-${i}`, { text: 'b' }).then((r) => r.status)),
      );
      for (let i = 0; i < 6; i++) assert.equal((await post(p.sk, `ka-burst-${i}`, { text: 'c' })).status, 201);
      await own.until((all) => all.length >= 24);
      assert.ok(own.connections - before <= 6, `${own.connections - before} new connections for 12 deliveries`);
    } finally {
      await own.close();
    }
  });

  test('a failing event holds back only its own thread: retries on schedule, seq order per thread, other threads flow', async () => {
    const p = await project('order');
    await endpoint(p.id, '/order', { event_types: ['message.created'] });
    // The first message of thread "slow" (seq 3, after thread.created and member.added) fails twice (500, then a timeout); everything else succeeds.
    let failures = 0;
    receiver.answer((r) => {
      if (r.path === '/order' && r.json?.data?.thread_id === 'slow' && r.json.data.seq === 3 && failures < 2) {
        failures++;
        return failures === 1 ? { status: 500, body: 'boom' } : { status: 200, delayMs: 1500 };
      }
      return { status: 200 };
    });
    try {
      for (let i = 0; i < 4; i++) assert.equal((await post(p.sk, 'slow', { i })).status, 201);
      for (let i = 0; i < 4; i++) assert.equal((await post(p.sk, 'fast', { i })).status, 201);
      const got = await receiver.until((all) => on('/order')(all).length >= 10, 20_000);
      const mine = on('/order')(got);
      const slow = mine.filter((r) => r.json.data.thread_id === 'slow');
      const fast = mine.filter((r) => r.json.data.thread_id === 'fast');
      assert.deepEqual(
        slow.map((r) => r.json.data.seq),
        [3, 3, 3, 4, 5, 6],
        'the failing event is retried and only then do the later ones follow, in seq order',
      );
      assert.deepEqual(
        fast.map((r) => r.json.data.seq),
        [3, 4, 5, 6],
      );
      // The other thread was not held back: it was fully delivered before "slow" got past seq 3.
      assert.ok(fast[3].at < slow[3].at, 'thread "fast" is not held back by thread "slow"');
      // Retries on schedule: ≥ RETRY after the failure (500 at once; the timeout after 700 ms).
      assert.ok(slow[1].at - slow[0].at >= RETRY * 1000 - 50, `retry 1 after ${slow[1].at - slow[0].at} ms`);
      assert.ok(slow[2].at - slow[1].at >= 700 + RETRY * 1000 - 50, `retry 2 after ${slow[2].at - slow[1].at} ms`);
      // Same webhook-id on every attempt of the same event.
      assert.equal(new Set(slow.slice(0, 3).map((r) => r.headers['webhook-id'])).size, 1);
      const d = await api(t.url, 'GET', '/v1/admin/webhooks/deliveries?status=delivered&limit=200', { key: p.ak });
      const first = d.body.data.find((x: any) => x.thread_id === 'slow' && x.seq === 3);
      assert.equal(first.attempts, 3);
    } finally {
      receiver.answer(() => ({ status: 204 }));
    }
  });

  test('429 with Retry-After is honoured', async () => {
    const p = await project('retry-after');
    await endpoint(p.id, '/429');
    let n = 0;
    receiver.answer((r) =>
      r.path === '/429' && n++ === 0 ? { status: 429, headers: { 'retry-after': '2' } } : { status: 204 },
    );
    try {
      assert.equal((await post(p.sk, 'ra', { x: 1 })).status, 201);
      // thread.created: 429 then (≥ 2 s later) 204; then member.added and message.created.
      const got = on('/429')(await receiver.until((all) => on('/429')(all).length >= 4));
      assert.equal(got[0].headers['webhook-id'], got[1].headers['webhook-id']);
      assert.ok(got[1].at - got[0].at >= 1950, `retried after ${got[1].at - got[0].at} ms, Retry-After said 2 s`);
      assert.deepEqual(
        got.map((r) => r.json.data.seq),
        [1, 1, 2, 3],
      );
    } finally {
      receiver.answer(() => ({ status: 204 }));
    }
  });

  test('after the schedule is spent the delivery is dead; dead letters are listed page by page and replayed one by one or in bulk', async () => {
    const p = await project('dead');
    const ep = await endpoint(p.id, '/dead', { event_types: ['message.created'] });
    receiver.answer((r) => (r.path === '/dead' ? { status: 503 } : { status: 204 }));
    for (let i = 0; i < 3; i++) assert.equal((await post(p.sk, `d${i}`, { i })).status, 201);
    // 1 attempt + 3 retries each.
    await receiver.until((all) => on('/dead')(all).length >= 12, 20_000);
    let dead: any[] = [];
    for (let i = 0; i < 50 && dead.length < 3; i++) {
      await sleep(100);
      dead = (await api(t.url, 'GET', '/v1/admin/webhooks/deliveries?status=dead', { key: p.ak })).body.data;
    }
    assert.equal(dead.length, 3);
    assert.ok(dead.every((d) => d.attempts === 4 && d.last_status_code === 503 && d.dead_at));

    // Cursor pagination: one at a time, newest first, every dead letter exactly once.
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const q: string = `/v1/admin/webhooks/deliveries?status=dead&limit=1${cursor ? `&cursor=${cursor}` : ''}`;
      const page = await api(t.url, 'GET', q, { key: p.ak });
      assert.equal(page.status, 200, page.text);
      seen.push(...page.body.data.map((d: any) => d.id));
      cursor = page.body.next_cursor;
    } while (cursor);
    assert.deepEqual(
      seen,
      dead.map((d) => d.id),
    );

    receiver.answer(() => ({ status: 204 }));
    const before = on('/dead')(receiver.received).length;
    const one = await api(t.url, 'POST', `/v1/admin/webhooks/deliveries/${dead[0].id}/replay`, { key: p.ak });
    assert.equal(one.status, 200, one.text);
    assert.equal(one.body.status, 'pending');
    const got = on('/dead')(await receiver.until((all) => on('/dead')(all).length >= before + 1));
    assert.equal(got[before].headers['webhook-id'], dead[0].id, 'a replay keeps the webhook-id');
    verify(ep.secret, got[before]);
    const again = await api(t.url, 'POST', `/v1/admin/webhooks/deliveries/${dead[0].id}/replay`, { key: p.ak });
    assert.equal(again.status, 400, 'only dead deliveries can be replayed');

    const bulk = await api(t.url, 'POST', '/v1/admin/webhooks/deliveries/replay', { key: p.ak, body: {} });
    assert.equal(bulk.status, 200, bulk.text);
    assert.equal(bulk.body.replayed, 2);
    const all = on('/dead')(await receiver.until((a) => on('/dead')(a).length >= before + 3));
    assert.deepEqual(new Set(all.slice(before).map((r) => r.headers['webhook-id'])), new Set(dead.map((d) => d.id)));
    const left = await api(t.url, 'GET', '/v1/admin/webhooks/deliveries?status=dead', { key: p.ak });
    assert.deepEqual(left.body.data, []);
    const bad = await api(t.url, 'GET', '/v1/admin/webhooks/deliveries?status=dead&cursor=nonsense', { key: p.ak });
    assert.equal(bad.status, 400);
    assert.match(bad.headers.get('content-type') ?? '', /problem\+json/);
    const other = await project('other');
    const cross = await api(t.url, 'POST', `/v1/admin/webhooks/deliveries/${dead[1].id}/replay`, { key: other.ak });
    assert.equal(cross.status, 404, "another project's delivery is not found");
  });

  test('410 Gone disables the endpoint; the event waits, first in line, until it is enabled again', async () => {
    const p = await project('gone');
    const ep = await endpoint(p.id, '/gone', { event_types: ['message.created'] });
    receiver.answer((r) => (r.path === '/gone' ? { status: 410 } : { status: 204 }));
    assert.equal((await post(p.sk, 'g', { n: 1 })).status, 201);
    await receiver.until((all) => on('/gone')(all).length >= 1);
    let state: any;
    for (let i = 0; i < 50; i++) {
      state = (await dev('GET', `/v1/projects/${p.id}/webhooks/${ep.id}`)).body;
      if (!state.enabled) break;
      await sleep(50);
    }
    assert.equal(state.enabled, false);
    assert.match(state.disabled_reason, /410/);
    // Disabled: new events are not queued for it and nothing is sent.
    assert.equal((await post(p.sk, 'g', { n: 2 })).status, 201);
    await sleep(500);
    assert.equal(on('/gone')(receiver.received).length, 1);

    receiver.answer(() => ({ status: 204 }));
    const enabled = await dev('PATCH', `/v1/projects/${p.id}/webhooks/${ep.id}`, { enabled: true });
    assert.equal(enabled.status, 200, enabled.text);
    assert.equal(enabled.body.enabled, true);
    const got = on('/gone')(await receiver.until((all) => on('/gone')(all).length >= 2));
    assert.equal(got[1].headers['webhook-id'], got[0].headers['webhook-id']);
    assert.equal(got[1].json.data.data.body.n, 1);
    await sleep(300);
    assert.equal(on('/gone')(receiver.received).length, 2, 'the event committed while disabled is not delivered');
  });

  test('a rotated secret: both secrets sign during the grace period, the old one stops after', async () => {
    const p = await project('rotate');
    const ep = await endpoint(p.id, '/rotate', { event_types: ['message.created'] });
    const rotated = await dev('POST', `/v1/projects/${p.id}/webhooks/${ep.id}/secret/rotate`, { grace_seconds: 3600 });
    assert.equal(rotated.status, 200, rotated.text);
    assert.notEqual(rotated.body.secret, ep.secret);
    assert.ok(rotated.body.previous_secret_expires_at);
    assert.equal((await post(p.sk, 'r', { n: 1 })).status, 201);
    const [first] = on('/rotate')(await receiver.until((all) => on('/rotate')(all).length >= 1));
    assert.equal(String(first.headers['webhook-signature']).split(' ').length, 2);
    verify(ep.secret, first);
    verify(rotated.body.secret, first);

    const noGrace = await dev('POST', `/v1/projects/${p.id}/webhooks/${ep.id}/secret/rotate`, { grace_seconds: 0 });
    assert.equal((await post(p.sk, 'r', { n: 2 })).status, 201);
    const got = on('/rotate')(await receiver.until((all) => on('/rotate')(all).length >= 2));
    verify(noGrace.body.secret, got[1]);
    assert.throws(() => verify(rotated.body.secret, got[1]));
    assert.equal(String(got[1].headers['webhook-signature']).split(' ').length, 1);
  });

  test('message.created lists the members with no live connection to the thread on any replica', async () => {
    const p = await project('offline');
    await endpoint(p.id, '/offline', { event_types: ['message.created'], thread_ids: ['team'] });
    const created = await api(t.url, 'POST', '/v1/threads', {
      key: p.sk,
      body: { id: 'team', type: 'group', members: ['alice', 'bob', 'carol'] },
    });
    assert.equal(created.status, 201, created.text);
    const tail = await openSse(`${t.url}/v1/threads/team/tail`, {
      authorization: `Bearer ${p.sk}`,
      'x-user-id': 'bob',
    });
    try {
      for (let i = 0; i < 50 && !t.app.realtime.online(p.id, 'team').includes('bob'); i++) await sleep(50);
      assert.deepEqual(t.app.realtime.online(p.id, 'team'), ['bob']);
      assert.equal((await post(p.sk, 'team', { text: 'hi' }, 'alice')).status, 201);
      assert.equal((await post(p.sk, 'other', { text: 'not this thread' }, 'alice')).status, 201);
      const [got] = on('/offline')(await receiver.until((all) => on('/offline')(all).length >= 1));
      assert.equal(got.json.data.actor, 'alice');
      assert.deepEqual(got.json.data.offline_member_ids, ['carol'], 'bob is live, alice is the author');
    } finally {
      tail.close();
    }
    for (let i = 0; i < 100 && t.app.realtime.online(p.id, 'team').length > 0; i++) await sleep(50);
    assert.equal((await post(p.sk, 'team', { text: 'again' }, 'alice')).status, 201);
    const got = on('/offline')(await receiver.until((all) => on('/offline')(all).length >= 2));
    assert.deepEqual(got[1].json.data.offline_member_ids, ['bob', 'carol']);
    await sleep(200);
    assert.equal(on('/offline')(receiver.received).length, 2, 'the thread filter holds');
  });

  test('nothing that did not commit is queued: a rejected append leaves no delivery', async () => {
    const p = await project('rollback');
    await endpoint(p.id, '/rollback');
    assert.equal((await post(p.sk, 'rb', { ok: 1 })).status, 201);
    const tooBig = await post(p.sk, 'rb', { text: 'x'.repeat(70 * 1024) });
    assert.equal(tooBig.status, 413);
    const dup = await api(t.url, 'POST', '/v1/threads', { key: p.sk, body: { id: 'rb', type: 'dm' } });
    assert.ok(dup.status >= 400 || dup.status === 200);
    await receiver.until((all) => on('/rollback')(all).length >= 2);
    await sleep(300);
    const rows = await t.db('webhook_deliveries').where({ project_id: p.id }).orderBy('seq');
    const events = await t.db('events').where({ project_id: p.id }).orderBy('seq');
    assert.deepEqual(
      rows.map((r) => [r.thread_id, Number(r.seq)]),
      events.map((e) => [e.thread_id, Number(e.seq)]),
      'one delivery per committed event, no more',
    );
  });

  test('a group of appends writes the outbox row of every event in its one statement; a failing outbox write fails the whole group', async () => {
    const p = await project('one-statement');
    await endpoint(p.id, '/one-statement', { event_types: ['message.created'] });
    for (const id of ['os-a', 'os-b', 'os-fail'])
      assert.equal((await api(t.url, 'POST', '/v1/threads', { key: p.sk, body: { id, type: 'group' } })).status, 201);
    const who = {
      type: 'api',
      projectId: p.id,
      keyId: 'test-key',
      kind: 'secret',
      userId: 'u1',
      settings: {},
    } as const;
    const m = t.app.messages;
    const sizes: number[] = [];
    const stop = t.app.ingest.observe((s) => sizes.push(s.size));
    const created = async () => {
      const rows = await t.db('webhook_deliveries').where({ project_id: p.id }).orderBy(['thread_id', 'seq']);
      const events = await t
        .db('events')
        .where({ project_id: p.id, type: 'message.created' })
        .orderBy(['thread_id', 'seq']);
      assert.deepEqual(
        rows.map((r) => [r.thread_id, Number(r.seq)]),
        events.map((e) => [e.thread_id, Number(e.seq)]),
        'one delivery per committed message, no more',
      );
      return rows.length;
    };
    try {
      // Submitted in one tick: one group per lane, each one statement (secret key, existing threads).
      await Promise.all(['os-a', 'os-b', 'os-a'].map((th) => m.append(who, th, [{ body: { th } }])));
      assert.equal(
        sizes.reduce((n, s) => n + s, 0),
        3,
      );
      assert.equal(await created(), 3);

      await t.db.raw(`
        create or replace function test_fail_outbox() returns trigger language plpgsql as $$
        begin
          if new.thread_id = 'os-fail' then raise exception 'outbox refused'; end if;
          return new;
        end $$`);
      await t.db.raw(
        `create trigger test_fail_outbox before insert on webhook_deliveries for each row execute function test_fail_outbox()`,
      );
      sizes.length = 0;
      const results = await Promise.allSettled(
        ['os-a', 'os-fail', 'os-b'].map((th) => m.append(who, th, [{ body: { th } }])),
      );
      assert.deepEqual(
        results.map((r) => r.status),
        ['fulfilled', 'rejected', 'fulfilled'],
        'the group failed as a whole; split, only the write whose outbox row failed is refused',
      );
      assert.equal(await created(), 5);
      const failed = await t.db('events').where({ project_id: p.id, thread_id: 'os-fail' }).orderBy('seq');
      assert.deepEqual(
        failed.map((e) => [e.type, Number(e.seq)]),
        [['thread.created', 1]],
        'nothing of the refused write, and no gap',
      );
    } finally {
      stop();
      await t.db.raw('drop trigger if exists test_fail_outbox on webhook_deliveries');
      await t.db.raw('drop function if exists test_fail_outbox()');
    }
  });

  test('the management API: secret shown once, list with health, update, delete; another developer gets 404; bad input is 4xx problem+json', async () => {
    const p = await project('mgmt');
    const ep = await endpoint(p.id, '/mgmt', { description: 'search indexer' });
    const list = await dev('GET', `/v1/projects/${p.id}/webhooks`);
    assert.equal(list.status, 200);
    assert.equal(list.body.data.length, 1);
    assert.equal(list.body.data[0].secret, undefined, 'the secret is never listed');
    assert.equal(list.body.data[0].health.pending, 0);
    const stored = await t.db('webhook_endpoints').where({ id: ep.id }).first();
    assert.ok(!JSON.stringify(stored).includes(ep.secret.slice(6)), 'the secret is not stored in plaintext');

    const patched = await dev('PATCH', `/v1/projects/${p.id}/webhooks/${ep.id}`, {
      event_types: ['message.edited'],
      description: 'changed',
    });
    assert.equal(patched.status, 200, patched.text);
    assert.deepEqual([patched.body.event_types, patched.body.description], [['message.edited'], 'changed']);

    provider.signInAs({ sub: 'g-mallory', name: 'Mallory', email: 'm@example.com' });
    const mallory = (await signInThroughProvider(t.url)).cookies.pdb_session;
    const asMallory = (method: string, path: string, body?: unknown) =>
      api(t.url, method, path, { body, headers: { authorization: `Bearer ${mallory}` } });
    assert.equal((await asMallory('GET', `/v1/projects/${p.id}/webhooks`)).status, 404);
    assert.equal((await asMallory('DELETE', `/v1/projects/${p.id}/webhooks/${ep.id}`)).status, 404);

    const hostile: unknown[] = [
      { url: 'ftp://example.com/hook' },
      { url: 'javascript:alert(1)' },
      { url: 'not a url' },
      { url: 'https://user:pass@example.com/hook' },
      { url: 'https://example.com/hook#frag' },
      { url: `https://example.com/${'a'.repeat(3000)}` },
      { url: 'https://example.com/hook', event_types: ['message.exploded'] },
      { url: 'https://example.com/hook', thread_ids: ['../../etc'] },
      { url: 'https://example.com/hook', secret: 'whsec_mine' },
      { url: 42 },
      {},
      [],
      'https://example.com',
    ];
    for (const body of hostile) {
      const r = await dev('POST', `/v1/projects/${p.id}/webhooks`, body);
      assert.ok(r.status >= 400 && r.status < 500, `${JSON.stringify(body).slice(0, 80)} → ${r.status}`);
      assert.match(r.headers.get('content-type') ?? '', /application\/problem\+json/);
    }
    const raw = await api(t.url, 'POST', `/v1/projects/${p.id}/webhooks`, {
      raw: '{"url": "https://exa',
      headers: { authorization: `Bearer ${session}` },
    });
    assert.equal(raw.status, 400);
    const emptyPatch = await dev('PATCH', `/v1/projects/${p.id}/webhooks/${ep.id}`, {});
    assert.equal(emptyPatch.status, 400);
    assert.equal((await dev('GET', `/v1/projects/${p.id}/webhooks/we_nope`)).status, 404);
    assert.equal((await dev('GET', `/v1/projects/${p.id}/webhooks`)).body.data.length, 1, 'nothing was created');

    assert.equal((await dev('DELETE', `/v1/projects/${p.id}/webhooks/${ep.id}`)).status, 204);
    assert.equal((await dev('GET', `/v1/projects/${p.id}/webhooks/${ep.id}`)).status, 404);
  });

  test('metrics: deliveries by outcome, attempt latency, queue depth and oldest due age per project', async () => {
    // An endpoint that answers 410 keeps its event pending (queued) once disabled.
    const p = await project('metrics');
    const ep = await endpoint(p.id, '/metrics-q', { event_types: ['message.created'] });
    receiver.answer((r) => (r.path === '/metrics-q' ? { status: 410 } : { status: 204 }));
    assert.equal((await post(p.sk, 'q', { n: 1 })).status, 201);
    await receiver.until((all) => on('/metrics-q')(all).length >= 1);
    for (let i = 0; i < 50 && (await dev('GET', `/v1/projects/${p.id}/webhooks/${ep.id}`)).body.enabled; i++)
      await sleep(50);
    receiver.answer(() => ({ status: 204 }));
    const res = await fetch(`${t.url}/metrics`);
    const text = await res.text();
    assert.match(text, /progressdb_webhook_deliveries_total\{outcome="delivered"\} [1-9]/);
    assert.match(text, /progressdb_webhook_deliveries_total\{outcome="dead"\} [1-9]/);
    assert.match(text, /progressdb_webhook_deliveries_total\{outcome="disabled"\} [1-9]/);
    assert.match(text, /progressdb_webhook_attempt_seconds_count [1-9]/);
    assert.match(text, new RegExp(`progressdb_webhook_queue_depth\\{project_id="${p.id}"\\} 1\\n`));
    assert.match(text, new RegExp(`progressdb_webhook_oldest_due_seconds\\{project_id="${p.id}"\\} [0-9.]+\\n`));
  });
});
