import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createBackendClient } from '../sdk/src/index';
import { signUserId } from '../src/modules/keys/key-auth-service';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type TestContext } from './helpers/app';

/** Runs `fn` over `items`, `width` at a time. */
async function inChunks<T>(items: T[], width: number, fn: (item: T) => Promise<void>) {
  for (let i = 0; i < items.length; i += width) await Promise.all(items.slice(i, i + width).map(fn));
}

const cursorOf = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

describe('bounded, cursor-paginated unread counts, members and versions', () => {
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

  /** Every page of a list, following next_cursor; the pages' bodies in order. */
  async function pages(path: string, headers: Record<string, string>, limit?: number) {
    const out: Array<{ data: any[]; next_cursor: string | null; total?: number }> = [];
    let cursor: string | null = null;
    do {
      const q = new URLSearchParams();
      if (limit !== undefined) q.set('limit', String(limit));
      if (cursor) q.set('cursor', cursor);
      const r = await api(t.url, 'GET', `${path}?${q.toString()}`, { headers });
      assert.equal(r.status, 200, r.text);
      out.push(r.body);
      cursor = r.body.next_cursor;
      assert.ok(out.length < 100, 'pagination ends');
    } while (cursor);
    return out;
  }
  const auth = () => ({ authorization: `Bearer ${sk}` });

  test('unread: 250 threads with unread come in pages, each once, most recent activity first', async () => {
    const ids = Array.from({ length: 250 }, (_, i) => `unr-${String(i).padStart(3, '0')}`);
    await inChunks(ids, 25, async (id) => {
      const c = await api(t.url, 'POST', '/v1/threads', {
        key: sk,
        body: { id, type: 'group', members: ['reader', 'writer'] },
      });
      assert.equal(c.status, 201, c.text);
      const m = await api(t.url, 'POST', `/v1/threads/${id}/messages`, {
        key: sk,
        body: { body: { text: id }, author: 'writer' },
      });
      assert.equal(m.status, 201, m.text);
    });

    const byDefault = await pages('/v1/me/unread', user('reader'));
    assert.deepEqual(
      byDefault.map((p) => p.data.length),
      [100, 100, 50],
      'the default limit is 100',
    );
    const all = byDefault.flatMap((p) => p.data);
    assert.deepEqual(all.map((r) => r.thread_id).sort(), ids, 'every thread exactly once');
    assert.ok(
      all.every((r) => r.unread === 1 && r.last_read_seq === 0 && typeof r.last_seq === 'number'),
      'each row keeps its shape',
    );
    for (const p of byDefault) assert.equal(p.total, p.data.length, "total sums the page's unread");
    assert.equal(byDefault[2].next_cursor, null);

    // One page of 500 (the maximum) is the same order as the pages joined.
    const one = await pages('/v1/me/unread', user('reader'), 500);
    assert.equal(one.length, 1);
    assert.deepEqual(
      one[0].data.map((r) => r.thread_id),
      all.map((r) => r.thread_id),
    );
    // Most recent activity first, ties by thread id (descending): the threads' own order.
    const threads = await pages('/v1/threads', user('reader'), 200);
    assert.deepEqual(
      all.map((r) => r.thread_id),
      threads.flatMap((p) => p.data.map((x) => x.id)),
    );

    // Pages of 7 with a read in the middle: still each thread once, and the read shows.
    const lastSeq = all.find((r) => r.thread_id === ids[0]).last_seq;
    const read = await api(t.url, 'POST', `/v1/threads/${ids[0]}/read`, {
      headers: user('reader'),
      body: { seq: lastSeq },
    });
    assert.equal(read.status, 200, read.text);
    const small = await pages('/v1/me/unread', user('reader'), 7);
    assert.equal(small.length, Math.ceil(250 / 7));
    const rows = small.flatMap((p) => p.data);
    assert.deepEqual(rows.map((r) => r.thread_id).sort(), ids);
    assert.equal(rows.find((r) => r.thread_id === ids[0]).unread, 0);
    assert.equal(
      small.reduce((n, p) => n + (p.total ?? 0), 0),
      249,
    );

    // A user in no thread: one empty page.
    const none = await pages('/v1/me/unread', user('loner'));
    assert.deepEqual(none, [{ data: [], total: 0, next_cursor: null }]);
  });

  test('members: 250 members come in pages by user id, each once', async () => {
    const members = Array.from({ length: 250 }, (_, i) => `member-${String(i).padStart(3, '0')}`);
    const c = await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'crowd', type: 'channel', members } });
    assert.equal(c.status, 201, c.text);

    const byDefault = await pages('/v1/threads/crowd/members', auth());
    assert.deepEqual(
      byDefault.map((p) => p.data.length),
      [100, 100, 50],
    );
    const all = byDefault.flatMap((p) => p.data);
    assert.deepEqual(
      all.map((m) => m.user_id),
      [...members].sort(),
      'every member once, by user id',
    );
    assert.ok(all.every((m) => m.role === 'member' && /Z$/.test(m.added_at)));

    const small = await pages('/v1/threads/crowd/members', auth(), 33);
    assert.deepEqual(
      small.flatMap((p) => p.data.map((m) => m.user_id)),
      all.map((m) => m.user_id),
    );
    const max = await pages('/v1/threads/crowd/members', auth(), 500);
    assert.equal(max.length, 1);
    assert.equal(max[0].data.length, 250);
  });

  test('versions: 120 versions come in pages by version, each once', async () => {
    const m = await api(t.url, 'POST', '/v1/threads/history/messages', {
      key: sk,
      body: { id: 'many', body: { n: 1 }, author: 'editor' },
    });
    assert.equal(m.status, 201, m.text);
    for (let n = 2; n <= 120; n++) {
      const e = await api(t.url, 'PATCH', '/v1/threads/history/messages/many', { key: sk, body: { body: { n } } });
      assert.equal(e.status, 200, e.text);
    }

    const byDefault = await pages('/v1/threads/history/messages/many/versions', auth());
    assert.deepEqual(
      byDefault.map((p) => p.data.length),
      [50, 50, 20],
      'the default limit is 50',
    );
    const all = byDefault.flatMap((p) => p.data);
    const want = Array.from({ length: 120 }, (_, i) => i + 1);
    assert.deepEqual(
      all.map((v) => v.version),
      want,
    );
    assert.deepEqual(
      all.map((v) => v.body.n),
      want,
    );
    assert.ok(all.every((v, i) => i === 0 || v.seq > all[i - 1].seq));

    const small = await pages('/v1/threads/history/messages/many/versions', auth(), 11);
    assert.deepEqual(
      small.flatMap((p) => p.data.map((v) => v.version)),
      want,
    );
    const max = await pages('/v1/threads/history/messages/many/versions', auth(), 200);
    assert.deepEqual(
      max.map((p) => p.data.length),
      [120],
    );
  });

  test('limits above the maximum, below 1 or not numbers answer 400 problem+json', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'lim', type: 'group', members: ['u1'] } });
    await api(t.url, 'POST', '/v1/threads/lim/messages', { key: sk, body: { id: 'lm', body: 1, author: 'u1' } });
    for (const [path, headers, max] of [
      ['/v1/me/unread', user('u1'), 500],
      ['/v1/threads/lim/members', auth(), 500],
      ['/v1/threads/lim/messages/lm/versions', auth(), 200],
    ] as const) {
      for (const limit of [String(max + 1), '0', '-1', 'abc', '1.5']) {
        const r = await api(t.url, 'GET', `${path}?limit=${limit}`, { headers });
        assert.equal(r.status, 400, `${path} limit=${limit}: ${r.text}`);
        assert.match(r.headers.get('content-type') ?? '', /problem\+json/);
      }
      const ok = await api(t.url, 'GET', `${path}?limit=${max}`, { headers });
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.body.next_cursor, null);
      const unknown = await api(t.url, 'GET', `${path}?page=2`, { headers });
      assert.equal(unknown.status, 400, 'unknown query parameters are refused');
    }
  });

  test('malformed and foreign cursors answer 400 problem+json', async () => {
    await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      body: { id: 'cur-a', type: 'group', members: ['cu', 'x1', 'x2'] },
    });
    await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      body: { id: 'cur-b', type: 'group', members: ['cu', 'y1', 'y2'] },
    });
    for (const [thread, id] of [
      ['cur-a', 'va'],
      ['cur-a', 'vb'],
    ]) {
      await api(t.url, 'POST', `/v1/threads/${thread}/messages`, { key: sk, body: { id, body: 1, author: 'x1' } });
      await api(t.url, 'PATCH', `/v1/threads/${thread}/messages/${id}`, { key: sk, body: { body: 2 } });
    }
    const page = async (path: string, headers: Record<string, string>) => {
      const r = await api(t.url, 'GET', path, { headers });
      assert.equal(r.status, 200, r.text);
      assert.ok(r.body.next_cursor, `${path} has a next page`);
      return r.body.next_cursor as string;
    };
    const unreadCursor = await page('/v1/me/unread?limit=1', user('cu'));
    const membersA = await page('/v1/threads/cur-a/members?limit=1', auth());
    const versionsA = await page('/v1/threads/cur-a/messages/va/versions?limit=1', auth());
    const threadsCursor = await page('/v1/threads?limit=1', user('cu'));

    const garbage = [
      '!!!',
      'not-a-cursor',
      cursorOf({ a: 1 }),
      cursorOf(['x', 1]),
      cursorOf([]),
      cursorOf(['unread', 'yesterday', 'cur-a']),
      cursorOf(['members', 'cur-a', 5]),
      cursorOf(['versions', 'cur-a', 'va', 0]),
      cursorOf(['versions', 'cur-a', 'va', 1.5]),
      "' OR 1=1 --",
    ];
    const cases: Array<[string, Record<string, string>, string[]]> = [
      ['/v1/me/unread', user('cu'), [...garbage, membersA, versionsA, threadsCursor]],
      [
        '/v1/threads/cur-a/members',
        auth(),
        [...garbage, unreadCursor, versionsA, threadsCursor, await page('/v1/threads/cur-b/members?limit=1', auth())],
      ],
      [
        '/v1/threads/cur-a/messages/vb/versions',
        auth(),
        [...garbage, unreadCursor, membersA, threadsCursor, versionsA /* another message's */],
      ],
    ];
    for (const [path, headers, cursors] of cases) {
      for (const cursor of cursors) {
        const r = await api(t.url, 'GET', `${path}?cursor=${encodeURIComponent(cursor)}`, { headers });
        assert.equal(r.status, 400, `${path} cursor=${cursor}: ${r.text}`);
        assert.match(r.headers.get('content-type') ?? '', /problem\+json/);
        assert.match(r.body.detail, /cursor/);
      }
    }
    // The thread list refuses the new cursors too.
    for (const cursor of [unreadCursor, membersA, versionsA]) {
      const r = await api(t.url, 'GET', `/v1/threads?cursor=${encodeURIComponent(cursor)}`, { headers: user('cu') });
      assert.equal(r.status, 400, r.text);
    }
    // And each cursor works where it came from.
    for (const [path, cursor, headers] of [
      ['/v1/me/unread?limit=1', unreadCursor, user('cu')],
      ['/v1/threads/cur-a/members?limit=1', membersA, auth()],
      ['/v1/threads/cur-a/messages/va/versions?limit=1', versionsA, auth()],
    ] as const) {
      const r = await api(t.url, 'GET', `${path}&cursor=${encodeURIComponent(cursor)}`, { headers });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.data.length, 1);
    }
  });

  test('the SDK iterates every page of members, versions and unread counts', async () => {
    const backend = createBackendClient({ baseUrl: t.url, secretKey: sk });
    const members = Array.from({ length: 120 }, (_, i) => `sdk-m${String(i).padStart(3, '0')}`);
    await backend.threads.create({ id: 'sdk-crowd', type: 'group', members });
    await backend.messages.send('sdk-crowd', { id: 'sdk-v', body: { n: 1 }, author: 'sdk-m000' }, { via: 'rest' });
    for (let n = 2; n <= 30; n++) await backend.messages.edit('sdk-crowd', 'sdk-v', { n });

    const seen: string[] = [];
    for await (const m of backend.members.iterate('sdk-crowd', { pageSize: 25 })) seen.push(m.user_id);
    assert.deepEqual(seen, members);
    assert.deepEqual(
      (await backend.members.list('sdk-crowd')).map((m) => m.user_id),
      members,
    );
    const page = await backend.members.page('sdk-crowd', { limit: 100 });
    assert.equal(page.data.length, 100);
    assert.ok(page.next_cursor);
    const rest = await backend.members.page('sdk-crowd', { cursor: page.next_cursor ?? undefined });
    assert.deepEqual(
      [...page.data, ...rest.data].map((m) => m.user_id),
      members,
    );
    assert.equal(rest.next_cursor, null);

    const versions: number[] = [];
    for await (const v of backend.messages.iterateVersions('sdk-crowd', 'sdk-v', { pageSize: 7 }))
      versions.push(v.version);
    const want = Array.from({ length: 30 }, (_, i) => i + 1);
    assert.deepEqual(versions, want);
    assert.deepEqual(
      (await backend.messages.versions('sdk-crowd', 'sdk-v')).map((v) => v.version),
      want,
    );
    const vpage = await backend.messages.versionsPage('sdk-crowd', 'sdk-v', { limit: 10 });
    assert.deepEqual(
      vpage.data.map((v) => v.version),
      want.slice(0, 10),
    );

    // sdk-m001 has one unread message in sdk-crowd; give them 9 more threads with one each.
    for (let i = 0; i < 9; i++) {
      await backend.threads.create({ id: `sdk-u${i}`, type: 'group', members: ['sdk-m001', 'sdk-m000'] });
      await backend.messages.send(`sdk-u${i}`, { body: i, author: 'sdk-m000' }, { via: 'rest' });
    }
    const asUser = backend.asUser('sdk-m001');
    const unread: string[] = [];
    for await (const r of asUser.reads.iterateUnread({ pageSize: 3 })) unread.push(r.thread_id);
    assert.equal(unread.length, 10);
    assert.equal(new Set(unread).size, 10);
    const firstPage = await asUser.reads.unread({ limit: 4 });
    assert.deepEqual(
      firstPage.data.map((r) => r.thread_id),
      unread.slice(0, 4),
    );
    assert.equal(firstPage.total, 4);
    assert.ok(firstPage.next_cursor);
    backend.close();
  });
});
