import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { signUserId } from '../src/modules/keys/key-auth-service';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type TestContext } from './helpers/app';

describe('a repeated dm create by a removed participant', () => {
  let t: TestContext;
  let creds: ProjectCredentials;
  const user = (id: string) => ({
    authorization: `Bearer ${creds.keys.publishable}`,
    'x-user-id': id,
    'x-user-signature': signUserId(creds.signing_secret, id),
  });

  before(async () => {
    t = await startTestApp();
    creds = await t.project();
  });
  after(() => t.stop());

  test('does not return the thread; the remaining member still gets it', async () => {
    const first = await api(t.url, 'POST', '/v1/threads', {
      headers: user('ann'),
      body: { type: 'dm', members: ['bob'] },
    });
    assert.equal(first.status, 201, first.text);
    const id = first.body.id as string;
    await api(t.url, 'POST', `/v1/threads/${id}/messages`, { headers: user('ann'), body: { body: { text: 'hi' } } });
    const leave = await api(t.url, 'DELETE', `/v1/threads/${id}/members/bob`, { headers: user('bob') });
    assert.equal(leave.status, 204, leave.text);

    const again = await api(t.url, 'POST', '/v1/threads', {
      headers: user('bob'),
      body: { type: 'dm', members: ['ann'] },
    });
    assert.ok(again.status === 403 || again.status === 404, `${again.status} ${again.text}`);
    assert.match(again.headers.get('content-type') ?? '', /problem\+json/);
    assert.ok(!again.text.includes(id), 'the answer does not name the thread');
    assert.equal((await api(t.url, 'GET', `/v1/threads/${id}/messages`, { headers: user('bob') })).status, 403);

    const ann = await api(t.url, 'POST', '/v1/threads', {
      headers: user('ann'),
      body: { type: 'dm', members: ['bob'] },
    });
    assert.equal(ann.status, 200, ann.text);
    assert.equal(ann.body.id, id);
  });
});
