import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { api, startTestApp, type TestContext } from './helpers/app';

describe('messages', () => {
  let t: TestContext;
  let sk: string;
  before(async () => {
    t = await startTestApp();
    sk = (await t.project()).keys.secret;
  });
  after(() => t.stop());

  test('appends, edits, lists versions, pages and soft-deletes', async () => {
    const created = await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      body: { id: 'walk', type: 'group', title: 'Walkthrough' },
    });
    assert.equal(created.status, 201);
    assert.equal(created.body.last_seq, 1);
    const m1 = await api(t.url, 'POST', '/v1/threads/walk/messages', {
      key: sk,
      user: 'alice',
      body: { id: 'm1', body: { text: 'hello' } },
    });
    assert.equal(m1.status, 201);
    assert.deepEqual([m1.body.seq, m1.body.author, m1.body.version], [2, 'alice', 1]);
    assert.match(m1.body.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    const edited = await api(t.url, 'PATCH', '/v1/threads/walk/messages/m1', {
      key: sk,
      user: 'alice',
      body: { body: { text: 'hello!' } },
    });
    assert.equal(edited.status, 200);
    assert.equal(edited.body.version, 2);
    const versions = await api(t.url, 'GET', '/v1/threads/walk/messages/m1/versions', { key: sk });
    assert.deepEqual(
      versions.body.data.map((v: any) => v.body.text),
      ['hello', 'hello!'],
    );
    const deleted = await api(t.url, 'DELETE', '/v1/threads/walk/messages/m1', { key: sk });
    assert.equal(deleted.body.deleted, true);
    const page = await api(t.url, 'GET', '/v1/threads/walk/messages', { key: sk });
    assert.deepEqual(page.body.data, []);
    const withDeleted = await api(t.url, 'GET', '/v1/threads/walk/messages?include_deleted=true', { key: sk });
    assert.equal(withDeleted.body.data[0].deleted, true);
    assert.equal(withDeleted.body.data[0].body, null);
    const history = await api(t.url, 'GET', '/v1/threads/walk/messages/m1/versions', { key: sk });
    assert.deepEqual(
      history.body.data.map((v: any) => [v.version, v.deleted]),
      [
        [1, false],
        [2, false],
        [3, true],
      ],
    );
  });

  test('20 concurrent writers × 50 appends give seqs exactly 1..1000', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'race', type: 'channel' } });
    const writers = Array.from({ length: 20 }, (_, w) =>
      (async () => {
        const seqs: number[] = [];
        for (let i = 0; i < 50; i++) {
          const r = await api(t.url, 'POST', '/v1/threads/race/messages', {
            key: sk,
            user: `w${w}`,
            body: { body: { w, i } },
          });
          assert.equal(r.status, 201, r.text);
          seqs.push(r.body.seq);
        }
        return seqs;
      })(),
    );
    const all = (await Promise.all(writers)).flat().sort((a, b) => a - b);
    // seq 1 is thread.created; the 1,000 messages hold 2..1001 — the log as a whole is 1..1001.
    assert.deepEqual(
      all,
      Array.from({ length: 1000 }, (_, i) => i + 2),
    );
    const { rows } = await t.db.raw(`select seq from events where thread_id = 'race' order by seq`);
    assert.deepEqual(
      rows.map((r: any) => r.seq),
      Array.from({ length: 1001 }, (_, i) => i + 1),
    );
  });
});

describe('messages: batches, pages, text and reactions', () => {
  let t: TestContext;
  let sk: string;
  before(async () => {
    t = await startTestApp();
    sk = (await t.project()).keys.secret;
  });
  after(() => t.stop());

  const seqs = (r: { body: { data: Array<{ seq: number }> } }) => r.body.data.map((m) => m.seq);

  test('a batch of 1,000 messages is appended in one transaction with contiguous seqs, in request order', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'bulk', type: 'channel' } });
    const messages = Array.from({ length: 1000 }, (_, i) => ({ id: `k${i}`, body: { i } }));
    // Single appends racing the batch must not land inside its seq range.
    const [batch, ...singles] = await Promise.all([
      api(t.url, 'POST', '/v1/threads/bulk/messages/batch', { key: sk, user: 'loader', body: { messages } }),
      ...Array.from({ length: 5 }, (_, i) =>
        api(t.url, 'POST', '/v1/threads/bulk/messages', { key: sk, user: 'racer', body: { body: { racer: i } } }),
      ),
    ]);
    assert.equal(batch.status, 201, batch.text);
    assert.equal(batch.body.data.length, 1000);
    assert.deepEqual(
      batch.body.data.map((m: any) => m.id),
      messages.map((m) => m.id),
    );
    const first = batch.body.data[0].seq;
    assert.deepEqual(
      seqs(batch),
      Array.from({ length: 1000 }, (_, i) => first + i),
    );
    for (const s of singles) {
      assert.equal(s.status, 201);
      assert.ok(s.body.seq < first || s.body.seq > first + 999, `single append at ${s.body.seq} inside the batch`);
    }
    const { rows } = await t.db.raw(
      `select count(*)::int as n, count(distinct created_at)::int as stamps from events where thread_id = 'bulk' and seq between ? and ?`,
      [first, first + 999],
    );
    assert.deepEqual(rows[0], { n: 1000, stamps: 1 }, 'one transaction: one commit timestamp');
  });

  test('a batch of 1,001 messages is refused with 400 and writes nothing', async () => {
    const r = await api(t.url, 'POST', '/v1/threads/bulk-too-big/messages/batch', {
      key: sk,
      user: 'loader',
      body: { messages: Array.from({ length: 1001 }, (_, i) => ({ body: i })) },
    });
    assert.equal(r.status, 400);
    assert.equal(r.headers.get('content-type'), 'application/problem+json; charset=utf-8');
    assert.equal((await api(t.url, 'GET', '/v1/threads/bulk-too-big', { key: sk })).status, 404);
  });

  test('a batch that fails on one message writes none of them', async () => {
    await api(t.url, 'POST', '/v1/threads/atomic/messages', {
      key: sk,
      user: 'a',
      body: { id: 'exists', body: 'original' },
    });
    const r = await api(t.url, 'POST', '/v1/threads/atomic/messages/batch', {
      key: sk,
      user: 'a',
      body: {
        messages: [
          { id: 'new-1', body: 1 },
          { id: 'exists', body: 'different' },
          { id: 'new-2', body: 2 },
        ],
      },
    });
    assert.equal(r.status, 409);
    const page = await api(t.url, 'GET', '/v1/threads/atomic/messages', { key: sk });
    assert.deepEqual(
      page.body.data.map((m: any) => m.id),
      ['exists'],
    );
  });

  test('pages by before_seq and after_seq with has_more_before/has_more_after exactly right at the edges', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'pages', type: 'group' } }); // seq 1
    const ten = await api(t.url, 'POST', '/v1/threads/pages/messages/batch', {
      key: sk,
      user: 'p',
      body: { messages: Array.from({ length: 10 }, (_, i) => ({ body: i })) },
    });
    assert.deepEqual(seqs(ten), [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    const page = async (q: string) => {
      const r = await api(t.url, 'GET', `/v1/threads/pages/messages?${q}`, { key: sk });
      assert.equal(r.status, 200, r.text);
      return [seqs(r), r.body.has_more_before, r.body.has_more_after];
    };
    const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
    assert.deepEqual(await page('limit=5'), [range(7, 11), true, false], 'newest page');
    assert.deepEqual(await page('limit=10'), [range(2, 11), false, false], 'exactly all');
    assert.deepEqual(await page('limit=11'), [range(2, 11), false, false], 'more than all');
    assert.deepEqual(await page(''), [range(2, 11), false, false], 'default limit');
    assert.deepEqual(
      await page('before_seq=7&limit=5'),
      [range(2, 6), false, true],
      'before: ends exactly at the first message',
    );
    assert.deepEqual(await page('before_seq=8&limit=5'), [range(3, 7), true, true]);
    assert.deepEqual(await page('before_seq=2&limit=5'), [[], false, true], 'before the first message');
    assert.deepEqual(await page('before_seq=12&limit=3'), [range(9, 11), true, false], 'before_seq just past the end');
    assert.deepEqual(await page('before_seq=100&limit=3'), [range(9, 11), true, false]);
    assert.deepEqual(
      await page('after_seq=6&limit=5'),
      [range(7, 11), true, false],
      'after: ends exactly at the last message',
    );
    assert.deepEqual(await page('after_seq=5&limit=5'), [range(6, 10), true, true]);
    assert.deepEqual(await page('after_seq=1&limit=5'), [range(2, 6), false, true], 'seq 1 is not a message');
    assert.deepEqual(await page('after_seq=0&limit=10'), [range(2, 11), false, false]);
    assert.deepEqual(await page('after_seq=11'), [[], true, false], 'after the last message');
    assert.deepEqual(await page('after_seq=100'), [[], true, false]);

    // Walking backwards and forwards visits every message once.
    const back: number[] = [];
    let r = await api(t.url, 'GET', '/v1/threads/pages/messages?limit=3', { key: sk });
    for (;;) {
      back.unshift(...seqs(r));
      if (!r.body.has_more_before) break;
      r = await api(t.url, 'GET', `/v1/threads/pages/messages?limit=3&before_seq=${r.body.data[0].seq}`, { key: sk });
    }
    assert.deepEqual(back, range(2, 11));
  });

  test('deleted messages are left out of pages (and of has_more) unless include_deleted=true', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'holes', type: 'group' } }); // seq 1
    await api(t.url, 'POST', '/v1/threads/holes/messages/batch', {
      key: sk,
      user: 'h',
      body: { messages: Array.from({ length: 6 }, (_, i) => ({ id: `h${i}`, body: i })) },
    }); // 2..7
    await api(t.url, 'DELETE', '/v1/threads/holes/messages/h0', { key: sk }); // seq 2 deleted
    await api(t.url, 'DELETE', '/v1/threads/holes/messages/h5', { key: sk }); // seq 7 deleted
    const page = async (q: string) => {
      const r = await api(t.url, 'GET', `/v1/threads/holes/messages?${q}`, { key: sk });
      return [seqs(r), r.body.has_more_before, r.body.has_more_after];
    };
    assert.deepEqual(await page('limit=4'), [[3, 4, 5, 6], false, false]);
    assert.deepEqual(await page('after_seq=6'), [[], true, false]);
    assert.deepEqual(await page('before_seq=3'), [[], false, true]);
    assert.deepEqual(await page('limit=4&include_deleted=true'), [[4, 5, 6, 7], true, false]);
    assert.deepEqual(await page('after_seq=6&include_deleted=true'), [[7], true, false]);
    assert.deepEqual(await page('before_seq=3&include_deleted=1'), [[2], false, true]);
    const withDeleted = await api(t.url, 'GET', '/v1/threads/holes/messages?include_deleted=true', { key: sk });
    const tomb = withDeleted.body.data.find((m: any) => m.id === 'h0');
    assert.deepEqual([tomb.deleted, tomb.body, tomb.version], [true, null, 2]);
    const one = await api(t.url, 'GET', '/v1/threads/holes/messages/h0', { key: sk });
    assert.equal(one.status, 200, 'a tombstone stays addressable');
    assert.equal(one.body.deleted, true);
    assert.equal(one.body.body, null);
    assert.equal(
      (await api(t.url, 'DELETE', '/v1/threads/holes/messages/h0', { key: sk })).status,
      409,
      'deleting twice',
    );
  });

  test('a text/plain body becomes {"text": …}, on append and on edit', async () => {
    const r = await api(t.url, 'POST', '/v1/threads/texty/messages', {
      key: sk,
      user: 'tx',
      raw: 'hello there',
      contentType: 'text/plain',
    });
    assert.equal(r.status, 201, r.text);
    assert.deepEqual(r.body.body, { text: 'hello there' });
    const charset = await api(t.url, 'POST', '/v1/threads/texty/messages', {
      key: sk,
      user: 'tx',
      raw: 'héllo ✓',
      contentType: 'text/plain; charset=utf-8',
    });
    assert.deepEqual(charset.body.body, { text: 'héllo ✓' });
    const edit = await api(t.url, 'PATCH', `/v1/threads/texty/messages/${r.body.id}`, {
      key: sk,
      user: 'tx',
      raw: 'edited text',
      contentType: 'text/plain',
    });
    assert.equal(edit.status, 200, edit.text);
    assert.deepEqual(edit.body.body, { text: 'edited text' });
  });

  test('Accept: text/plain returns one line per message', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'lines', type: 'group' } });
    await api(t.url, 'POST', '/v1/threads/lines/messages', {
      key: sk,
      user: 'ann',
      body: { body: { text: 'first\nline' } },
    });
    await api(t.url, 'POST', '/v1/threads/lines/messages', { key: sk, user: 'bob', body: { body: { n: 2 } } });
    await api(t.url, 'POST', '/v1/threads/lines/messages', { key: sk, user: 'cy', body: { id: 'gone', body: 'x' } });
    await api(t.url, 'DELETE', '/v1/threads/lines/messages/gone', { key: sk });
    const r = await api(t.url, 'GET', '/v1/threads/lines/messages', { key: sk, headers: { accept: 'text/plain' } });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type')!, /^text\/plain/);
    assert.equal(r.text, '#2 ann: first line\n#3 bob: {"n":2}\n');
    const withDeleted = await api(t.url, 'GET', '/v1/threads/lines/messages?include_deleted=true', {
      key: sk,
      headers: { accept: 'text/plain' },
    });
    assert.equal(withDeleted.text.split('\n').filter(Boolean).length, 3);
    assert.match(withDeleted.text, /^#4 cy: \[deleted\]$/m);
    const json = await api(t.url, 'GET', '/v1/threads/lines/messages', {
      key: sk,
      headers: { accept: 'application/json, text/plain' },
    });
    assert.equal(json.body.data.length, 2, 'JSON when the client accepts it');
  });

  test('reactions: PUT twice counts once, DELETE removes, the summary is in the message, each change is logged', async () => {
    await api(t.url, 'POST', '/v1/threads/react/messages', {
      key: sk,
      user: 'author',
      body: { id: 'r1', body: 'react to me' },
    });
    const put = (user: string, reaction: string) =>
      api(t.url, 'PUT', `/v1/threads/react/messages/r1/reactions/${encodeURIComponent(reaction)}`, { key: sk, user });
    const del = (user: string, reaction: string) =>
      api(t.url, 'DELETE', `/v1/threads/react/messages/r1/reactions/${encodeURIComponent(reaction)}`, {
        key: sk,
        user,
      });
    assert.deepEqual((await put('u1', 'like')).body.reactions, { like: 1 });
    assert.deepEqual((await put('u1', 'like')).body.reactions, { like: 1 }, 'twice by the same user counts once');
    assert.deepEqual((await put('u2', 'like')).body.reactions, { like: 2 });
    assert.deepEqual((await put('u2', '👍')).body.reactions, { like: 2, '👍': 1 });
    assert.deepEqual((await del('u1', 'like')).body.reactions, { like: 1, '👍': 1 });
    assert.deepEqual((await del('u1', 'like')).body.reactions, { like: 1, '👍': 1 }, 'removing twice changes nothing');
    assert.deepEqual((await del('u2', '👍')).body.reactions, { like: 1 }, 'a reaction at zero leaves the summary');
    const msg = await api(t.url, 'GET', '/v1/threads/react/messages/r1', { key: sk });
    assert.deepEqual(msg.body.reactions, { like: 1 });
    const page = await api(t.url, 'GET', '/v1/threads/react/messages', { key: sk });
    assert.deepEqual(page.body.data[0].reactions, { like: 1 });
    const { rows } = await t.db.raw(
      `select type, actor, data from events where thread_id = 'react' and type like 'reaction.%' order by seq`,
    );
    assert.deepEqual(
      rows.map((e: any) => [e.type, e.actor, e.data.reaction, e.data.user_id, e.data.message_id]),
      [
        ['reaction.added', 'u1', 'like', 'u1', 'r1'],
        ['reaction.added', 'u2', 'like', 'u2', 'r1'],
        ['reaction.added', 'u2', '👍', 'u2', 'r1'],
        ['reaction.removed', 'u1', 'like', 'u1', 'r1'],
        ['reaction.removed', 'u2', '👍', 'u2', 'r1'],
      ],
    );
    assert.equal(
      (await api(t.url, 'PUT', '/v1/threads/react/messages/r1/reactions/like', { key: sk })).status,
      400,
      'a reaction needs a user',
    );
    assert.equal(
      (await api(t.url, 'PUT', '/v1/threads/react/messages/nope/reactions/like', { key: sk, user: 'u1' })).status,
      404,
    );
    await api(t.url, 'DELETE', '/v1/threads/react/messages/r1', { key: sk });
    assert.equal((await put('u3', 'like')).status, 404, 'no reactions on a deleted message');
  });

  test('an unknown message answers 404 on read, edit, delete and versions', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'empty', type: 'group' } });
    for (const [method, path] of [
      ['GET', '/v1/threads/empty/messages/none'],
      ['PATCH', '/v1/threads/empty/messages/none'],
      ['DELETE', '/v1/threads/empty/messages/none'],
      ['GET', '/v1/threads/empty/messages/none/versions'],
    ]) {
      const r = await api(t.url, method, path, {
        key: sk,
        user: 'x',
        body: method === 'PATCH' ? { body: 1 } : undefined,
      });
      assert.equal(r.status, 404, `${method} ${path}`);
    }
  });
});
