import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type ApiResponse, type TestContext } from './helpers/app';

const MAX_REQUEST_BYTES = 4096;
const MAX_MESSAGE_BYTES = 1024;
const MAX_JSON_DEPTH = 8;

const nest = (depth: number): unknown => (depth <= 1 ? { leaf: true } : { a: nest(depth - 1) });

function assertProblem(r: ApiResponse, status: number, what: string) {
  assert.equal(r.status, status, `${what}: ${r.text}`);
  assert.equal(r.headers.get('content-type'), 'application/problem+json; charset=utf-8', what);
  assert.equal(r.body.status, status, what);
  assert.match(r.body.type, /^https:\/\/progressdb\.dev\/problems\/[a-z-]+$/, what);
  assert.equal(typeof r.body.title, 'string', what);
  assert.ok(r.body.detail.length > 10, `${what}: the detail says what to fix`);
  assert.equal(r.body.request_id, r.headers.get('x-request-id'), what);
  assert.ok(r.body.request_id.length > 0, what);
}

describe('bad input', () => {
  let t: TestContext;
  let p: ProjectCredentials;
  let sk: string;
  const counts = async () => {
    const { rows } = await t.db.raw(
      `select (select count(*) from events where project_id = ?)::int as events,
              (select count(*) from threads where project_id = ?)::int as threads,
              (select count(*) from messages where project_id = ?)::int as messages,
              (select count(*) from idempotency_keys where project_id = ?)::int as idem`,
      [p.project_id, p.project_id, p.project_id, p.project_id],
    );
    return rows[0];
  };

  before(async () => {
    t = await startTestApp({
      MAX_REQUEST_BYTES: String(MAX_REQUEST_BYTES),
      MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES),
      MAX_JSON_DEPTH: String(MAX_JSON_DEPTH),
    });
    p = await t.project();
    sk = p.keys.secret;
    assert.equal(
      (await api(t.url, 'POST', '/v1/threads', { key: sk, user: 'u', body: { id: 'ok', type: 'group' } })).status,
      201,
    );
    assert.equal(
      (await api(t.url, 'POST', '/v1/threads/ok/messages', { key: sk, user: 'u', body: { id: 'm1', body: 'x' } }))
        .status,
      201,
    );
  });
  after(() => t.stop());

  type Case = [string, string, string, Parameters<typeof api>[3], number];
  const longId = 'a'.repeat(129);
  const cases: Case[] = [
    // Body syntax and size
    ['malformed JSON', 'POST', '/v1/threads', { raw: '{"type": "group",' }, 400],
    [
      'JSON with a trailing comma',
      'POST',
      '/v1/threads/ok/messages',
      { raw: '{"body": 1,}', headers: { 'x-user-id': 'u' } },
      400,
    ],
    ['empty JSON body on create', 'POST', '/v1/threads', { raw: '' }, 400],
    ['a JSON array where an object is expected', 'POST', '/v1/threads', { body: [{ type: 'group' }] }, 400],
    ['a JSON string where an object is expected', 'POST', '/v1/threads/ok/messages', { body: 'hello', user: 'u' }, 400],
    [
      'request body over MAX_REQUEST_BYTES',
      'POST',
      '/v1/threads/ok/messages',
      { body: { body: 'x'.repeat(MAX_REQUEST_BYTES + 10) }, user: 'u' },
      413,
    ],
    [
      'batch over MAX_REQUEST_BYTES',
      'POST',
      '/v1/threads/ok/messages/batch',
      { body: { messages: Array.from({ length: 100 }, (_, i) => ({ body: `message ${i} `.repeat(5) })) }, user: 'u' },
      413,
    ],
    [
      'message body over MAX_MESSAGE_BYTES',
      'POST',
      '/v1/threads/ok/messages',
      { body: { body: 'y'.repeat(MAX_MESSAGE_BYTES + 1) }, user: 'u' },
      413,
    ],
    [
      'message body over MAX_MESSAGE_BYTES in a batch',
      'POST',
      '/v1/threads/ok/messages/batch',
      { body: { messages: [{ body: 'fine' }, { body: 'y'.repeat(MAX_MESSAGE_BYTES + 1) }] }, user: 'u' },
      413,
    ],
    [
      'edit body over MAX_MESSAGE_BYTES',
      'PATCH',
      '/v1/threads/ok/messages/m1',
      { body: { body: 'y'.repeat(MAX_MESSAGE_BYTES + 1) }, user: 'u' },
      413,
    ],
    [
      'text/plain message over MAX_MESSAGE_BYTES',
      'POST',
      '/v1/threads/ok/messages',
      { raw: 'z'.repeat(MAX_MESSAGE_BYTES + 1), contentType: 'text/plain', user: 'u' },
      413,
    ],
    [
      'a NUL character in a string (jsonb cannot hold it)',
      'POST',
      '/v1/threads/ok/messages',
      { raw: '{"body": "a\\u0000b"}', user: 'u' },
      400,
    ],
    [
      'a NUL character in a key',
      'POST',
      '/v1/threads',
      { raw: '{"type": "group", "attributes": {"a\\u0000": 1}}' },
      400,
    ],
    [
      'JSON nested deeper than MAX_JSON_DEPTH',
      'POST',
      '/v1/threads/ok/messages',
      { body: { body: nest(MAX_JSON_DEPTH + 2) }, user: 'u' },
      400,
    ],
    [
      'attributes nested deeper than MAX_JSON_DEPTH',
      'POST',
      '/v1/threads',
      { body: { type: 'group', attributes: nest(MAX_JSON_DEPTH + 2) } },
      400,
    ],
    // Content types
    ['XML content type', 'POST', '/v1/threads', { raw: '<thread/>', contentType: 'application/xml' }, 415],
    [
      'form content type',
      'POST',
      '/v1/threads',
      { raw: 'type=group', contentType: 'application/x-www-form-urlencoded' },
      415,
    ],
    ['text/plain where only JSON is accepted', 'POST', '/v1/threads', { raw: 'group', contentType: 'text/plain' }, 415],
    [
      'JSON without a content type',
      'POST',
      '/v1/threads/ok/messages',
      { raw: '{"body": 1}', contentType: '', user: 'u' },
      415,
    ],
    // Types and fields
    ['wrong type for type', 'POST', '/v1/threads', { body: { type: 5 } }, 400],
    ['unknown thread type', 'POST', '/v1/threads', { body: { type: 'forum' } }, 400],
    ['title too long', 'POST', '/v1/threads', { body: { type: 'group', title: 't'.repeat(257) } }, 400],
    ['attributes not an object', 'POST', '/v1/threads', { body: { type: 'group', attributes: [1, 2] } }, 400],
    ['unknown policy', 'POST', '/v1/threads', { body: { type: 'group', policies: { read: 'everyone' } } }, 400],
    ['unknown field on create', 'POST', '/v1/threads', { body: { type: 'group', colour: 'red' } }, 400],
    [
      'unknown field on message',
      'POST',
      '/v1/threads/ok/messages',
      { body: { body: 1, pinned: true }, user: 'u' },
      400,
    ],
    ['missing message body', 'POST', '/v1/threads/ok/messages', { body: { id: 'nobody' }, user: 'u' }, 400],
    ['unknown field on patch', 'PATCH', '/v1/threads/ok', { body: { title: 'x', owner: 'me' } }, 400],
    ['unknown field on member put', 'PUT', '/v1/threads/ok/members/v', { body: { role: 'member', vip: true } }, 400],
    ['unknown role', 'PUT', '/v1/threads/ok/members/v', { body: { role: 'god' } }, 400],
    ['empty batch', 'POST', '/v1/threads/ok/messages/batch', { body: { messages: [] }, user: 'u' }, 400],
    [
      'batch not an array',
      'POST',
      '/v1/threads/ok/messages/batch',
      { body: { messages: { body: 1 } }, user: 'u' },
      400,
    ],
    ['_sign without user_id', 'POST', '/v1/_sign', { body: {} }, 400],
    // Ids
    ['thread id too long (path)', 'GET', `/v1/threads/${longId}`, {}, 400],
    ['thread id too long (body)', 'POST', '/v1/threads', { body: { id: longId, type: 'group' } }, 400],
    ['thread id with a space', 'GET', '/v1/threads/a%20b', {}, 400],
    ['thread id with a slash', 'GET', '/v1/threads/a%2Fb', {}, 400],
    ['thread id starting with a dash', 'POST', '/v1/threads', { body: { id: '-x', type: 'group' } }, 400],
    ['thread id with non-ASCII', 'POST', '/v1/threads', { body: { id: 'café', type: 'group' } }, 400],
    [
      'message id with bad characters',
      'POST',
      '/v1/threads/ok/messages',
      { body: { id: 'a<b>', body: 1 }, user: 'u' },
      400,
    ],
    ['message id too long', 'GET', `/v1/threads/ok/messages/${longId}`, {}, 400],
    ['member id too long', 'PUT', `/v1/threads/ok/members/${'u'.repeat(129)}`, {}, 400],
    ['reaction with a space', 'PUT', '/v1/threads/ok/messages/m1/reactions/thumbs%20up', { user: 'u' }, 400],
    ['badly percent-encoded path', 'GET', '/v1/threads/%E0%A4%A', {}, 400],
    // Query strings
    ['limit 0', 'GET', '/v1/threads?limit=0', {}, 400],
    ['limit over the maximum', 'GET', '/v1/threads?limit=201', {}, 400],
    ['limit not a number', 'GET', '/v1/threads/ok/messages?limit=ten', {}, 400],
    ['limit repeated', 'GET', '/v1/threads/ok/messages?limit=1&limit=2', {}, 400],
    ['messages limit over the maximum', 'GET', '/v1/threads/ok/messages?limit=1000', {}, 400],
    ['events limit over the maximum', 'GET', '/v1/threads/ok/events?limit=1001', {}, 400],
    ['negative after_seq', 'GET', '/v1/threads/ok/events?after_seq=-1', {}, 400],
    ['fractional before_seq', 'GET', '/v1/threads/ok/messages?before_seq=1.5', {}, 400],
    ['both before_seq and after_seq', 'GET', '/v1/threads/ok/messages?before_seq=5&after_seq=1', {}, 400],
    ['include_deleted not a boolean', 'GET', '/v1/threads/ok/messages?include_deleted=maybe', {}, 400],
    ['unknown query parameter', 'GET', '/v1/threads?sort=asc', {}, 400],
    ['bad cursor', 'GET', '/v1/threads?cursor=not-a-cursor', {}, 400],
    [
      'cursor with a bad date',
      'GET',
      `/v1/threads?cursor=${Buffer.from(JSON.stringify(['yesterday', 'x'])).toString('base64url')}`,
      {},
      400,
    ],
    [
      'cursor of the wrong shape',
      'GET',
      `/v1/threads?cursor=${Buffer.from(JSON.stringify({ a: 1 })).toString('base64url')}`,
      {},
      400,
    ],
    // Headers
    [
      'malformed Idempotency-Key',
      'POST',
      '/v1/threads',
      { body: { type: 'group' }, headers: { 'idempotency-key': 'a'.repeat(300) } },
      400,
    ],
    ['X-User-ID too long', 'GET', '/v1/threads', { user: 'u'.repeat(129) }, 401],
  ];

  test('every kind of bad input gets a 4xx problem+json that says what to fix, and nothing is written', async () => {
    const before = await counts();
    for (const [what, method, path, opts, status] of cases) {
      const r = await api(t.url, method, path, { key: sk, ...opts });
      assertProblem(r, status, what);
    }
    assert.deepEqual(await counts(), before);
  });

  test('validation errors list each bad field with its path', async () => {
    const r = await api(t.url, 'POST', '/v1/threads', { key: sk, body: { type: 'forum', title: 7, extra: 1 } });
    assertProblem(r, 400, 'several bad fields');
    const paths = r.body.errors.map((e: any) => e.path);
    assert.ok(paths.includes('body.type'), JSON.stringify(r.body.errors));
    assert.ok(paths.includes('body.title'), JSON.stringify(r.body.errors));
    assert.ok(r.body.errors.every((e: any) => typeof e.message === 'string' && e.message.length > 0));
  });

  test('a body just under the limits is accepted', async () => {
    const r = await api(t.url, 'POST', '/v1/threads/ok/messages', {
      key: sk,
      user: 'u',
      body: { body: 'y'.repeat(MAX_MESSAGE_BYTES - 2) },
    });
    assert.equal(r.status, 201, r.text);
    const deep = await api(t.url, 'POST', '/v1/threads/ok/messages', {
      key: sk,
      user: 'u',
      body: { body: nest(MAX_JSON_DEPTH - 1) },
    });
    assert.equal(deep.status, 201, deep.text);
  });

  test('odd but valid JSON is stored exactly: __proto__ keys, unicode, null, numbers', async () => {
    const raw = '{"body": {"__proto__": {"polluted": true}, "text": "héllo\\n😀", "n": 1e3, "nil": null}}';
    const r = await api(t.url, 'POST', '/v1/threads/ok/messages', { key: sk, user: 'u', raw });
    assert.equal(r.status, 201, r.text);
    assert.deepEqual(JSON.parse(r.text).body, JSON.parse(raw).body);
    assert.equal(({} as any).polluted, undefined);
    const got = await api(t.url, 'GET', `/v1/threads/ok/messages/${r.body.id}`, { key: sk });
    assert.equal(got.status, 200, got.text);
    assert.equal(got.body.body.text, 'héllo\n😀');
  });

  test('unknown routes and methods answer 404 problem+json', async () => {
    assertProblem(await api(t.url, 'GET', '/v1/nothing-here', { key: sk }), 404, 'unknown path');
    assertProblem(await api(t.url, 'PUT', '/v1/threads', { key: sk, body: {} }), 404, 'unknown method');
  });
});
