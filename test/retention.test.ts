import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type TestContext } from './helpers/app';
import { seedThread } from './helpers/seed-log';
import { as, openSse, openWs, range, seqs } from './realtime-clients';

const DAY = 86_400_000;

describe('retention policies and the purge horizon', () => {
  let t: TestContext;
  let p: ProjectCredentials;
  let other: ProjectCredentials;
  const sk = () => p.keys.secret;
  const admin = () => p.keys.admin;
  const logOf = (projectId: string, threadId: string) =>
    t.db('events').select('seq', 'type', 'message_id', 'actor', 'data', 'created_at').where({
      project_id: projectId,
      thread_id: threadId,
    });

  before(async () => {
    // Small batches, so a purge of 71 events is several audited transactions.
    t = await startTestApp({ RETENTION_BATCH_SIZE: '20', RETENTION_ENABLED: 'false' });
    p = await t.project('retained');
    other = await t.project('bystander');
    // 'old': thread.created and member.added 100 days ago, message i at -100 d + 12 h + i days:
    // messages 1…69 (seqs 3…71) are older than 30 days, 70…100 (seqs 72…102) are not.
    const start = new Date(Date.now() - 100 * DAY + 12 * 3_600_000);
    await seedThread(t.db, {
      projectId: p.project_id,
      threadId: 'old',
      messages: 100,
      start,
      stepMs: DAY,
      author: 'ann',
    });
    await seedThread(t.db, {
      projectId: other.project_id,
      threadId: 'old',
      messages: 100,
      start,
      stepMs: DAY,
      author: 'ann',
    });
    // A thread whose whole log is recent: the policy leaves it alone.
    await api(t.url, 'POST', '/v1/threads', { key: sk(), user: 'ann', body: { id: 'fresh', type: 'group' } });
    await api(t.url, 'POST', '/v1/threads/fresh/messages', { key: sk(), user: 'ann', body: { body: 'hi' } });
    // State that must survive the purge: a member, a reaction on a retained message, a read mark.
    await api(t.url, 'PUT', '/v1/threads/old/members/bob', { key: sk(), body: { role: 'member' } });
    const r = await api(t.url, 'PUT', '/v1/threads/old/messages/m80/reactions/%F0%9F%91%8D', {
      key: sk(),
      user: 'bob',
    });
    assert.equal(r.status, 200, r.text);
    await api(t.url, 'PUT', '/v1/threads/old/messages/m10/reactions/%F0%9F%91%8D', { key: sk(), user: 'bob' });
    await api(t.url, 'POST', '/v1/threads/old/read', { key: sk(), user: 'bob', body: { seq: 50 } });
    for (let i = 0; i < 2; i++)
      await api(t.url, 'POST', '/v1/threads/old/messages', { key: sk(), user: 'ann', body: { body: `new ${i}` } });
    // Project settings are a console (developer) route, tested in retention-policy.test.ts.
    await t
      .db('projects')
      .where({ id: p.project_id })
      .update({ settings: JSON.stringify({ retention_days: 30 }) });
    await t
      .db('projects')
      .where({ id: other.project_id })
      .update({ settings: JSON.stringify({ retention_days: 30 }) });
  });
  after(() => t.stop());

  test('a dry run says what would go and removes nothing', async () => {
    const before = await logOf(p.project_id, 'old');
    const r = await api(t.url, 'POST', '/v1/admin/retention/run', { key: admin(), body: { dry_run: true } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.dry_run, true);
    assert.deepEqual(r.body.threads, [
      { thread_id: 'old', reason: 'on_demand', from_seq: 1, through_seq: 71, events: 71, messages: 69 },
    ]);
    assert.deepEqual(r.body.totals, { threads: 1, events: 71, messages: 69 });
    assert.deepEqual(await logOf(p.project_id, 'old'), before);
    assert.equal(Number((await t.db('retention_audit').count('* as n'))[0].n), 0);
  });

  test('purge removes exactly the events older than the cut-off; what remains keeps its seqs and state', async () => {
    const beforeLog = await logOf(p.project_id, 'old').orderBy('seq');
    const beforeThread = (await api(t.url, 'GET', '/v1/threads/old', { key: sk() })).body;
    const unreadBefore = (await api(t.url, 'GET', '/v1/me/unread', { key: sk(), user: 'bob' })).body;
    const r = await api(t.url, 'POST', '/v1/admin/retention/run', { key: admin() });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.threads, [
      { thread_id: 'old', reason: 'on_demand', from_seq: 1, through_seq: 71, events: 71, messages: 69 },
    ]);

    const afterLog = await logOf(p.project_id, 'old').orderBy('seq');
    assert.deepEqual(afterLog, beforeLog.slice(71), 'exactly seqs 1…71 are gone; the rest is byte-for-byte the same');
    for (const e of beforeLog.slice(0, 71)) assert.ok(Date.parse(e.created_at) < Date.now() - 30 * DAY);
    assert.ok(Date.parse(afterLog[0].created_at) >= Date.now() - 30 * DAY - 60_000);
    const messages = await t.db('messages').where({ project_id: p.project_id, thread_id: 'old' }).orderBy('seq');
    assert.deepEqual(seqs(messages), [...range(72, 102), ...messages.slice(31).map((m) => m.seq)]);
    assert.equal(messages[0].id, 'm70');

    // Thread state: last_seq unchanged, the horizon recorded, members and retained reactions kept.
    const thread = (await api(t.url, 'GET', '/v1/threads/old', { key: sk() })).body;
    assert.equal(thread.last_seq, beforeThread.last_seq);
    assert.equal(thread.purged_through_seq, 71);
    const members = (await api(t.url, 'GET', '/v1/threads/old/members', { key: sk() })).body.data;
    assert.deepEqual(members.map((m: { user_id: string }) => m.user_id).sort(), ['ann', 'bob']);
    const m80 = (await api(t.url, 'GET', '/v1/threads/old/messages/m80', { key: sk() })).body;
    assert.deepEqual(m80.reactions, { '👍': 1 });
    assert.equal((await api(t.url, 'GET', '/v1/threads/old/messages/m10', { key: sk() })).status, 404);
    const reactionRows = await t.db('message_reactions').where({ project_id: p.project_id, thread_id: 'old' });
    assert.deepEqual(
      reactionRows.map((x) => x.message_id),
      ['m80'],
      'reactions of purged messages went with them',
    );
    // Unread counts what is still there: bob's mark is at 50, so messages 72…102 and the 2 new ones.
    const unread = (await api(t.url, 'GET', '/v1/me/unread', { key: sk(), user: 'bob' })).body;
    const row = unread.data.find((d: { thread_id: string }) => d.thread_id === 'old');
    assert.equal(row.unread, 33);
    assert.ok(unreadBefore.data.find((d: { thread_id: string }) => d.thread_id === 'old').unread > 33);

    // Nothing else moved: the fresh thread and the other project (same policy, not run) are intact.
    assert.equal((await logOf(p.project_id, 'fresh')).length, 3);
    assert.equal((await logOf(other.project_id, 'old')).length, 102);

    // Appends continue at last_seq + 1.
    const m = await api(t.url, 'POST', '/v1/threads/old/messages', { key: sk(), user: 'ann', body: { body: 'after' } });
    assert.equal(m.body.seq, beforeThread.last_seq + 1);

    // A second run finds nothing more to remove.
    const again = await api(t.url, 'POST', '/v1/admin/retention/run', { key: admin() });
    assert.deepEqual(again.body.totals, { threads: 0, events: 0, messages: 0 });
  });

  test('every purge batch left an audit row: contiguous ranges, reason, actor, time', async () => {
    const rows = await t.db('retention_audit').where({ project_id: p.project_id }).orderBy('id');
    assert.deepEqual(
      rows.map((r) => [r.thread_id, r.from_seq, r.through_seq, r.events_removed]),
      [
        ['old', 1, 20, 20],
        ['old', 21, 40, 20],
        ['old', 41, 60, 20],
        ['old', 61, 71, 11],
      ],
    );
    assert.equal(
      rows.reduce((n, r) => n + Number(r.messages_removed), 0),
      69,
    );
    const key = (await t.db('api_keys').first('id').where({ project_id: p.project_id, kind: 'admin' })) as {
      id: string;
    };
    for (const r of rows) {
      assert.equal(r.reason, 'on_demand');
      assert.equal(r.actor, `admin_key:${key.id}`);
      assert.ok(Date.now() - Date.parse(r.purged_at) < 60_000);
    }
    const audit = await api(t.url, 'GET', '/v1/admin/retention/audit?limit=2', { key: admin() });
    assert.equal(audit.status, 200, audit.text);
    assert.deepEqual(
      audit.body.data.map((r: { through_seq: number }) => r.through_seq),
      [71, 60],
    );
    assert.equal(audit.body.has_more, true);

    const stats = (await api(t.url, 'GET', '/v1/admin/stats', { key: admin() })).body;
    assert.equal(stats.purged.events, 71);
    assert.equal(stats.purged.messages, 69);
    assert.equal(stats.purged.threads, 1);
    assert.equal(stats.purged.purges, 4);
    const lastSeqs = await t.db('threads').where({ project_id: p.project_id }).sum({ s: 'last_seq' });
    assert.equal(stats.events, Number(lastSeqs[0].s) - 71, 'events counts what is retained');
  });

  test('REST: after_seq below the horizon is 410 Gone saying where the log starts; at the horizon it resumes', async () => {
    for (const after of [0, 10, 70]) {
      const r = await api(t.url, 'GET', `/v1/threads/old/events?after_seq=${after}`, { key: sk() });
      assert.equal(r.status, 410, r.text);
      assert.match(r.headers.get('content-type') ?? '', /application\/problem\+json/);
      assert.equal(r.body.type, 'https://progressdb.dev/problems/purged');
      assert.equal(r.body.purged_through_seq, 71);
      assert.equal(r.body.first_retained_seq, 72);
      assert.match(r.body.detail, /starts at seq 72/);
    }
    const ok = await api(t.url, 'GET', '/v1/threads/old/events?after_seq=71&limit=5', { key: sk() });
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(seqs(ok.body.data), range(72, 76));
  });

  test('SSE: a resume below the horizon gets reset (recovered: false), the retained log, then ready', async () => {
    for (const headers of [{ 'last-event-id': '5' }, {}] as Array<Record<string, string>>) {
      const url = `${t.url}/v1/threads/old/tail${'last-event-id' in headers ? '' : '?after_seq=0'}`;
      const sse = await openSse(url, { ...as(sk()), ...headers });
      assert.equal(sse.status, 200);
      const ready = await sse.waitFor(() => sse.messages.find((m) => m.event === 'ready'), 'ready');
      const named = sse.messages.filter((m) => m.event !== undefined);
      assert.equal(named[0].event, 'reset', 'the reset comes before any event');
      assert.deepEqual(JSON.parse(named[0].data), { recovered: false, purged_through_seq: 71, after_seq: 71 });
      assert.equal(sse.messages.indexOf(named[0]), 0);
      const events = sse.events();
      assert.equal(events[0].seq, 72);
      assert.deepEqual(seqs(events), range(72, events[events.length - 1].seq));
      const body = JSON.parse(ready.data);
      assert.equal(body.recovered, false);
      assert.equal(body.purged_through_seq, 71);
      sse.close();
    }
    // At the horizon: an ordinary resume.
    const sse = await openSse(`${t.url}/v1/threads/old/tail?after_seq=71`, as(sk()));
    const ready = await sse.waitFor(() => sse.messages.find((m) => m.event === 'ready'), 'ready');
    assert.equal(JSON.parse(ready.data).recovered, undefined);
    assert.equal(
      sse.messages.some((m) => m.event === 'reset'),
      false,
    );
    assert.equal(sse.events()[0].seq, 72);
    sse.close();
  });

  test('WebSocket: a subscribe below the horizon gets reset (recovered: false), the retained log, then ready', async () => {
    const ws = await openWs(`${t.url.replace('http', 'ws')}/v1/ws`, as(sk()));
    ws.send({ type: 'subscribe', thread_id: 'old', after_seq: 3 });
    const ready = await ws.waitFor((m) => m.type === 'ready' && m.thread_id === 'old', 'ready');
    const reset = ws.messages.find((m) => m.type === 'reset');
    assert.deepEqual(reset, { type: 'reset', thread_id: 'old', recovered: false, purged_through_seq: 71 });
    assert.ok(ws.messages.indexOf(reset) < ws.messages.findIndex((m) => m.type === 'event'));
    assert.equal(ws.eventsOf('old')[0].seq, 72);
    assert.equal(ready.recovered, false);
    assert.equal(ready.purged_through_seq, 71);
    ws.send({ type: 'subscribe', thread_id: 'fresh', after_seq: 0 });
    const freshReady = await ws.waitFor((m) => m.type === 'ready' && m.thread_id === 'fresh', 'fresh ready');
    assert.equal(freshReady.recovered, undefined, 'an unpurged thread replays normally');
    ws.close();
  });

  test('the live tail notices a horizon that moved after it authorised (no silent gap)', async () => {
    await seedThread(t.db, {
      projectId: p.project_id,
      threadId: 'racing',
      messages: 30,
      start: new Date(Date.now() - 60 * DAY),
      stepMs: 1000,
      author: 'ann',
    });
    await api(t.url, 'POST', '/v1/admin/retention/run', { key: admin() });
    // Subscribers that read the thread row before the purge committed (horizon 0 then).
    const subscribe = (threadId: string, afterSeq: number, threadLastSeq: number) =>
      new Promise<string[]>((resolve) => {
        const got: string[] = [];
        const handle = t.app.realtime.hub.subscribe({
          projectId: p.project_id,
          threadId,
          afterSeq,
          threadLastSeq,
          purgedThroughSeq: 0,
          userId: null,
          recheck: async () => true,
          sink: {
            send: (events) => got.push(...events.map((e) => `e${e.seq}`)),
            ready: (seq) => {
              got.push(`ready${seq}`);
              handle.close();
              resolve(got);
            },
            reset: (h) => got.push(`reset${h}`),
            drain: async () => {},
            closed: () => {},
          },
        });
      });
    assert.deepEqual(await subscribe('racing', 0, 32), ['reset32', 'ready32'], 'everything purged');
    const old = await subscribe('old', 10, 72);
    assert.equal(old[0], 'reset71');
    assert.equal(old[1], 'e72');
    assert.match(old[old.length - 1], /^ready\d+$/);
  });
});
