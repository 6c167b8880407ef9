import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { signUserId } from '../src/modules/keys/key-auth-service';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type TestContext } from './helpers/app';

const ROUNDS = 8;
const APPENDS = 40;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('write authorization of the fast append path against a concurrent removal', () => {
  let t: TestContext;
  let creds: ProjectCredentials;

  before(async () => {
    t = await startTestApp();
    creds = await t.project();
  });
  after(() => t.stop());

  test('no message of a removed member is committed after its member.removed', async () => {
    const headers = {
      authorization: `Bearer ${creds.keys.publishable}`,
      'x-user-id': 'leaver',
      'x-user-signature': signUserId(creds.signing_secret, 'leaver'),
    };
    let late = 0;
    let accepted = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const thread = `race-${round}`;
      const created = await api(t.url, 'POST', '/v1/threads', {
        key: creds.keys.secret,
        body: { id: thread, type: 'group', members: ['leaver', 'stayer'] },
      });
      assert.equal(created.status, 201, created.text);
      // Appends through the merged batch path, and the removal submitted while their
      // permission checks are in flight.
      const appends = Array.from({ length: APPENDS }, (_, i) =>
        api(t.url, 'POST', `/v1/threads/${thread}/messages`, { headers, body: { body: { i } } }),
      );
      await sleep(round % 4);
      const removal = api(t.url, 'DELETE', `/v1/threads/${thread}/members/leaver`, { key: creds.keys.secret });
      const answers = await Promise.all(appends);
      assert.equal((await removal).status, 204);
      for (const a of answers) assert.ok(a.status === 201 || a.status === 403, `${a.status} ${a.text}`);
      accepted += answers.filter((a) => a.status === 201).length;

      const events = await t
        .db('events')
        .select('seq', 'type', 'actor')
        .where({ project_id: creds.project_id, thread_id: thread })
        .orderBy('seq');
      const removedAt = events.find((e) => e.type === 'member.removed')!.seq;
      late += events.filter((e) => e.type === 'message.created' && e.actor === 'leaver' && e.seq > removedAt).length;
      // Every 201 is a message that is in the log before the removal.
      assert.equal(
        events.filter((e) => e.type === 'message.created' && e.actor === 'leaver' && e.seq < removedAt).length,
        answers.filter((a) => a.status === 201).length,
      );
    }
    assert.equal(late, 0, `messages of the removed member committed after its removal (${accepted} accepted in all)`);
  });
});
