import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { api, startTestApp, type TestContext } from './helpers/app';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';

describe('members and policies', () => {
  let t: TestContext;
  let creds: ProjectCredentials;
  let sk: string;

  /** A request as an end user through the publishable key, with a valid signature. */
  const as = (user: string, method: string, path: string, body?: unknown) =>
    api(t.url, method, path, {
      key: creds.keys.publishable,
      user,
      signature: createHmac('sha256', creds.signing_secret).update(user).digest('hex'),
      body,
    });
  const eventTypes = async (threadId: string) =>
    (
      await t.db('events').select('type').where({ project_id: creds.project_id, thread_id: threadId }).orderBy('seq')
    ).map((e) => e.type as string);

  before(async () => {
    t = await startTestApp();
    creds = await t.project();
    sk = creds.keys.secret;
  });
  after(() => t.stop());

  test('lists members; PUT adds a member (201) or changes a role (200); DELETE removes; each change is logged', async () => {
    await as('own', 'POST', '/v1/threads', { id: 'team', type: 'group', members: ['m1'] });
    const list = await as('own', 'GET', '/v1/threads/team/members');
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.data.map((m: any) => [m.user_id, m.role]).sort(), [
      ['m1', 'member'],
      ['own', 'owner'],
    ]);
    assert.match(list.body.data[0].added_at, /Z$/);

    const add = await as('own', 'PUT', '/v1/threads/team/members/m2');
    assert.equal(add.status, 201, add.text);
    assert.deepEqual([add.body.user_id, add.body.role], ['m2', 'member']);
    const promote = await as('own', 'PUT', '/v1/threads/team/members/m2', { role: 'admin' });
    assert.equal(promote.status, 200);
    assert.equal(promote.body.role, 'admin');
    const same = await as('own', 'PUT', '/v1/threads/team/members/m2', { role: 'admin' });
    assert.equal(same.status, 200);
    const remove = await as('own', 'DELETE', '/v1/threads/team/members/m1');
    assert.equal(remove.status, 204);
    const again = await as('own', 'DELETE', '/v1/threads/team/members/m1');
    assert.equal(again.status, 404, 'removing a non-member');

    const after = await api(t.url, 'GET', '/v1/threads/team/members', { key: sk });
    assert.deepEqual(after.body.data.map((m: any) => [m.user_id, m.role]).sort(), [
      ['m2', 'admin'],
      ['own', 'owner'],
    ]);
    assert.deepEqual(await eventTypes('team'), [
      'thread.created',
      'member.added',
      'member.added',
      'member.added', // m2 joins
      'member.added', // m2 becomes admin
      'member.removed',
    ]);
  });

  test('admins manage members; a plain member cannot add, remove or change roles', async () => {
    await as('boss', 'POST', '/v1/threads', {
      id: 'crew',
      type: 'group',
      members: [{ user_id: 'adm', role: 'admin' }, 'pleb', 'pleb2'],
    });
    assert.equal((await as('adm', 'PUT', '/v1/threads/crew/members/newbie')).status, 201);
    assert.equal((await as('adm', 'DELETE', '/v1/threads/crew/members/newbie')).status, 204);
    const n = (await eventTypes('crew')).length;
    for (const [method, path, body] of [
      ['PUT', '/v1/threads/crew/members/intruder', undefined],
      ['PUT', '/v1/threads/crew/members/pleb2', { role: 'admin' }],
      ['DELETE', '/v1/threads/crew/members/pleb2', undefined],
      ['PATCH', '/v1/threads/crew', { title: 'mine now' }],
      ['DELETE', '/v1/threads/crew', undefined],
    ] as const) {
      const r = await as('pleb', method, path, body);
      assert.equal(r.status, 403, `${method} ${path}`);
      assert.equal(r.body.status, 403);
    }
    assert.equal((await eventTypes('crew')).length, n, 'refusals wrote nothing');
  });

  test('only an owner (or a secret key) can make another owner', async () => {
    await as('founder', 'POST', '/v1/threads', {
      id: 'owned',
      type: 'group',
      members: [{ user_id: 'helper', role: 'admin' }],
    });
    const byAdmin = await as('helper', 'PUT', '/v1/threads/owned/members/helper', { role: 'owner' });
    assert.equal(byAdmin.status, 403, byAdmin.text);
    const byOwner = await as('founder', 'PUT', '/v1/threads/owned/members/helper', { role: 'owner' });
    assert.equal(byOwner.status, 200);
    const bySecret = await api(t.url, 'PUT', '/v1/threads/owned/members/third', { key: sk, body: { role: 'owner' } });
    assert.equal(bySecret.status, 201);
  });

  test('an admin cannot demote or remove an owner', async () => {
    await as('top', 'POST', '/v1/threads', {
      id: 'coup',
      type: 'group',
      members: [{ user_id: 'schemer', role: 'admin' }],
    });
    const n = (await eventTypes('coup')).length;
    assert.equal((await as('schemer', 'PUT', '/v1/threads/coup/members/top', { role: 'member' })).status, 403);
    assert.equal((await as('schemer', 'DELETE', '/v1/threads/coup/members/top')).status, 403);
    assert.equal((await eventTypes('coup')).length, n);
    const members = await api(t.url, 'GET', '/v1/threads/coup/members', { key: sk });
    assert.deepEqual(members.body.data.map((m: any) => [m.user_id, m.role]).sort(), [
      ['schemer', 'admin'],
      ['top', 'owner'],
    ]);
  });

  test('a dm stays between its two users: a third member is refused, a member who left may come back', async () => {
    const dm = await as('d1', 'POST', '/v1/threads', { type: 'dm', members: ['d2'] });
    assert.equal(dm.status, 201);
    const third = await api(t.url, 'PUT', `/v1/threads/${dm.body.id}/members/d3`, { key: sk });
    assert.equal(third.status, 400, third.text);
    assert.equal((await as('d2', 'DELETE', `/v1/threads/${dm.body.id}/members/d2`)).status, 204);
    assert.equal((await api(t.url, 'PUT', `/v1/threads/${dm.body.id}/members/d2`, { key: sk })).status, 201);
    const members = await api(t.url, 'GET', `/v1/threads/${dm.body.id}/members`, { key: sk });
    assert.deepEqual(members.body.data.map((m: any) => m.user_id).sort(), ['d1', 'd2']);
  });

  test('a member can leave a thread without any role', async () => {
    await as('host', 'POST', '/v1/threads', { id: 'leaveable', type: 'group', members: ['guest'] });
    const leave = await as('guest', 'DELETE', '/v1/threads/leaveable/members/guest');
    assert.equal(leave.status, 204);
    const members = await api(t.url, 'GET', '/v1/threads/leaveable/members', { key: sk });
    assert.deepEqual(
      members.body.data.map((m: any) => m.user_id),
      ['host'],
    );
    assert.equal(
      (await as('guest', 'GET', '/v1/threads/leaveable')).status,
      403,
      'a former member of a members thread cannot read it',
    );
  });

  test('a non-member cannot read or write a members thread; a member can', async () => {
    await as('mo', 'POST', '/v1/threads', { id: 'private', type: 'group', members: ['mate'] });
    await as('mo', 'POST', '/v1/threads/private/messages', { body: 'secret stuff' });
    for (const [method, path] of [
      ['GET', '/v1/threads/private'],
      ['GET', '/v1/threads/private/messages'],
      ['GET', '/v1/threads/private/members'],
      ['GET', '/v1/threads/private/events'],
    ]) {
      const r = await as('stranger', method, path);
      assert.equal(r.status, 403, `${method} ${path}`);
      assert.ok(!r.text.includes('secret stuff'));
    }
    const write = await as('stranger', 'POST', '/v1/threads/private/messages', { body: 'let me in' });
    assert.equal(write.status, 403);
    assert.equal((await as('mate', 'GET', '/v1/threads/private/messages')).body.data.length, 1);
    assert.equal((await as('mate', 'POST', '/v1/threads/private/messages', { body: 'hi' })).status, 201);
    const members = await api(t.url, 'GET', '/v1/threads/private/members', { key: sk });
    assert.deepEqual(
      members.body.data.map((m: any) => m.user_id).sort(),
      ['mate', 'mo'],
      'the refused write did not make the stranger a member',
    );
  });

  test('public read lets any user of the project read, but not write under a members write policy', async () => {
    await as('anna', 'POST', '/v1/threads', { id: 'announcements', type: 'channel', policies: { read: 'public' } });
    await as('anna', 'POST', '/v1/threads/announcements/messages', { body: 'news' });
    const read = await as('passer-by', 'GET', '/v1/threads/announcements/messages');
    assert.equal(read.status, 200);
    assert.equal(read.body.data[0].body, 'news');
    assert.equal((await as('passer-by', 'GET', '/v1/threads/announcements')).status, 200);
    assert.equal((await as('passer-by', 'POST', '/v1/threads/announcements/messages', { body: 'me too' })).status, 403);
  });

  test('public write lets any user post', async () => {
    await as('opener', 'POST', '/v1/threads', {
      id: 'wall',
      type: 'channel',
      policies: { read: 'public', write: 'public' },
    });
    const r = await as('anyone', 'POST', '/v1/threads/wall/messages', { body: 'graffiti' });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.author, 'anyone');
  });

  test('owners-only write: members read but cannot post; owners and admins can', async () => {
    await as('chief', 'POST', '/v1/threads', {
      id: 'broadcast',
      type: 'channel',
      members: ['listener', { user_id: 'deputy', role: 'admin' }],
      policies: { write: 'owners' },
    });
    assert.equal((await as('listener', 'POST', '/v1/threads/broadcast/messages', { body: 'can I?' })).status, 403);
    assert.equal((await as('chief', 'POST', '/v1/threads/broadcast/messages', { body: 'yes' })).status, 201);
    assert.equal((await as('deputy', 'POST', '/v1/threads/broadcast/messages', { body: 'me too' })).status, 201);
    assert.equal((await as('listener', 'GET', '/v1/threads/broadcast/messages')).body.data.length, 2);
    // A secret key writes anywhere in its project.
    assert.equal(
      (
        await api(t.url, 'POST', '/v1/threads/broadcast/messages', {
          key: sk,
          user: 'listener',
          body: { body: 'system' },
        })
      ).status,
      201,
    );
  });

  test('owners-only read hides the thread from plain members', async () => {
    await as('keeper', 'POST', '/v1/threads', {
      id: 'vault',
      type: 'group',
      members: ['peon'],
      policies: { read: 'owners', write: 'owners' },
    });
    assert.equal((await as('peon', 'GET', '/v1/threads/vault/messages')).status, 403);
    assert.equal((await as('keeper', 'GET', '/v1/threads/vault/messages')).status, 200);
  });

  test('rejects an edit or delete by someone other than the author; the author and a secret key may', async () => {
    await as('writer', 'POST', '/v1/threads', { id: 'edits', type: 'group', members: ['other'] });
    await as('writer', 'POST', '/v1/threads/edits/messages', { id: 'w1', body: { text: 'mine' } });
    const edit = await as('other', 'PATCH', '/v1/threads/edits/messages/w1', { body: { text: 'hijacked' } });
    assert.equal(edit.status, 403);
    const del = await as('other', 'DELETE', '/v1/threads/edits/messages/w1');
    assert.equal(del.status, 403);
    assert.equal((await as('writer', 'GET', '/v1/threads/edits/messages/w1')).body.body.text, 'mine');

    const own = await as('writer', 'PATCH', '/v1/threads/edits/messages/w1', { body: { text: 'mine, edited' } });
    assert.equal(own.status, 200);
    assert.equal(own.body.version, 2);
    const moderated = await api(t.url, 'PATCH', '/v1/threads/edits/messages/w1', {
      key: sk,
      body: { body: { text: 'moderated' } },
    });
    assert.equal(moderated.status, 200);
    assert.equal(moderated.body.version, 3);
    const removed = await api(t.url, 'DELETE', '/v1/threads/edits/messages/w1', { key: sk, user: 'moderator' });
    assert.equal(removed.status, 200);
    assert.equal(removed.body.deleted, true);
    const editDeleted = await as('writer', 'PATCH', '/v1/threads/edits/messages/w1', { body: { text: 'back' } });
    assert.equal(editDeleted.status, 409, 'a deleted message is not edited');
  });

  test('an author who may no longer write to the thread cannot edit or delete their messages', async () => {
    await as('lead', 'POST', '/v1/threads', {
      id: 'alumni',
      type: 'channel',
      members: ['leaver'],
      policies: { read: 'public' },
    });
    await as('leaver', 'POST', '/v1/threads/alumni/messages', { id: 'old', body: 'before leaving' });
    assert.equal((await as('lead', 'DELETE', '/v1/threads/alumni/members/leaver')).status, 204);
    assert.equal(
      (await as('leaver', 'GET', '/v1/threads/alumni/messages/old')).status,
      200,
      'public read still lets them read',
    );
    assert.equal(
      (await as('leaver', 'PATCH', '/v1/threads/alumni/messages/old', { body: 'after leaving' })).status,
      403,
    );
    assert.equal((await as('leaver', 'DELETE', '/v1/threads/alumni/messages/old')).status, 403);
    assert.equal(
      (await api(t.url, 'DELETE', '/v1/threads/alumni/messages/old', { key: sk })).status,
      200,
      'a secret key still can',
    );
  });

  test('a publishable key cannot post as another author', async () => {
    await as('self', 'POST', '/v1/threads', { id: 'authorship', type: 'group' });
    const r = await as('self', 'POST', '/v1/threads/authorship/messages', { body: 'x', author: 'impostor' });
    assert.equal(r.status, 403);
    const ok = await api(t.url, 'POST', '/v1/threads/authorship/messages', {
      key: sk,
      body: { body: 'x', author: 'bot' },
    });
    assert.equal(ok.status, 201);
    assert.equal(ok.body.author, 'bot');
    const nobody = await api(t.url, 'POST', '/v1/threads/authorship/messages', { key: sk, body: { body: 'x' } });
    assert.equal(nobody.status, 400, 'a message needs an author');
  });
});
