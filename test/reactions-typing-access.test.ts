import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { signUserId } from '../src/modules/keys/key-auth-service';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type TestContext } from './helpers/app';
import { openWs } from './realtime-clients';

const wsUrl = (base: string) => `${base.replace('http', 'ws')}/v1/ws`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('reactions and typing need write access; reactions bounded; typing throttled', () => {
  let t: TestContext;
  let creds: ProjectCredentials;
  let sk: string;
  let user: (id: string) => Record<string, string>;

  before(async () => {
    t = await startTestApp({ MAX_REACTIONS_PER_MESSAGE: '3' });
    creds = await t.project();
    sk = creds.keys.secret;
    user = (id) => ({
      authorization: `Bearer ${creds.keys.publishable}`,
      'x-user-id': id,
      'x-user-signature': signUserId(creds.signing_secret, id),
    });
    // Members may read "announce", only owners/admins write; anyone may read "open", members write.
    for (const body of [
      { id: 'announce', type: 'channel', policies: { read: 'members', write: 'owners' }, members: ['reader'] },
      { id: 'open', type: 'channel', policies: { read: 'public', write: 'members' }, members: ['reader'] },
    ]) {
      const r = await api(t.url, 'POST', '/v1/threads', { key: sk, user: 'own', body });
      assert.equal(r.status, 201, r.text);
      const m = await api(t.url, 'POST', `/v1/threads/${body.id}/messages`, {
        key: sk,
        user: 'own',
        body: { id: 'm1', body: { text: 'hello' } },
      });
      assert.equal(m.status, 201, m.text);
    }
  });
  after(() => t.stop());

  const react = (who: string, thread: string, reaction: string, method = 'PUT') =>
    api(t.url, method, `/v1/threads/${thread}/messages/m1/reactions/${encodeURIComponent(reaction)}`, {
      headers: user(who),
    });

  test('a read-only member and a non-member of a members-write thread cannot react', async () => {
    const ro = await react('reader', 'announce', 'thumbs');
    assert.equal(ro.status, 403, ro.text);
    assert.match(ro.headers.get('content-type') ?? '', /problem\+json/);
    const outsider = await react('outsider', 'open', 'thumbs');
    assert.equal(outsider.status, 403, outsider.text);
    // Writers still can; nothing of the refused ones reached the log.
    assert.equal((await react('own', 'announce', 'thumbs')).status, 200);
    assert.equal((await react('reader', 'open', 'thumbs')).status, 200);
    const msg = await api(t.url, 'GET', '/v1/threads/announce/messages/m1', { key: sk });
    assert.deepEqual(msg.body.reactions, { thumbs: 1 });
    const events = await t.db('events').select('actor').where({ project_id: creds.project_id, type: 'reaction.added' });
    assert.deepEqual(events.map((e) => e.actor).sort(), ['own', 'reader']);
  });

  test('distinct reactions per message are bounded by MAX_REACTIONS_PER_MESSAGE', async () => {
    await api(t.url, 'POST', '/v1/threads/bounded/messages', {
      key: sk,
      user: 'own',
      body: { id: 'm1', body: { text: 'react to me' } },
    });
    for (const r of ['a', 'b', 'c']) assert.equal((await react('own', 'bounded', r)).status, 200);
    const fourth = await react('own', 'bounded', 'd');
    assert.equal(fourth.status, 422, fourth.text);
    assert.match(fourth.body.detail, /at most 3 distinct reactions/);
    // An existing kind can still be added by someone else; removing one frees a slot.
    await api(t.url, 'PUT', '/v1/threads/bounded/members/other', { key: sk });
    assert.equal((await react('other', 'bounded', 'a')).status, 200);
    assert.equal((await react('own', 'bounded', 'c', 'DELETE')).status, 200);
    assert.equal((await react('own', 'bounded', 'd')).status, 200);
    const msg = await api(t.url, 'GET', '/v1/threads/bounded/messages/m1', { key: sk });
    assert.deepEqual(msg.body.reactions, { a: 2, b: 1, d: 1 });
  });

  test('typing over WebSocket needs write access', async () => {
    const watcher = await openWs(wsUrl(t.url), user('own'));
    watcher.send({ type: 'subscribe', thread_id: 'announce' });
    await watcher.waitFor((m) => m.type === 'ready', 'watcher ready');
    const reader = await openWs(wsUrl(t.url), user('reader'));
    reader.send({ type: 'subscribe', thread_id: 'announce' });
    await reader.waitFor((m) => m.type === 'ready', 'reader ready');
    reader.send({ type: 'typing', thread_id: 'announce', state: 'start', id: 'ty' });
    const err = await reader.waitFor((m) => m.type === 'error' && m.id === 'ty', 'typing refused');
    assert.equal(err.code, 'forbidden');
    // A writer's typing does go out (so the watcher would have seen the reader's).
    await api(t.url, 'PUT', '/v1/threads/announce/members/boss', { key: sk, body: { role: 'admin' } });
    const boss = await openWs(wsUrl(t.url), user('boss'));
    boss.send({ type: 'subscribe', thread_id: 'announce' });
    await boss.waitFor((m) => m.type === 'ready', 'boss ready');
    boss.send({ type: 'typing', thread_id: 'announce', state: 'start' });
    await watcher.waitFor((m) => m.type === 'typing' && m.user_id === 'boss', 'boss typing');
    assert.equal(
      watcher.messages.some((m) => m.type === 'typing' && m.user_id === 'reader'),
      false,
    );
    for (const c of [watcher, reader, boss]) c.close();
  });

  test('alternating start/stop does not reset the typing throttle', async () => {
    const watcher = await openWs(wsUrl(t.url), user('reader'));
    watcher.send({ type: 'subscribe', thread_id: 'open' });
    await watcher.waitFor((m) => m.type === 'ready', 'watcher ready');
    const typist = await openWs(wsUrl(t.url), user('own'));
    typist.send({ type: 'subscribe', thread_id: 'open' });
    await typist.waitFor((m) => m.type === 'ready', 'typist ready');
    const started = Date.now();
    for (let i = 0; i < 10; i++) {
      typist.send({ type: 'typing', thread_id: 'open', state: 'start' });
      typist.send({ type: 'typing', thread_id: 'open', state: 'stop' });
    }
    typist.send({ type: 'ping', id: 'done' });
    await typist.waitFor((m) => m.type === 'pong' && m.id === 'done', 'pong');
    await watcher.waitFor((m) => m.type === 'typing' && m.user_id === 'own' && m.state === 'stop', 'a stop');
    await sleep(300);
    // One start per second at most, however many stops come between (10 without the fix).
    const allowed = 1 + Math.floor((Date.now() - started) / 1000);
    const seen = watcher.messages.filter((m) => m.type === 'typing' && m.user_id === 'own').map((m) => m.state);
    const starts = seen.filter((s) => s === 'start').length;
    assert.ok(starts >= 1 && starts <= allowed, `${starts} starts went out (at most ${allowed}): ${seen.join(',')}`);
    assert.ok(seen.length <= 2 * starts, `a stop only follows a start: ${seen.join(',')}`);
    assert.equal(seen[0], 'start');
    watcher.close();
    typist.close();
  });
});
