import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type TestContext } from './helpers/app';

interface Event {
  seq: number;
  type: string;
  thread_id: string;
  message_id: string | null;
  actor: string | null;
  data: any;
  created_at: string;
}

interface ReplayedMessage {
  id: string;
  thread_id: string;
  author: string;
  seq: number;
  body: unknown;
  version: number;
  created_at: string;
  edited_at: string | null;
  deleted: boolean;
  reactions: Record<string, number>;
  reply_to: string | null;
}

/** Rebuilds a thread's state from its log alone: what a client doing sync or export would do. */
function replay(events: Event[]) {
  const thread: any = {};
  const members = new Map<string, string>();
  const messages = new Map<string, ReplayedMessage>();
  const reactors = new Map<string, Map<string, Set<string>>>();
  let lastSeq = 0;
  for (const e of events) {
    assert.equal(e.seq, lastSeq + 1, 'the log has no gaps');
    lastSeq = e.seq;
    const d = e.data;
    switch (e.type) {
      case 'thread.created':
        Object.assign(thread, {
          id: d.id,
          type: d.type,
          title: d.title,
          attributes: d.attributes,
          policies: d.policies,
          created_by: d.created_by,
          deleted: false,
        });
        break;
      case 'thread.updated':
        for (const k of ['title', 'attributes', 'policies']) if (k in d) thread[k] = d[k];
        break;
      case 'thread.deleted':
        thread.deleted = true;
        break;
      case 'member.added':
        members.set(d.user_id, d.role);
        break;
      case 'member.removed':
        members.delete(d.user_id);
        break;
      case 'message.created':
        messages.set(d.id, {
          id: d.id,
          thread_id: e.thread_id,
          author: d.author,
          seq: e.seq,
          body: d.body,
          version: d.version,
          created_at: e.created_at,
          edited_at: null,
          deleted: false,
          reactions: {},
          // The event carries reply_to only when the message is a reply.
          reply_to: d.reply_to ?? null,
        });
        break;
      case 'message.edited': {
        const m = messages.get(d.id)!;
        Object.assign(m, { body: d.body, version: d.version, edited_at: e.created_at });
        break;
      }
      case 'message.deleted': {
        const m = messages.get(d.id)!;
        Object.assign(m, { body: null, version: d.version, edited_at: e.created_at, deleted: true });
        break;
      }
      case 'reaction.added':
      case 'reaction.removed': {
        const byReaction = reactors.get(d.message_id) ?? new Map<string, Set<string>>();
        reactors.set(d.message_id, byReaction);
        const users = byReaction.get(d.reaction) ?? new Set<string>();
        byReaction.set(d.reaction, users);
        if (e.type === 'reaction.added') users.add(d.user_id);
        else users.delete(d.user_id);
        const m = messages.get(d.message_id)!;
        m.reactions = Object.fromEntries([...byReaction].filter(([, u]) => u.size > 0).map(([r, u]) => [r, u.size]));
        break;
      }
      default:
        assert.fail(`unknown event type ${e.type}`);
    }
  }
  return { thread, members, messages, lastSeq };
}

describe('thread log (events) and replay', () => {
  let t: TestContext;
  let p: ProjectCredentials;
  let sk: string;
  const as = (user: string | undefined, method: string, path: string, body?: unknown) =>
    api(t.url, method, path, { key: sk, user, body });

  /** The whole log through the events API, `pageSize` at a time. */
  async function readLog(threadId: string, pageSize: number): Promise<Event[]> {
    const all: Event[] = [];
    for (let after = 0; ;) {
      const r = await as(undefined, 'GET', `/v1/threads/${threadId}/events?after_seq=${after}&limit=${pageSize}`);
      assert.equal(r.status, 200, r.text);
      all.push(...r.body.data);
      if (!r.body.has_more) return all;
      assert.equal(r.body.data.length, pageSize);
      after = r.body.data[r.body.data.length - 1].seq;
    }
  }

  before(async () => {
    t = await startTestApp();
    p = await t.project();
    sk = p.keys.secret;
  });
  after(() => t.stop());

  test('GET …/events pages by after_seq and limit with has_more exactly right at the edges', async () => {
    await as('e', 'POST', '/v1/threads', { id: 'ten', type: 'group' }); // seqs 1, 2
    for (let i = 0; i < 8; i++) await as('e', 'POST', '/v1/threads/ten/messages', { id: `m${i}`, body: i }); // 3..10
    const page = (q: string) => as(undefined, 'GET', `/v1/threads/ten/events?${q}`);
    const seqs = (r: any) => r.body.data.map((e: Event) => e.seq);

    const all = await page('');
    assert.deepEqual(seqs(all), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.equal(all.body.has_more, false);
    assert.deepEqual(all.body.data[0], {
      ...all.body.data[0],
      type: 'thread.created',
      thread_id: 'ten',
      message_id: null,
      actor: 'e',
    });
    assert.deepEqual(all.body.data[2], {
      ...all.body.data[2],
      type: 'message.created',
      message_id: 'm0',
      actor: 'e',
      data: { id: 'm0', author: 'e', body: 0, version: 1 },
    });
    assert.match(all.body.data[0].created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);

    const exact = await page('after_seq=0&limit=10');
    assert.equal(exact.body.has_more, false, 'a page that ends exactly at the last event has no more');
    const short = await page('after_seq=0&limit=9');
    assert.deepEqual(seqs(short), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(short.body.has_more, true);
    const last = await page('after_seq=9&limit=1');
    assert.deepEqual(seqs(last), [10]);
    assert.equal(last.body.has_more, false);
    const middle = await page('after_seq=4&limit=3');
    assert.deepEqual(seqs(middle), [5, 6, 7]);
    assert.equal(middle.body.has_more, true);
    const end = await page('after_seq=10');
    assert.deepEqual(end.body, { data: [], has_more: false });
    const beyond = await page('after_seq=1000');
    assert.deepEqual(beyond.body, { data: [], has_more: false });
  });

  test('replaying the log from seq 1 rebuilds the thread, its members and every message as the API shows them', async () => {
    // A busy life: members come and go, messages are batched, edited, deleted, reacted to.
    await as('owner', 'POST', '/v1/threads', {
      id: 'story',
      type: 'group',
      title: 'Story',
      attributes: { v: 1 },
      members: ['ann', { user_id: 'ben', role: 'admin' }],
    });
    await as('ann', 'POST', '/v1/threads/story/messages', { id: 'hello', body: { text: 'hello' } });
    await api(t.url, 'POST', '/v1/threads/story/messages', {
      key: sk,
      user: 'ben',
      raw: 'plain text\nwith a newline',
      contentType: 'text/plain',
    });
    await as('ben', 'POST', '/v1/threads/story/messages/batch', {
      messages: Array.from({ length: 12 }, (_, i) => ({ id: `b${i}`, body: { i, list: [i, { nested: true }] } })),
    });
    await as('ann', 'PATCH', '/v1/threads/story/messages/hello', { body: { text: 'hello, edited' } });
    await as('ann', 'PATCH', '/v1/threads/story/messages/hello', { body: 'and again' });
    await as('ben', 'DELETE', '/v1/threads/story/messages/b3');
    await as(undefined, 'DELETE', '/v1/threads/story/messages/b4'); // a secret key moderates
    for (const [user, reaction] of [
      ['ann', 'like'],
      ['ben', 'like'],
      ['ben', 'like'], // twice counts once
      ['owner', '🎉'],
      ['ann', 'heart'],
    ]) {
      assert.equal(
        (await as(user, 'PUT', `/v1/threads/story/messages/b0/reactions/${encodeURIComponent(reaction)}`)).status,
        200,
      );
    }
    await as('ann', 'DELETE', '/v1/threads/story/messages/b0/reactions/heart');
    await as('ann', 'DELETE', '/v1/threads/story/messages/b0/reactions/heart'); // again: no event
    await as('ben', 'PUT', '/v1/threads/story/messages/hello/reactions/ok');
    await as('owner', 'PUT', '/v1/threads/story/members/cat');
    await as('owner', 'PUT', '/v1/threads/story/members/cat', { role: 'admin' });
    await as('owner', 'DELETE', '/v1/threads/story/members/ann');
    await as('owner', 'PATCH', '/v1/threads/story', { title: 'Story, retitled', policies: { read: 'public' } });
    await as('owner', 'PATCH', '/v1/threads/story', { attributes: { v: 2, tags: ['a'] } });
    await as('cat', 'POST', '/v1/threads/story/messages', { id: 'late', body: null });

    const log = await readLog('story', 7);
    const state = replay(log);

    const thread = await as(undefined, 'GET', '/v1/threads/story');
    assert.equal(state.lastSeq, thread.body.last_seq);
    for (const k of ['id', 'type', 'title', 'attributes', 'policies', 'created_by', 'deleted'])
      assert.deepEqual(state.thread[k], thread.body[k], k);

    const members = await as(undefined, 'GET', '/v1/threads/story/members');
    assert.deepEqual([...state.members].sort(), members.body.data.map((m: any) => [m.user_id, m.role]).sort());

    const fromApi: any[] = [];
    for (let after = 0; ;) {
      const page = await as(
        undefined,
        'GET',
        `/v1/threads/story/messages?include_deleted=true&limit=5&after_seq=${after}`,
      );
      fromApi.push(...page.body.data);
      if (!page.body.has_more_after) break;
      after = page.body.data[page.body.data.length - 1].seq;
    }
    const replayed = [...state.messages.values()].sort((a, b) => a.seq - b.seq);
    assert.equal(replayed.length, 15);
    assert.deepEqual(replayed, fromApi);
    // Spot checks that the comparison is about something.
    const b0 = state.messages.get('b0')!;
    assert.deepEqual(b0.reactions, { like: 2, '🎉': 1 });
    assert.equal(state.messages.get('hello')!.version, 3);
    assert.equal(state.messages.get('b3')!.deleted, true);
    assert.ok(replayed.some((m) => (m.body as any)?.text === 'plain text\nwith a newline'));
    const reactionEvents = log.filter((e) => e.type.startsWith('reaction.'));
    assert.deepEqual(
      reactionEvents.map((e) => [e.type, e.data.reaction, e.data.user_id, e.message_id]),
      [
        ['reaction.added', 'like', 'ann', 'b0'],
        ['reaction.added', 'like', 'ben', 'b0'],
        ['reaction.added', '🎉', 'owner', 'b0'],
        ['reaction.added', 'heart', 'ann', 'b0'],
        ['reaction.removed', 'heart', 'ann', 'b0'],
        ['reaction.added', 'ok', 'ben', 'hello'],
      ],
    );
  });

  test('message versions equal the message events of the log', async () => {
    const log = await readLog('story', 1000);
    const versions = await as(undefined, 'GET', '/v1/threads/story/messages/hello/versions');
    assert.deepEqual(
      versions.body.data.map((v: any) => [v.version, v.seq, v.deleted, v.body]),
      log
        .filter((e) => e.message_id === 'hello' && e.type.startsWith('message.'))
        .map((e) => [e.data.version, e.seq, e.type === 'message.deleted', e.data.body ?? null]),
    );
  });

  test('a deleted thread keeps its log in the database, ending with thread.deleted', async () => {
    await as('z', 'POST', '/v1/threads', { id: 'gone', type: 'group' });
    await as('z', 'POST', '/v1/threads/gone/messages', { body: 'x' });
    await as('z', 'DELETE', '/v1/threads/gone');
    const rows = await t
      .db('events')
      .select('seq', 'type', 'data', 'thread_id', 'actor', 'message_id', 'created_at')
      .where({ project_id: p.project_id, thread_id: 'gone' })
      .orderBy('seq');
    const state = replay(rows as Event[]);
    assert.equal(state.thread.deleted, true);
    assert.equal(state.messages.size, 1);
  });
});
