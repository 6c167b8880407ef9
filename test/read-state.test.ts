import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { signUserId } from '../src/modules/keys/key-auth-service';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type TestContext } from './helpers/app';

describe('read state: read marks and unread counts', () => {
  let t: TestContext;
  let creds: ProjectCredentials;
  let sk: string;
  let user: (id: string) => Record<string, string>;

  before(async () => {
    t = await startTestApp({ RATE_LIMIT_ENABLED: 'false' });
    creds = await t.project();
    sk = creds.keys.secret;
    user = (id) => ({
      authorization: `Bearer ${creds.keys.publishable}`,
      'x-user-id': id,
      'x-user-signature': signUserId(creds.signing_secret, id),
    });
  });
  after(() => t.stop());

  const say = async (thread: string, author: string, text: string) => {
    const r = await api(t.url, 'POST', `/v1/threads/${thread}/messages`, {
      headers: user(author),
      body: { body: { text } },
    });
    assert.equal(r.status, 201, r.text);
    return r.body as { id: string; seq: number };
  };
  const unread = async (who: string) => {
    const r = await api(t.url, 'GET', '/v1/me/unread', { headers: user(who) });
    assert.equal(r.status, 200, r.text);
    return r.body as {
      data: Array<{ thread_id: string; unread: number; last_read_seq: number; last_seq: number }>;
      total: number;
    };
  };
  const countsOf = async (who: string) =>
    Object.fromEntries((await unread(who)).data.map((r) => [r.thread_id, r.unread]));

  test('unread counts messages by others past the read mark, not deleted; they follow reads and new messages', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'rs-1', type: 'group', members: ['ann', 'ben'] } });
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'rs-2', type: 'group', members: ['ann', 'ben'] } });
    assert.deepEqual(await countsOf('ann'), { 'rs-1': 0, 'rs-2': 0 });

    const b1 = await say('rs-1', 'ben', 'one');
    await say('rs-1', 'ben', 'two');
    const b3 = await say('rs-1', 'ben', 'three');
    await say('rs-1', 'ann', 'mine'); // own messages never count
    await say('rs-2', 'ben', 'elsewhere');
    assert.deepEqual(await countsOf('ann'), { 'rs-1': 3, 'rs-2': 1 });
    assert.deepEqual(await countsOf('ben'), { 'rs-1': 1, 'rs-2': 0 });
    assert.equal((await unread('ann')).total, 4);

    const marked = await api(t.url, 'POST', '/v1/threads/rs-1/read', { headers: user('ann'), body: { seq: b1.seq } });
    assert.equal(marked.status, 200, marked.text);
    assert.deepEqual(marked.body, { thread_id: 'rs-1', user_id: 'ann', last_read_seq: b1.seq, unread: 2 });
    assert.deepEqual(await countsOf('ann'), { 'rs-1': 2, 'rs-2': 1 });

    // Deleting an unread message takes it out of the count.
    assert.equal(
      (await api(t.url, 'DELETE', `/v1/threads/rs-1/messages/${b3.id}`, { headers: user('ben') })).status,
      200,
    );
    assert.deepEqual(await countsOf('ann'), { 'rs-1': 1, 'rs-2': 1 });

    // The mark only moves forward.
    const last = await say('rs-1', 'ben', 'four');
    assert.equal(
      (await api(t.url, 'POST', '/v1/threads/rs-1/read', { headers: user('ann'), body: { seq: last.seq } })).body
        .unread,
      0,
    );
    const back = await api(t.url, 'POST', '/v1/threads/rs-1/read', { headers: user('ann'), body: { seq: 1 } });
    assert.equal(back.status, 200);
    assert.equal(back.body.last_read_seq, last.seq);
    assert.deepEqual(await countsOf('ann'), { 'rs-1': 0, 'rs-2': 1 });
    await say('rs-1', 'ben', 'five');
    assert.deepEqual(await countsOf('ann'), { 'rs-1': 1, 'rs-2': 1 });

    // The thread list carries the same numbers for the calling user.
    const list = await api(t.url, 'GET', '/v1/threads', { headers: user('ann') });
    assert.equal(list.status, 200);
    assert.deepEqual(Object.fromEntries(list.body.data.map((x: any) => [x.id, x.unread])), { 'rs-1': 1, 'rs-2': 1 });
    const asKey = await api(t.url, 'GET', '/v1/threads', { key: sk });
    assert.ok(
      asKey.body.data.every((x: any) => x.unread === undefined),
      'no user, no unread',
    );
  });

  test('read marks are checked: a user, read access, and a seq inside the thread', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'rs-priv', type: 'group', members: ['ann'] } });
    const noUser = await api(t.url, 'POST', '/v1/threads/rs-priv/read', { key: sk, body: { seq: 1 } });
    assert.equal(noUser.status, 400);
    assert.match(noUser.headers.get('content-type') ?? '', /problem\+json/);
    assert.equal((await api(t.url, 'GET', '/v1/me/unread', { key: sk })).status, 400);
    assert.equal(
      (await api(t.url, 'POST', '/v1/threads/rs-priv/read', { headers: user('eve'), body: { seq: 1 } })).status,
      403,
    );
    assert.equal(
      (await api(t.url, 'POST', '/v1/threads/nowhere/read', { headers: user('ann'), body: { seq: 1 } })).status,
      404,
    );
    assert.equal(
      (await api(t.url, 'POST', '/v1/threads/rs-priv/read', { headers: user('ann'), body: { seq: 99 } })).status,
      422,
    );
    assert.equal(
      (await api(t.url, 'POST', '/v1/threads/rs-priv/read', { headers: user('ann'), body: { seq: -1 } })).status,
      400,
    );
    assert.equal(
      (await api(t.url, 'POST', '/v1/threads/rs-priv/read', { headers: user('ann'), body: { seq: 'x' } })).status,
      400,
    );
    assert.equal(
      (await api(t.url, 'POST', '/v1/threads/rs-priv/read', { headers: user('ann'), body: {} })).status,
      400,
    );
    // Another project never sees this thread.
    const other = await t.project('other');
    assert.equal(
      (await api(t.url, 'POST', '/v1/threads/rs-priv/read', { key: other.keys.secret, user: 'ann', body: { seq: 1 } }))
        .status,
      404,
    );
  });
});
