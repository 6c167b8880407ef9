import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { api, startTestApp, type TestContext } from './helpers/app';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';

const sign = (secret: string, user: string) => createHmac('sha256', secret).update(user).digest('hex');

describe('threads', () => {
  let t: TestContext;
  let creds: ProjectCredentials;
  let sk: string;
  const events = async (threadId: string) =>
    (await t
      .db('events')
      .select('seq', 'type', 'actor', 'data')
      .where({ project_id: creds.project_id, thread_id: threadId })
      .orderBy('seq')) as Array<{
      seq: number;
      type: string;
      actor: string | null;
      data: any;
    }>;

  before(async () => {
    t = await startTestApp();
    creds = await t.project();
    sk = creds.keys.secret;
  });
  after(() => t.stop());

  test('creates a thread with a client-chosen id, the caller as owner and the listed members', async () => {
    const r = await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      user: 'alice',
      body: {
        id: 'room-1',
        type: 'group',
        title: 'Room',
        attributes: { topic: 'x' },
        members: ['bob', { user_id: 'carol', role: 'admin' }],
      },
    });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.id, 'room-1');
    assert.equal(r.body.type, 'group');
    assert.equal(r.body.title, 'Room');
    assert.deepEqual(r.body.attributes, { topic: 'x' });
    assert.deepEqual(r.body.policies, { read: 'members', write: 'members' });
    assert.equal(r.body.created_by, 'alice');
    assert.equal(r.body.deleted, false);
    assert.equal(r.body.last_seq, 4, 'thread.created + three member.added');
    assert.match(r.body.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    const log = await events('room-1');
    assert.deepEqual(
      log.map((e) => [e.seq, e.type, e.data.user_id ?? null, e.data.role ?? null]),
      [
        [1, 'thread.created', null, null],
        [2, 'member.added', 'alice', 'owner'],
        [3, 'member.added', 'bob', 'member'],
        [4, 'member.added', 'carol', 'admin'],
      ],
    );
    const got = await api(t.url, 'GET', '/v1/threads/room-1', { key: sk });
    assert.equal(got.status, 200);
    assert.deepEqual(got.body, r.body);
  });

  test('generates an id when none is given', async () => {
    const a = await api(t.url, 'POST', '/v1/threads', { key: sk, body: { type: 'channel' } });
    const b = await api(t.url, 'POST', '/v1/threads', { key: sk, body: { type: 'channel' } });
    assert.equal(a.status, 201);
    assert.match(a.body.id, /^thr_[0-9A-Za-z]{20}$/);
    assert.notEqual(a.body.id, b.body.id);
    assert.equal(a.body.last_seq, 1, 'no members without X-User-ID: only thread.created');
  });

  test('refuses a second thread with an id that is taken (409) and writes nothing', async () => {
    assert.equal(
      (await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'taken', type: 'group' } })).status,
      201,
    );
    const again = await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      user: 'zed',
      body: { id: 'taken', type: 'channel', title: 'other' },
    });
    assert.equal(again.status, 409);
    assert.equal(again.headers.get('content-type'), 'application/problem+json; charset=utf-8');
    assert.equal((await events('taken')).length, 1);
    const got = await api(t.url, 'GET', '/v1/threads/taken', { key: sk });
    assert.equal(got.body.type, 'group');
  });

  test('a repeated dm between the same two users returns the existing thread with 200', async () => {
    const first = await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      user: 'dm-a',
      body: { type: 'dm', members: ['dm-b'] },
    });
    assert.equal(first.status, 201, first.text);
    const again = await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      user: 'dm-b',
      body: { type: 'dm', members: ['dm-a'] },
    });
    assert.equal(again.status, 200);
    assert.equal(again.body.id, first.body.id);
    const bySecret = await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      body: { type: 'dm', members: ['dm-b', 'dm-a'] },
    });
    assert.equal(bySecret.status, 200);
    assert.equal(bySecret.body.id, first.body.id);
    assert.equal((await events(first.body.id)).length, 3, 'the repeats wrote nothing');
    const other = await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      user: 'dm-a',
      body: { type: 'dm', members: ['dm-c'] },
    });
    assert.equal(other.status, 201);
    assert.notEqual(other.body.id, first.body.id);
  });

  test('a dm needs exactly two distinct members', async () => {
    for (const body of [
      { type: 'dm', members: ['solo'] },
      { type: 'dm', members: ['a1', 'a2', 'a3'] },
      { type: 'dm', members: ['same', 'same'] },
    ]) {
      const r = await api(t.url, 'POST', '/v1/threads', { key: sk, body });
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.match(r.body.detail, /exactly two/);
    }
    const withCaller = await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      user: 'x1',
      body: { type: 'dm', members: ['x2', 'x3'] },
    });
    assert.equal(withCaller.status, 400, 'the caller counts as a member');
  });

  test('lists threads by latest activity with cursor pagination; a user sees only threads they are a member of', async () => {
    const user = 'lister';
    for (const id of ['l1', 'l2', 'l3', 'l4']) {
      const r = await api(t.url, 'POST', '/v1/threads', { key: sk, user, body: { id, type: 'group' } });
      assert.equal(r.status, 201);
    }
    await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      user: 'someone-else',
      body: { id: 'l-not-mine', type: 'group' },
    });
    // Activity moves l1 to the front.
    assert.equal(
      (await api(t.url, 'POST', '/v1/threads/l1/messages', { key: sk, user, body: { body: 'bump' } })).status,
      201,
    );

    const p1 = await api(t.url, 'GET', '/v1/threads?limit=2', { key: sk, user });
    assert.equal(p1.status, 200);
    assert.deepEqual(
      p1.body.data.map((x: any) => x.id),
      ['l1', 'l4'],
    );
    assert.equal(typeof p1.body.next_cursor, 'string');
    const p2 = await api(t.url, 'GET', `/v1/threads?limit=2&cursor=${encodeURIComponent(p1.body.next_cursor)}`, {
      key: sk,
      user,
    });
    assert.deepEqual(
      p2.body.data.map((x: any) => x.id),
      ['l3', 'l2'],
    );
    assert.equal(p2.body.next_cursor, null);

    // A publishable key acting as the user sees the same.
    const pk = await api(t.url, 'GET', '/v1/threads?limit=10', {
      key: creds.keys.publishable,
      user,
      signature: sign(creds.signing_secret, user),
    });
    assert.deepEqual(
      pk.body.data.map((x: any) => x.id),
      ['l1', 'l4', 'l3', 'l2'],
    );

    // A secret key without a user sees every thread of the project, in activity order.
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: any = await api(
        t.url,
        'GET',
        `/v1/threads?limit=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
        { key: sk },
      );
      assert.equal(page.status, 200);
      seen.push(...page.body.data.map((x: any) => x.id));
      cursor = page.body.next_cursor;
    } while (cursor);
    assert.equal(new Set(seen).size, seen.length, 'no thread twice across pages');
    for (const id of ['l1', 'l2', 'l3', 'l4', 'l-not-mine', 'room-1']) assert.ok(seen.includes(id), id);
    assert.ok(seen.indexOf('l1') < seen.indexOf('l-not-mine') && seen.indexOf('l-not-mine') < seen.indexOf('l4'));
    const { rows } = await t.db.raw(
      `select count(*)::int as n from threads where project_id = ? and deleted_at is null`,
      [creds.project_id],
    );
    assert.equal(seen.length, rows[0].n);
  });

  test('PATCH updates title, attributes and policies and appends thread.updated', async () => {
    await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      user: 'owner1',
      body: { id: 'patchme', type: 'group', title: 'Old', attributes: { a: 1 } },
    });
    const before = (await events('patchme')).length;
    const r = await api(t.url, 'PATCH', '/v1/threads/patchme', {
      key: sk,
      user: 'owner1',
      body: { title: 'New', attributes: { b: 2 }, policies: { read: 'public' } },
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.title, 'New');
    assert.deepEqual(r.body.attributes, { b: 2 });
    assert.deepEqual(r.body.policies, { read: 'public', write: 'members' });
    assert.equal(r.body.last_seq, before + 1);
    const log = await events('patchme');
    const last = log[log.length - 1];
    assert.equal(last.type, 'thread.updated');
    assert.equal(last.actor, 'owner1');
    assert.deepEqual(last.data, { title: 'New', attributes: { b: 2 }, policies: { read: 'public', write: 'members' } });
    const got = await api(t.url, 'GET', '/v1/threads/patchme', { key: sk });
    assert.equal(got.body.title, 'New');
    assert.equal(got.body.last_seq, r.body.last_seq);

    const clear = await api(t.url, 'PATCH', '/v1/threads/patchme', { key: sk, body: { title: null } });
    assert.equal(clear.status, 200);
    assert.equal(clear.body.title, null);
    const empty = await api(t.url, 'PATCH', '/v1/threads/patchme', { key: sk, body: {} });
    assert.equal(empty.status, 400, 'an empty patch says what to send');
  });

  test('DELETE soft-deletes: the thread then answers 404 everywhere, and the log keeps its history', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, user: 'del-owner', body: { id: 'doomed', type: 'group' } });
    await api(t.url, 'POST', '/v1/threads/doomed/messages', {
      key: sk,
      user: 'del-owner',
      body: { id: 'm', body: 'bye' },
    });
    const del = await api(t.url, 'DELETE', '/v1/threads/doomed', { key: sk, user: 'del-owner' });
    assert.equal(del.status, 204);
    assert.equal(del.text, '');
    for (const [method, path] of [
      ['GET', '/v1/threads/doomed'],
      ['GET', '/v1/threads/doomed/messages'],
      ['GET', '/v1/threads/doomed/messages/m'],
      ['GET', '/v1/threads/doomed/events'],
      ['GET', '/v1/threads/doomed/members'],
      ['PATCH', '/v1/threads/doomed'],
      ['DELETE', '/v1/threads/doomed'],
    ]) {
      const r = await api(t.url, method, path, { key: sk, body: method === 'PATCH' ? { title: 'x' } : undefined });
      assert.equal(r.status, 404, `${method} ${path}`);
    }
    const post = await api(t.url, 'POST', '/v1/threads/doomed/messages', {
      key: sk,
      user: 'del-owner',
      body: { body: 'again?' },
    });
    assert.equal(post.status, 404, 'posting to a deleted thread does not resurrect it');
    const list = await api(t.url, 'GET', '/v1/threads?limit=200', { key: sk, user: 'del-owner' });
    assert.ok(!list.body.data.some((x: any) => x.id === 'doomed'));
    const log = await events('doomed');
    assert.deepEqual(
      log.map((e) => e.type),
      ['thread.created', 'member.added', 'message.created', 'thread.deleted'],
    );
    const { rows } = await t.db.raw(
      `select count(*)::int as n from messages where project_id = ? and thread_id = 'doomed'`,
      [creds.project_id],
    );
    assert.equal(rows[0].n, 1, 'messages stay stored');
  });

  test('posting the first message to an unknown thread id creates it: thread.created, member.added, message.created', async () => {
    const r = await api(t.url, 'POST', '/v1/threads/fresh-by-post/messages', {
      key: sk,
      user: 'poster',
      body: { id: 'first', body: { text: 'hi' } },
    });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.seq, 3);
    const log = await events('fresh-by-post');
    assert.deepEqual(
      log.map((e) => [e.seq, e.type]),
      [
        [1, 'thread.created'],
        [2, 'member.added'],
        [3, 'message.created'],
      ],
    );
    assert.deepEqual(log[1].data, { user_id: 'poster', role: 'owner' });
    const thread = await api(t.url, 'GET', '/v1/threads/fresh-by-post', { key: sk });
    assert.equal(thread.body.type, 'group');
    assert.equal(thread.body.last_seq, 3);
    const members = await api(t.url, 'GET', '/v1/threads/fresh-by-post/members', { key: sk });
    assert.deepEqual(
      members.body.data.map((m: any) => [m.user_id, m.role]),
      [['poster', 'owner']],
    );

    // The same through a publishable key with a signed user.
    const pk = await api(t.url, 'POST', '/v1/threads/fresh-by-pk/messages', {
      key: creds.keys.publishable,
      user: 'pk-user',
      signature: sign(creds.signing_secret, 'pk-user'),
      body: { body: 'hello' },
    });
    assert.equal(pk.status, 201, pk.text);
    assert.deepEqual(
      (await events('fresh-by-pk')).map((e) => e.type),
      ['thread.created', 'member.added', 'message.created'],
    );
  });
});

describe('threads under concurrency and after deletion', () => {
  let t: TestContext;
  let creds: ProjectCredentials;
  before(async () => {
    t = await startTestApp();
    creds = await t.project();
  });
  after(() => t.stop());

  test('a dm deleted and created again gives a new dm thread', async () => {
    const sk = creds.keys.secret;
    const first = await api(t.url, 'POST', '/v1/threads', { key: sk, body: { type: 'dm', members: ['p1', 'p2'] } });
    assert.equal(first.status, 201);
    assert.equal((await api(t.url, 'DELETE', `/v1/threads/${first.body.id}`, { key: sk })).status, 204);
    const again = await api(t.url, 'POST', '/v1/threads', { key: sk, body: { type: 'dm', members: ['p2', 'p1'] } });
    assert.equal(again.status, 201, again.text);
    assert.notEqual(again.body.id, first.body.id);
    const repeat = await api(t.url, 'POST', '/v1/threads', { key: sk, body: { type: 'dm', members: ['p1', 'p2'] } });
    assert.equal(repeat.status, 200);
    assert.equal(repeat.body.id, again.body.id);
  });

  test('concurrent creations of the same dm give one thread', async () => {
    const sk = creds.keys.secret;
    const rs = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        api(t.url, 'POST', '/v1/threads', {
          key: sk,
          user: i % 2 ? 'q1' : 'q2',
          body: { type: 'dm', members: [i % 2 ? 'q2' : 'q1'] },
        }),
      ),
    );
    assert.deepEqual(
      rs.map((r) => r.status).sort(),
      [200, 200, 200, 200, 200, 200, 200, 201],
      rs.map((r) => r.text).join('\n'),
    );
    assert.equal(new Set(rs.map((r) => r.body.id)).size, 1);
  });

  test('concurrent first posts to one unknown thread id create it once and append every message', async () => {
    const sk = creds.keys.secret;
    const rs = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        api(t.url, 'POST', '/v1/threads/born-busy/messages', { key: sk, user: 'same-user', body: { body: i } }),
      ),
    );
    assert.deepEqual(
      rs.map((r) => r.status),
      rs.map(() => 201),
      rs.map((r) => r.text).join('\n'),
    );
    const { rows } = await t.db.raw(
      `select type, count(*)::int as n from events where project_id = ? and thread_id = 'born-busy' group by type order by type`,
      [creds.project_id],
    );
    assert.deepEqual(rows, [
      { type: 'member.added', n: 1 },
      { type: 'message.created', n: 10 },
      { type: 'thread.created', n: 1 },
    ]);
    assert.deepEqual(
      rs.map((r) => r.body.seq).sort((a, b) => a - b),
      Array.from({ length: 10 }, (_, i) => i + 3),
    );
  });

  test('threads with the same activity time page without loss or repeats (the id breaks ties)', async () => {
    const sk = creds.keys.secret;
    const rs = await Promise.all(
      Array.from({ length: 9 }, (_, i) =>
        api(t.url, 'POST', '/v1/threads', { key: sk, user: 'tied', body: { id: `tie-${i}`, type: 'group' } }),
      ),
    );
    assert.ok(rs.every((r) => r.status === 201));
    // Threads committed in one group share now(); make every one tie so the id must break ties.
    const tied = await t
      .db('threads')
      .where({ project_id: creds.project_id })
      .andWhere('id', 'like', 'tie-%')
      .update({ last_activity_at: '2026-01-01T00:00:00.123456Z' });
    assert.equal(tied, 9);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: any = await api(
        t.url,
        'GET',
        `/v1/threads?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
        { key: sk, user: 'tied' },
      );
      seen.push(...page.body.data.map((x: any) => x.id));
      cursor = page.body.next_cursor;
    } while (cursor);
    assert.deepEqual(
      [...seen].sort(),
      Array.from({ length: 9 }, (_, i) => `tie-${i}`),
    );
  });

  test('concurrent creations with the same client thread id: one 201, the rest 409', async () => {
    const sk = creds.keys.secret;
    const rs = await Promise.all(
      Array.from({ length: 6 }, () =>
        api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'contested', type: 'group' } }),
      ),
    );
    assert.deepEqual(rs.map((r) => r.status).sort(), [201, 409, 409, 409, 409, 409]);
  });
});
