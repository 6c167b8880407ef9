import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { signUserId } from '../src/modules/keys/key-auth-service';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type TestContext } from './helpers/app';
import { openSse, openWs } from './realtime-clients';

const wsUrl = (base: string) => `${base.replace('http', 'ws')}/v1/ws`;

describe('access follows every change, live (WebSocket and SSE)', () => {
  let t: TestContext;
  let creds: ProjectCredentials;
  let sk: string;
  let user: (id: string) => Record<string, string>;

  before(async () => {
    t = await startTestApp();
    creds = await t.project();
    sk = creds.keys.secret;
    user = (id) => ({
      authorization: `Bearer ${creds.keys.publishable}`,
      'x-user-id': id,
      'x-user-signature': signUserId(creds.signing_secret, id),
    });
  });
  after(() => t.stop());

  /** One SSE tail and one WebSocket subscription of `threadId` as `userId`, both replayed and live. */
  async function watch(threadId: string, userId: string) {
    const sse = await openSse(`${t.url}/v1/threads/${threadId}/tail?after_seq=0`, user(userId));
    assert.equal(sse.status, 200);
    await sse.waitFor(() => sse.messages.find((m) => m.event === 'ready'), 'sse ready');
    const ws = await openWs(wsUrl(t.url), user(userId));
    ws.send({ type: 'subscribe', thread_id: threadId, after_seq: 0 });
    await ws.waitFor((m) => m.type === 'ready' && m.thread_id === threadId, 'ws ready');
    return { sse, ws };
  }

  async function post(threadId: string, text: string) {
    const r = await api(t.url, 'POST', `/v1/threads/${threadId}/messages`, {
      key: sk,
      user: 'own',
      body: { body: { text } },
    });
    assert.equal(r.status, 201, r.text);
  }

  async function assertEnded(threadId: string, w: Awaited<ReturnType<typeof watch>>, lastType: string) {
    await w.sse.waitForEnd();
    const closed = w.sse.messages.find((m) => m.event === 'closed');
    assert.ok(closed, 'the SSE stream ends with event: closed');
    assert.deepEqual(JSON.parse(closed.data), { reason: 'removed' });
    assert.equal(w.sse.events().at(-1).type, lastType);
    assert.deepEqual(
      w.sse
        .events()
        .filter((e: any) => e.type === 'message.created')
        .map((e: any) => e.data.body.text),
      ['before'],
    );
    const unsub = await w.ws.waitFor((m) => m.type === 'unsubscribed' && m.thread_id === threadId, 'ws unsubscribed');
    assert.equal(unsub.reason, 'removed');
    assert.equal(w.ws.eventsOf(threadId).at(-1).type, lastType);
    assert.deepEqual(
      w.ws
        .eventsOf(threadId)
        .filter((e: any) => e.type === 'message.created')
        .map((e: any) => e.data.body.text),
      ['before'],
    );
    w.ws.close();
  }

  test('a demoted admin of an owners-only thread stops receiving it (role change as member.added)', async () => {
    const created = await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      user: 'own',
      body: {
        id: 'owners-only',
        type: 'group',
        policies: { read: 'owners' },
        members: [{ user_id: 'adm', role: 'admin' }],
      },
    });
    assert.equal(created.status, 201, created.text);
    await post('owners-only', 'before');
    const w = await watch('owners-only', 'adm');
    const demote = await api(t.url, 'PUT', '/v1/threads/owners-only/members/adm', {
      headers: user('own'),
      body: { role: 'member' },
    });
    assert.equal(demote.status, 200, demote.text);
    await post('owners-only', 'after the demotion');
    await assertEnded('owners-only', w, 'member.added');
    // And a new subscription is refused.
    const again = await api(t.url, 'GET', '/v1/threads/owners-only/tail', { headers: user('adm') });
    assert.equal(again.status, 403);
  });

  test('a policy change that removes read access ends the subscription', async () => {
    await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      user: 'own',
      body: { id: 'tightened', type: 'group', members: ['mem'] },
    });
    await post('tightened', 'before');
    const w = await watch('tightened', 'mem');
    const tighten = await api(t.url, 'PATCH', '/v1/threads/tightened', {
      headers: user('own'),
      body: { policies: { read: 'owners' } },
    });
    assert.equal(tighten.status, 200, tighten.text);
    await post('tightened', 'after the policy change');
    await assertEnded('tightened', w, 'thread.updated');
  });

  test('a role change that keeps read access keeps the subscription live', async () => {
    await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      user: 'own',
      body: { id: 'kept', type: 'group', members: ['kim'] },
    });
    await post('kept', 'before');
    const w = await watch('kept', 'kim');
    const promote = await api(t.url, 'PUT', '/v1/threads/kept/members/kim', {
      headers: user('own'),
      body: { role: 'admin' },
    });
    assert.equal(promote.status, 200, promote.text);
    await post('kept', 'after');
    const texts = (events: any[]) =>
      events.filter((e) => e.type === 'message.created').map((e) => e.data.body.text as string);
    await w.sse.waitFor(() => (texts(w.sse.events()).includes('after') ? true : undefined), 'sse: after');
    await w.ws.waitFor(
      (m) => m.type === 'event' && m.thread_id === 'kept' && m.event.data?.body?.text === 'after',
      'ws: after',
    );
    assert.equal(w.sse.ended, false);
    assert.equal(
      w.ws.messages.some((m) => m.type === 'unsubscribed'),
      false,
    );
    w.sse.close();
    w.ws.close();
  });
});
