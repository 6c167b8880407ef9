import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { signUserId } from '../src/modules/keys/key-auth-service';
import { api, startTestApp, type TestContext } from './helpers/app';
import { projectRows, snapshotDatabase, type Snapshot } from './helpers/db-snapshot';
import { example, fillPath, loadRoutes, type ApiRoute } from './helpers/openapi-routes';

const LEAK_PATTERNS = [
  /\bat [^\n]+\.(ts|js):\d+/,
  /\b(select|insert|update)\b[^\n]{0,80}\b(from|into|set|where)\b/i,
  /syntax error|relation "|duplicate key|violates/i,
];

interface Caller {
  name: string;
  headers: Record<string, string>;
  /** The statuses this caller must get on a route, or null when the route is not about B's objects. */
  expect(route: ApiRoute): number[] | null;
  skipUnlessAboutB?: boolean;
}

describe('isolation matrix: every API-key route of the OpenAPI document, against project B', () => {
  let t: TestContext;
  let routes: ApiRoute[];
  let doc: any;
  let b: { project_id: string; signing_secret: string; keys: { secret: string; publishable: string; admin: string } };
  let a: typeof b;
  let revokedKey: string;
  let threadId: string;
  let secretsOfB: string[];
  let before_: Snapshot;
  let sent = 0;

  before(async () => {
    // Hundreds of refused credentials from one address by design: the failed-auth limit (its own test) is raised.
    t = await startTestApp({ RATE_LIMIT_AUTH_FAILURES: '100000' });
    a = await t.project('A');
    b = await t.project('B');
    const sk = b.keys.secret;
    // B's objects: a members-only thread (generated id), a message, a reaction, members.
    const thread = await api(t.url, 'POST', '/v1/threads', {
      key: sk,
      user: 'bob',
      body: { type: 'group', title: 'b-private-title', members: ['carol'] },
    });
    assert.equal(thread.status, 201);
    threadId = thread.body.id;
    assert.equal(
      (
        await api(t.url, 'POST', `/v1/threads/${threadId}/messages`, {
          key: sk,
          user: 'bob',
          body: { id: 'b-msg', body: { text: 'b-private-body' } },
        })
      ).status,
      201,
    );
    assert.equal(
      (await api(t.url, 'PUT', `/v1/threads/${threadId}/messages/b-msg/reactions/like`, { key: sk, user: 'carol' }))
        .status,
      200,
    );
    const revoked = await t.app.projects.createKey(b.project_id, 'secret', 'to revoke');
    await t.app.projects.revokeKey(b.project_id, revoked.id);
    revokedKey = revoked.key;
    const keyIds = (await t.app.projects.listKeys(b.project_id)).map((k) => k.id);
    secretsOfB = [
      b.project_id,
      b.signing_secret,
      ...keyIds,
      b.keys.secret,
      b.keys.publishable,
      b.keys.admin,
      'b-private-body',
      'b-private-title',
    ];
    ({ doc, routes } = await loadRoutes(t.url));
    before_ = await snapshotDatabase(t.db, { where: projectRows(b.project_id) });
  });
  after(() => t.stop());

  const aboutB = (route: ApiRoute) => route.pathParams.some((p) => p.name === 'thread_id');
  const isAdmin = (route: ApiRoute) => route.path.startsWith('/v1/admin');

  test('cross-project (404), revoked (401), unsigned publishable (401) and non-member (403/404) are refused without leaks; B is unchanged', async () => {
    const pathValues: Record<string, string> = {
      thread_id: '',
      message_id: 'b-msg',
      user_id: 'carol',
      reaction: 'like',
      project_id: '',
      key_id: '',
    };
    pathValues.thread_id = threadId;
    pathValues.project_id = b.project_id;
    const mallory = signUserId(b.signing_secret, 'mallory');
    const creates = (r: ApiRoute) => r.method === 'POST' && /\/messages(\/batch)?$/.test(r.path);
    const callers: Caller[] = [
      {
        name: 'project A key',
        headers: { authorization: 'Bearer ', 'x-user-id': 'alice' },
        // Posting to an unknown thread id creates that thread in the caller's own project
        // (documented), so the append routes answer 201 there; B must stay untouched.
        expect: (r) => (!aboutB(r) ? null : creates(r) ? [201, 404] : [404]),
      },
      {
        name: 'revoked key of B',
        headers: { authorization: `Bearer ${revokedKey}`, 'x-user-id': 'bob' },
        expect: () => [401],
      },
      {
        name: 'publishable key of B, no signature',
        headers: { authorization: `Bearer ${b.keys.publishable}`, 'x-user-id': 'bob' },
        expect: () => [401],
      },
      {
        name: 'publishable key of B, signature of another user',
        headers: { authorization: `Bearer ${b.keys.publishable}`, 'x-user-id': 'bob', 'x-user-signature': mallory },
        expect: () => [401],
      },
      {
        name: 'publishable key of B, signature under the wrong secret',
        headers: {
          authorization: `Bearer ${b.keys.publishable}`,
          'x-user-id': 'bob',
          'x-user-signature': signUserId(a.signing_secret, 'bob'),
        },
        expect: () => [401],
      },
      {
        name: 'non-member user of B (signed)',
        headers: { authorization: `Bearer ${b.keys.publishable}`, 'x-user-id': 'mallory', 'x-user-signature': mallory },
        expect: (r) => (aboutB(r) ? [403, 404] : null),
        // Elsewhere (creating their own thread, their unread counts) a B user may act in B.
        skipUnlessAboutB: true,
      },
    ];

    // The append routes go last: A's append creates A's own thread with B's id (documented),
    // after which A's reads of that id would legitimately find A's thread.
    const apiRoutes = routes
      .filter((r) => r.auth === 'apiKey' && !/\/ws$/.test(r.path))
      .sort((x, y) => Number(creates(x)) - Number(creates(y)));
    assert.ok(apiRoutes.length >= 15, `API-key routes in the OpenAPI document: ${apiRoutes.length}`);
    const failures: string[] = [];
    let refusals = 0;
    for (const route of apiRoutes) {
      const path = fillPath(route.path, pathValues);
      // reply_to must name a message already in the thread (else 422); the matrix has none to name.
      const body = route.body
        ? JSON.stringify(example(doc, route.body, 0, true), (k, v: unknown) => (k === 'reply_to' ? undefined : v))
        : undefined;
      for (const caller of callers) {
        if (caller.skipUnlessAboutB && !aboutB(route)) continue;
        const headers = { ...caller.headers };
        if (caller.name === 'project A key')
          headers.authorization = `Bearer ${isAdmin(route) ? a.keys.admin : a.keys.secret}`;
        if (body) headers['content-type'] = 'application/json';
        const res = await fetch(t.url + path, {
          method: route.method,
          headers,
          body,
          signal: AbortSignal.timeout(10_000),
        });
        sent++;
        const streaming = (res.headers.get('content-type') ?? '').startsWith('text/event-stream');
        const text = streaming ? '' : await res.text();
        if (streaming) await res.body?.cancel();
        const where = `${caller.name} → ${route.method} ${route.path}`;
        if (res.status >= 500) failures.push(`${where}: ${res.status} ${text}`);
        const want = caller.expect(route);
        if (want && !want.includes(res.status))
          failures.push(`${where}: ${res.status}, expected ${want.join('/')}: ${text.slice(0, 200)}`);
        if (want && res.status >= 400) {
          refusals++;
          if (!/^application\/problem\+json/.test(res.headers.get('content-type') ?? ''))
            failures.push(`${where}: refusal is not problem+json`);
        }
        for (const secret of secretsOfB)
          if (text.includes(secret))
            failures.push(`${where}: the response contains B's "${secret.slice(0, 12)}…": ${text.slice(0, 200)}`);
        for (const leak of LEAK_PATTERNS)
          if (leak.test(text)) failures.push(`${where}: internals in the response: ${text.slice(0, 200)}`);
      }
    }
    assert.deepEqual(failures, []);

    // Nothing of B changed: every B row of every table, by content checksum.
    assert.deepEqual(await snapshotDatabase(t.db, { where: projectRows(b.project_id) }), before_);
    process.stdout.write(
      `# isolation matrix: ${apiRoutes.length} API-key routes × ${callers.length} callers = ${sent} requests, ${refusals} documented refusals verified, ` +
        `0 leaks of B's ids/secrets/content, B's rows unchanged\n`,
    );
  });
});
