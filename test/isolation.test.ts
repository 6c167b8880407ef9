import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type TestContext } from './helpers/app';

const sign = (secret: string, user: string) => createHmac('sha256', secret).update(user).digest('hex');

describe('tenant isolation', () => {
  let t: TestContext;
  let a: ProjectCredentials;
  let b: ProjectCredentials;
  const snapshot = async (projectId: string) => {
    const [events, messages, members, threads] = await Promise.all([
      t.db('events').where({ project_id: projectId }).orderBy(['thread_id', 'seq']),
      t.db('messages').where({ project_id: projectId }).orderBy(['thread_id', 'seq']),
      t.db('thread_members').where({ project_id: projectId }).orderBy(['thread_id', 'user_id']),
      t.db('threads').where({ project_id: projectId }).orderBy('id'),
    ]);
    return JSON.stringify({ events, messages, members, threads });
  };

  before(async () => {
    t = await startTestApp();
    a = await t.project('A');
    b = await t.project('B');
    // Project B: a public thread with a member, a message and a reaction. The user "shared"
    // also exists in A, which must not matter.
    const skB = b.keys.secret;
    assert.equal(
      (
        await api(t.url, 'POST', '/v1/threads', {
          key: skB,
          user: 'shared',
          body: { id: 'b-thread', type: 'group', members: ['bob'], policies: { read: 'public', write: 'public' } },
        })
      ).status,
      201,
    );
    assert.equal(
      (
        await api(t.url, 'POST', '/v1/threads/b-thread/messages', {
          key: skB,
          user: 'shared',
          body: { id: 'b-msg', body: { text: 'B only' } },
        })
      ).status,
      201,
    );
    assert.equal(
      (await api(t.url, 'PUT', '/v1/threads/b-thread/messages/b-msg/reactions/like', { key: skB, user: 'bob' })).status,
      200,
    );
  });
  after(() => t.stop());

  const routes: Array<[string, string, unknown?]> = [
    ['GET', '/v1/threads/b-thread'],
    ['PATCH', '/v1/threads/b-thread', { title: 'pwned' }],
    ['DELETE', '/v1/threads/b-thread'],
    ['GET', '/v1/threads/b-thread/members'],
    ['PUT', '/v1/threads/b-thread/members/mallory', { role: 'owner' }],
    ['DELETE', '/v1/threads/b-thread/members/bob'],
    ['GET', '/v1/threads/b-thread/messages'],
    ['GET', '/v1/threads/b-thread/messages/b-msg'],
    ['PATCH', '/v1/threads/b-thread/messages/b-msg', { body: { text: 'pwned' } }],
    ['DELETE', '/v1/threads/b-thread/messages/b-msg'],
    ['GET', '/v1/threads/b-thread/messages/b-msg/versions'],
    ['PUT', '/v1/threads/b-thread/messages/b-msg/reactions/like'],
    ['DELETE', '/v1/threads/b-thread/messages/b-msg/reactions/like'],
    ['GET', '/v1/threads/b-thread/events'],
  ];

  test("a secret key of project A gets 404 on every route for project B's thread, and B is unchanged", async () => {
    const before = await snapshot(b.project_id);
    for (const [method, path, body] of routes) {
      for (const user of [undefined, 'shared', 'bob']) {
        const r = await api(t.url, method, path, { key: a.keys.secret, user, body });
        // A reaction without a user is refused before any lookup, for any thread id alike.
        const expected = path.includes('/reactions/') && !user ? 400 : 404;
        assert.equal(r.status, expected, `${method} ${path} as ${user ?? 'no user'}: ${r.text}`);
        assert.equal(r.body.status, expected);
        assert.ok(!r.text.includes('B only'));
      }
    }
    assert.equal(await snapshot(b.project_id), before);
  });

  test("a publishable key of project A with a signed user gets 404 on every route for project B's public thread", async () => {
    const before = await snapshot(b.project_id);
    for (const [method, path, body] of routes) {
      const r = await api(t.url, method, path, {
        key: a.keys.publishable,
        user: 'shared',
        signature: sign(a.signing_secret, 'shared'),
        body,
      });
      assert.equal(r.status, 404, `${method} ${path}: ${r.text}`);
    }
    assert.equal(await snapshot(b.project_id), before);
  });

  test("A's signing secret does not sign users for B's publishable key", async () => {
    const r = await api(t.url, 'GET', '/v1/threads/b-thread', {
      key: b.keys.publishable,
      user: 'shared',
      signature: sign(a.signing_secret, 'shared'),
    });
    assert.equal(r.status, 401);
    const ok = await api(t.url, 'GET', '/v1/threads/b-thread', {
      key: b.keys.publishable,
      user: 'shared',
      signature: sign(b.signing_secret, 'shared'),
    });
    assert.equal(ok.status, 200);
  });

  test("posting to B's thread id with A's key creates A's own thread of that id and leaves B's untouched", async () => {
    const before = await snapshot(b.project_id);
    const r = await api(t.url, 'POST', '/v1/threads/b-thread/messages', {
      key: a.keys.secret,
      user: 'shared',
      body: { id: 'b-msg', body: { text: 'A here' } },
    });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.seq, 3, 'a new thread in A: thread.created, member.added, message.created');
    assert.equal(await snapshot(b.project_id), before);
    const inB = await api(t.url, 'GET', '/v1/threads/b-thread/messages/b-msg', { key: b.keys.secret });
    assert.equal(inB.body.body.text, 'B only');
    const inA = await api(t.url, 'GET', '/v1/threads/b-thread/messages/b-msg', { key: a.keys.secret });
    assert.equal(inA.body.body.text, 'A here');
    const threadsA = await api(t.url, 'POST', '/v1/threads', {
      key: a.keys.secret,
      body: { id: 'a-only', type: 'group' },
    });
    assert.equal(threadsA.status, 201);
    assert.equal((await api(t.url, 'GET', '/v1/threads/a-only', { key: b.keys.secret })).status, 404);
  });

  test("listing threads never shows another project's threads", async () => {
    const list = await api(t.url, 'GET', '/v1/threads?limit=200', { key: b.keys.secret });
    assert.deepEqual(
      list.body.data.map((x: any) => x.id),
      ['b-thread'],
    );
    const listA = await api(t.url, 'GET', '/v1/threads?limit=200', { key: a.keys.secret, user: 'shared' });
    assert.ok(
      listA.body.data.every((x: any) => x.id !== 'b-thread' || x.last_seq === 3),
      'only A’s own b-thread',
    );
  });

  test('the same dm pair in two projects gives two threads', async () => {
    const da = await api(t.url, 'POST', '/v1/threads', {
      key: a.keys.secret,
      body: { type: 'dm', members: ['x', 'y'] },
    });
    const db = await api(t.url, 'POST', '/v1/threads', {
      key: b.keys.secret,
      body: { type: 'dm', members: ['x', 'y'] },
    });
    assert.equal(da.status, 201);
    assert.equal(db.status, 201);
  });
});
