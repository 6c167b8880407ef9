import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { createBackendClient } from '../sdk/src/index';
import { api, startTestApp, type TestContext } from './helpers/app';

/** What chat UIs need beyond seq order: replies, a page around a message, author filter, thread sort. */
describe('chat UI queries', () => {
  let t: TestContext;
  let p: ProjectCredentials;
  let sk: string;
  before(async () => {
    t = await startTestApp();
    p = await t.project();
    sk = p.keys.secret;
  });
  after(() => t.stop());

  const post = (thread: string, user: string, body: Record<string, unknown>) =>
    api(t.url, 'POST', `/v1/threads/${thread}/messages`, { key: sk, user, body });
  const get = (path: string) => api(t.url, 'GET', path, { key: sk });
  const seqs = (page: { data: Array<{ seq: number }> }) => page.data.map((m) => m.seq);
  const isProblem = (r: { status: number; headers: Headers }, status: number, what: string) => {
    assert.equal(r.status, status, what);
    assert.match(r.headers.get('content-type') ?? '', /^application\/problem\+json/, what);
  };

  test('reply_to is stored on the message, in its created event and in pages; ?reply_to= lists the replies', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'rt', type: 'group' } });
    const parent = await post('rt', 'alice', { id: 'q', body: { text: 'lunch?' } });
    assert.equal(parent.status, 201, parent.text);
    assert.equal(parent.body.reply_to, null);
    const r1 = await post('rt', 'bob', { id: 'r1', body: { text: 'yes' }, reply_to: 'q' });
    assert.equal(r1.status, 201, r1.text);
    assert.equal(r1.body.reply_to, 'q');
    await post('rt', 'carol', { id: 'other', body: { text: 'unrelated' } });
    // A batch may reply to an earlier message of the same batch.
    const batch = await api(t.url, 'POST', '/v1/threads/rt/messages/batch', {
      key: sk,
      user: 'carol',
      body: {
        messages: [
          { id: 'r2', body: { text: 'me too' }, reply_to: 'q' },
          { id: 'r2a', body: { text: 'where?' }, reply_to: 'r2' },
        ],
      },
    });
    assert.equal(batch.status, 201, batch.text);
    assert.deepEqual(
      batch.body.data.map((m: any) => m.reply_to),
      ['q', 'r2'],
    );
    const r3 = await post('rt', 'dave', { id: 'r3', body: { text: 'later' }, reply_to: 'q' });

    const one = await get('/v1/threads/rt/messages/r1');
    assert.equal(one.body.reply_to, 'q');
    const events = await get('/v1/threads/rt/events');
    const created = events.body.data.find((e: any) => e.message_id === 'r1');
    assert.equal(created.data.reply_to, 'q', 'the event carries reply_to, so replaying the log rebuilds it');
    const plain = events.body.data.find((e: any) => e.message_id === 'other');
    assert.equal('reply_to' in plain.data, false, 'no reply_to key on messages that reply to nothing');

    // Edits and deletes change neither the reply chain nor what it lists (deleted ones hidden by default).
    await api(t.url, 'PATCH', '/v1/threads/rt/messages/r1', { key: sk, body: { body: { text: 'yes!' } } });
    await api(t.url, 'DELETE', '/v1/threads/rt/messages/r2', { key: sk });
    const replies = await get('/v1/threads/rt/messages?reply_to=q');
    assert.equal(replies.status, 200, replies.text);
    assert.deepEqual(
      replies.body.data.map((m: any) => [m.id, m.reply_to, m.body?.text]),
      [
        ['r1', 'q', 'yes!'],
        ['r3', 'q', 'later'],
      ],
    );
    assert.deepEqual([replies.body.has_more_before, replies.body.has_more_after], [false, false]);
    const withDeleted = await get('/v1/threads/rt/messages?reply_to=q&include_deleted=true');
    assert.deepEqual(
      withDeleted.body.data.map((m: any) => m.id),
      ['r1', 'r2', 'r3'],
    );
    // Paging within the reply chain.
    const newest = await get('/v1/threads/rt/messages?reply_to=q&limit=1');
    assert.deepEqual(
      newest.body.data.map((m: any) => m.id),
      ['r3'],
    );
    assert.equal(newest.body.has_more_before, true);
    const older = await get(`/v1/threads/rt/messages?reply_to=q&limit=5&before_seq=${r3.body.seq}`);
    assert.deepEqual(
      older.body.data.map((m: any) => m.id),
      ['r1'],
    );
    assert.deepEqual([older.body.has_more_before, older.body.has_more_after], [false, true]);
    assert.deepEqual(
      (await get('/v1/threads/rt/messages?reply_to=r2')).body.data.map((m: any) => m.id),
      ['r2a'],
    );
    assert.deepEqual((await get('/v1/threads/rt/messages?reply_to=nobody')).body.data, []);
  });

  test('a reply_to outside the thread is refused with 422 and writes nothing', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'rt-a', type: 'group' } });
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'rt-b', type: 'group' } });
    await post('rt-a', 'alice', { id: 'a1', body: { text: 'in a' } });
    const before = (await get('/v1/threads/rt-b')).body.last_seq;
    const cases: Array<[string, Record<string, unknown>]> = [
      ['a message of another thread', { body: { text: 'x' }, reply_to: 'a1' }],
      ['an unknown message', { body: { text: 'x' }, reply_to: 'nope' }],
      ['itself', { id: 'self', body: { text: 'x' }, reply_to: 'self' }],
    ];
    for (const [what, body] of cases) {
      const r = await post('rt-b', 'bob', body);
      isProblem(r, 422, what);
      assert.match(r.body.detail, /reply_to/, what);
    }
    // A later message of the same batch is not a parent either; the whole batch is refused.
    const batch = await api(t.url, 'POST', '/v1/threads/rt-b/messages/batch', {
      key: sk,
      user: 'bob',
      body: {
        messages: [
          { id: 'early', body: { text: 'x' }, reply_to: 'late' },
          { id: 'late', body: { text: 'y' } },
        ],
      },
    });
    isProblem(batch, 422, 'forward reference in a batch');
    // Posting to a new thread id creates it, but not when the reply is refused.
    isProblem(await post('rt-new', 'bob', { body: { text: 'x' }, reply_to: 'a1' }), 422, 'new thread');
    assert.equal((await get('/v1/threads/rt-new')).status, 404, 'the thread was not created');
    assert.equal((await get('/v1/threads/rt-b')).body.last_seq, before, 'nothing was appended');
    // Malformed ids are a 400.
    isProblem(await post('rt-b', 'bob', { body: { text: 'x' }, reply_to: '' }), 400, 'empty reply_to');
    isProblem(await post('rt-b', 'bob', { body: { text: 'x' }, reply_to: 'a b/c' }), 400, 'bad id');
    isProblem(await get('/v1/threads/rt-b/messages?reply_to=a%20b'), 400, 'bad filter id');
  });

  test('a retry with the same id must carry the same reply_to (409 otherwise)', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'rt-retry', type: 'group' } });
    await post('rt-retry', 'alice', { id: 'p1', body: { text: 'one' } });
    await post('rt-retry', 'alice', { id: 'p2', body: { text: 'two' } });
    const first = await post('rt-retry', 'bob', { id: 'c', body: { text: 'reply' }, reply_to: 'p1' });
    assert.equal(first.status, 201);
    const same = await post('rt-retry', 'bob', { id: 'c', body: { text: 'reply' }, reply_to: 'p1' });
    assert.equal(same.status, 201);
    assert.equal(same.headers.get('idempotent-replayed'), 'true');
    assert.equal(same.body.seq, first.body.seq);
    isProblem(await post('rt-retry', 'bob', { id: 'c', body: { text: 'reply' }, reply_to: 'p2' }), 409, 'other parent');
    isProblem(await post('rt-retry', 'bob', { id: 'c', body: { text: 'reply' } }), 409, 'no parent');
  });

  test('reply_to is fixed at insert: the database refuses to change it', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'rt-fixed', type: 'group' } });
    await post('rt-fixed', 'alice', { id: 'p', body: { text: 'p' } });
    await post('rt-fixed', 'alice', { id: 'c', body: { text: 'c' }, reply_to: 'p' });
    const where = { project_id: p.project_id, thread_id: 'rt-fixed', id: 'c' };
    await assert.rejects(t.db('messages').where(where).update({ reply_to: null }), /append-only/);
    await assert.rejects(t.db('messages').where(where).update({ reply_to: 'c' }), /append-only/);
    // Other current-state columns still change (an edit).
    await t.db('messages').where(where).update({ reply_to: 'p', edited_at: t.db.fn.now() });
    assert.equal((await t.db('messages').first('reply_to').where(where)).reply_to, 'p');
  });

  test('?around_seq= returns a page centred on that seq, with cursors both ways', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'around', type: 'group' } });
    const batch = await api(t.url, 'POST', '/v1/threads/around/messages/batch', {
      key: sk,
      user: 'alice',
      body: { messages: Array.from({ length: 40 }, (_, i) => ({ id: `m${i + 1}`, body: { text: `#${i + 1}` } })) },
    });
    const seqOf = (n: number) => batch.body.data[n - 1].seq as number;
    // Deleted and edited messages around the target: deleted ones are skipped, edits shown.
    await api(t.url, 'DELETE', '/v1/threads/around/messages/m19', { key: sk });
    await api(t.url, 'PATCH', '/v1/threads/around/messages/m21', { key: sk, body: { body: { text: 'edited' } } });
    const target = seqOf(20);
    const page = (await get(`/v1/threads/around/messages?around_seq=${target}&limit=6`)).body;
    assert.deepEqual(
      page.data.map((m: any) => m.id),
      ['m16', 'm17', 'm18', 'm20', 'm21', 'm22'],
    );
    assert.equal(page.data[4].body.text, 'edited');
    assert.deepEqual([page.has_more_before, page.has_more_after], [true, true]);
    // Cursors: the ends of the page continue it both ways without a gap or an overlap.
    const older = (await get(`/v1/threads/around/messages?before_seq=${page.data[0].seq}&limit=3`)).body;
    assert.deepEqual(
      older.data.map((m: any) => m.id),
      ['m13', 'm14', 'm15'],
    );
    const newer = (await get(`/v1/threads/around/messages?after_seq=${page.data[5].seq}&limit=3`)).body;
    assert.deepEqual(
      newer.data.map((m: any) => m.id),
      ['m23', 'm24', 'm25'],
    );
    // Near an end, the short side gives its room to the other.
    const start = (await get(`/v1/threads/around/messages?around_seq=${seqOf(2)}&limit=6`)).body;
    assert.deepEqual(
      start.data.map((m: any) => m.id),
      ['m1', 'm2', 'm3', 'm4', 'm5', 'm6'],
    );
    assert.deepEqual([start.has_more_before, start.has_more_after], [false, true]);
    const end = (await get(`/v1/threads/around/messages?around_seq=${seqOf(40)}&limit=5`)).body;
    assert.deepEqual(
      end.data.map((m: any) => m.id),
      ['m36', 'm37', 'm38', 'm39', 'm40'],
    );
    assert.deepEqual([end.has_more_before, end.has_more_after], [true, false]);
    // A deleted target still centres the page (it is shown with include_deleted).
    const onDeleted = (await get(`/v1/threads/around/messages?around_seq=${seqOf(19)}&limit=2&include_deleted=1`)).body;
    assert.deepEqual(
      onDeleted.data.map((m: any) => [m.id, m.deleted]),
      [
        ['m18', false],
        ['m19', true],
      ],
    );
    // Past the end: the newest page, nothing after.
    const beyond = (await get(`/v1/threads/around/messages?around_seq=999999&limit=2`)).body;
    assert.deepEqual(seqs(beyond), [seqOf(39), seqOf(40)]);
    assert.deepEqual([beyond.has_more_before, beyond.has_more_after], [true, false]);
  });

  test('?author= pages one user’s messages, combined with cursors, around_seq and reply_to', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'authors', type: 'group' } });
    const ids: Record<string, number> = {};
    for (let i = 1; i <= 12; i++) {
      const user = i % 3 === 0 ? 'bob' : 'alice';
      const r = await post('authors', user, { id: `a${i}`, body: { text: `${user} ${i}` } });
      ids[`a${i}`] = r.body.seq;
    }
    await api(t.url, 'DELETE', '/v1/threads/authors/messages/a6', { key: sk });
    await api(t.url, 'PATCH', '/v1/threads/authors/messages/a9', { key: sk, body: { body: { text: 'bob edited' } } });
    const bob = (await get('/v1/threads/authors/messages?author=bob')).body;
    assert.deepEqual(
      bob.data.map((m: any) => [m.id, m.author, m.body.text]),
      [
        ['a3', 'bob', 'bob 3'],
        ['a9', 'bob', 'bob edited'],
        ['a12', 'bob', 'bob 12'],
      ],
    );
    const bobAll = (await get('/v1/threads/authors/messages?author=bob&include_deleted=true')).body;
    assert.deepEqual(
      bobAll.data.map((m: any) => m.id),
      ['a3', 'a6', 'a9', 'a12'],
    );
    const lastTwo = (await get('/v1/threads/authors/messages?author=bob&limit=2')).body;
    assert.deepEqual(
      lastTwo.data.map((m: any) => m.id),
      ['a9', 'a12'],
    );
    assert.deepEqual([lastTwo.has_more_before, lastTwo.has_more_after], [true, false]);
    const rest = (await get(`/v1/threads/authors/messages?author=bob&before_seq=${ids.a9}`)).body;
    assert.deepEqual(
      rest.data.map((m: any) => m.id),
      ['a3'],
    );
    assert.equal(rest.has_more_after, true);
    const after = (await get(`/v1/threads/authors/messages?author=alice&after_seq=${ids.a8}`)).body;
    assert.deepEqual(
      after.data.map((m: any) => m.id),
      ['a10', 'a11'],
    );
    assert.deepEqual([after.has_more_before, after.has_more_after], [true, false]);
    const around = (await get(`/v1/threads/authors/messages?author=alice&around_seq=${ids.a7}&limit=4`)).body;
    assert.deepEqual(
      around.data.map((m: any) => m.id),
      ['a4', 'a5', 'a7', 'a8'],
    );
    // Replies by one author.
    await post('authors', 'alice', { id: 'ra', body: { text: 'r' }, reply_to: 'a1' });
    await post('authors', 'bob', { id: 'rb', body: { text: 'r' }, reply_to: 'a1' });
    const replies = (await get('/v1/threads/authors/messages?reply_to=a1&author=bob')).body;
    assert.deepEqual(
      replies.data.map((m: any) => m.id),
      ['rb'],
    );
    // The text/plain view honours the filter too.
    const text = await api(t.url, 'GET', '/v1/threads/authors/messages?author=bob', {
      key: sk,
      headers: { accept: 'text/plain' },
    });
    assert.equal(
      text.text,
      `#${ids.a3} bob: bob 3\n#${ids.a9} bob: bob edited\n#${ids.a12} bob: bob 12\n#${
        (await get('/v1/threads/authors/messages/rb')).body.seq
      } bob: r\n`,
    );
  });

  test('page queries that make no sense are 400 problems', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'bad-q', type: 'group' } });
    for (const q of [
      'around_seq=5&before_seq=9',
      'around_seq=5&after_seq=1',
      'before_seq=5&after_seq=1',
      'around_seq=-1',
      'around_seq=abc',
      'around_seq=1.5',
      'author=',
      'author=' + 'x'.repeat(300),
      'reply_to=',
      'sort=created',
    ])
      isProblem(await get(`/v1/threads/bad-q/messages?${q}`), 400, q);
  });

  test('the filters use their indexes', async () => {
    const plan = async (sql: string, bindings: unknown[]) =>
      t.db.transaction(async (tx) => {
        await tx.raw('set local enable_seqscan = off');
        const { rows } = await tx.raw(`explain ${sql}`, bindings as never);
        return rows.map((r: any) => r['QUERY PLAN']).join('\n') as string;
      });
    assert.match(
      await plan(
        'select * from messages where project_id = ? and thread_id = ? and author = ? and seq < ? order by seq desc limit 51',
        [p.project_id, 'authors', 'bob', 100],
      ),
      /messages_by_author/,
    );
    assert.match(
      await plan(
        'select * from messages where project_id = ? and thread_id = ? and reply_to = ? order by seq desc limit 51',
        [p.project_id, 'rt', 'q'],
      ),
      /messages_replies/,
    );
    assert.match(
      await plan('select * from threads where project_id = ? order by created_at desc, id desc limit 51', [
        p.project_id,
      ]),
      /threads_created/,
    );
  });

  test('GET /v1/threads?sort=created|last_activity orders and pages by that key', async () => {
    const q = await t.project('sorting');
    const key = q.keys.secret;
    for (const id of ['s1', 's2', 's3'])
      assert.equal((await api(t.url, 'POST', '/v1/threads', { key, body: { id, type: 'group' } })).status, 201);
    // Activity on the oldest thread moves it to the front of the default order only.
    await api(t.url, 'POST', '/v1/threads/s1/messages', { key, user: 'alice', body: { body: { text: 'bump' } } });
    const list = async (query: string) => {
      const r = await api(t.url, 'GET', `/v1/threads?${query}`, { key });
      assert.equal(r.status, 200, r.text);
      return r.body;
    };
    assert.deepEqual(
      (await list('')).data.map((x: any) => x.id),
      ['s1', 's3', 's2'],
    );
    assert.deepEqual(
      (await list('sort=last_activity')).data.map((x: any) => x.id),
      ['s1', 's3', 's2'],
    );
    assert.deepEqual(
      (await list('sort=created')).data.map((x: any) => x.id),
      ['s3', 's2', 's1'],
    );
    // Keyset paging by creation, one per page.
    const walked: string[] = [];
    let cursor: string | null = null;
    do {
      const page: any = await list(`sort=created&limit=1${cursor ? `&cursor=${cursor}` : ''}`);
      walked.push(...page.data.map((x: any) => x.id));
      cursor = page.next_cursor;
    } while (cursor);
    assert.deepEqual(walked, ['s3', 's2', 's1']);
    // A cursor keeps its sort; mixing them is an error, as is an unknown sort.
    const byCreation = (await list('sort=created&limit=1')).next_cursor;
    const byActivity = (await list('limit=1')).next_cursor;
    isProblem(
      await api(t.url, 'GET', `/v1/threads?cursor=${byCreation}`, { key }),
      400,
      'created cursor, default sort',
    );
    isProblem(await api(t.url, 'GET', `/v1/threads?sort=created&cursor=${byActivity}`, { key }), 400, 'mixed');
    isProblem(await api(t.url, 'GET', '/v1/threads?sort=name', { key }), 400, 'unknown sort');
    // Deleted threads stay out of both orders.
    await api(t.url, 'DELETE', '/v1/threads/s2', { key });
    assert.deepEqual(
      (await list('sort=created')).data.map((x: any) => x.id),
      ['s3', 's1'],
    );
  });

  test('the SDK speaks them: reply / replyTo, around, author, replies, threads sort', async () => {
    const client = createBackendClient({ baseUrl: t.url, secretKey: sk, WebSocket: null });
    try {
      const alice = client.asUser('alice');
      const bob = client.asUser('bob');
      await alice.threads.create({ id: 'sdk-q', type: 'group', members: ['alice', 'bob'] });
      const root = await alice.messages.send('sdk-q', { id: 'root', body: { text: 'root' } });
      const r1 = await bob.messages.reply('sdk-q', 'root', { body: { text: 'r1' } });
      assert.equal(r1.reply_to, 'root');
      const r2 = await alice.messages.send('sdk-q', { body: { text: 'r2' }, replyTo: 'root' });
      assert.equal(r2.reply_to, 'root');
      const [batched] = await bob.messages.sendBatch('sdk-q', [{ body: { text: 'r3' }, replyTo: 'root' }]);
      assert.equal(batched.reply_to, 'root');
      await alice.messages.send('sdk-q', { body: { text: 'plain' } });
      await assert.rejects(
        alice.messages.reply('sdk-q', 'nope', { body: { text: 'x' } }),
        (e: any) => e.status === 422 && /reply_to/.test(e.detail),
      );
      const replies: string[] = [];
      for await (const m of client.messages.replies('sdk-q', 'root')) replies.push((m.body as any).text);
      assert.deepEqual(replies, ['r1', 'r2', 'r3']);
      const byBob = await client.messages.list('sdk-q', { author: 'bob' });
      assert.deepEqual(
        byBob.data.map((m) => (m.body as any).text),
        ['r1', 'r3'],
      );
      const bobReplies: string[] = [];
      for await (const m of client.messages.iterate('sdk-q', { author: 'bob', replyTo: 'root', pageSize: 1 }))
        bobReplies.push((m.body as any).text);
      assert.deepEqual(bobReplies, ['r3', 'r1'], 'backward by default');
      const around = await client.messages.around('sdk-q', r2.seq, { limit: 3 });
      assert.deepEqual(
        around.data.map((m) => m.seq),
        [r1.seq, r2.seq, batched.seq],
      );
      assert.deepEqual([around.has_more_before, around.has_more_after], [true, true]);
      const older = await client.messages.list('sdk-q', { beforeSeq: around.data[0].seq, limit: 5 });
      assert.deepEqual(
        older.data.map((m) => m.id),
        [root.id],
      );
      await client.threads.create({ id: 'sdk-q2', type: 'group' });
      await client.messages.send('sdk-q', { author: 'alice', body: { text: 'bump' } });
      const created: string[] = [];
      for await (const th of client.threads.iterate({ sort: 'created', limit: 1 })) created.push(th.id);
      assert.deepEqual(created.slice(0, 2), ['sdk-q2', 'sdk-q']);
      assert.equal((await client.threads.list({ sort: 'last_activity', limit: 1 })).data[0].id, 'sdk-q');
    } finally {
      client.close();
    }
  });
});
