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
    const created = await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'walk', type: 'group', title: 'Walkthrough' } });
    assert.equal(created.status, 201);
    assert.equal(created.body.last_seq, 1);
    const m1 = await api(t.url, 'POST', '/v1/threads/walk/messages', { key: sk, user: 'alice', body: { id: 'm1', body: { text: 'hello' } } });
    assert.equal(m1.status, 201);
    assert.deepEqual([m1.body.seq, m1.body.author, m1.body.version], [2, 'alice', 1]);
    assert.match(m1.body.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    const edited = await api(t.url, 'PATCH', '/v1/threads/walk/messages/m1', { key: sk, user: 'alice', body: { body: { text: 'hello!' } } });
    assert.equal(edited.status, 200);
    assert.equal(edited.body.version, 2);
    const versions = await api(t.url, 'GET', '/v1/threads/walk/messages/m1/versions', { key: sk });
    assert.deepEqual(versions.body.data.map((v: any) => v.body.text), ['hello', 'hello!']);
    const deleted = await api(t.url, 'DELETE', '/v1/threads/walk/messages/m1', { key: sk });
    assert.equal(deleted.body.deleted, true);
    const page = await api(t.url, 'GET', '/v1/threads/walk/messages', { key: sk });
    assert.deepEqual(page.body.data, []);
    const withDeleted = await api(t.url, 'GET', '/v1/threads/walk/messages?include_deleted=true', { key: sk });
    assert.equal(withDeleted.body.data[0].deleted, true);
    assert.equal(withDeleted.body.data[0].body, null);
    const history = await api(t.url, 'GET', '/v1/threads/walk/messages/m1/versions', { key: sk });
    assert.deepEqual(history.body.data.map((v: any) => [v.version, v.deleted]), [[1, false], [2, false], [3, true]]);
  });

  test('20 concurrent writers × 50 appends give seqs exactly 1..1000', async () => {
    await api(t.url, 'POST', '/v1/threads', { key: sk, body: { id: 'race', type: 'channel' } });
    const writers = Array.from({ length: 20 }, (_, w) =>
      (async () => {
        const seqs: number[] = [];
        for (let i = 0; i < 50; i++) {
          const r = await api(t.url, 'POST', '/v1/threads/race/messages', { key: sk, user: `w${w}`, body: { body: { w, i } } });
          assert.equal(r.status, 201, r.text);
          seqs.push(r.body.seq);
        }
        return seqs;
      })(),
    );
    const all = (await Promise.all(writers)).flat().sort((a, b) => a - b);
    // seq 1 is thread.created; the 1,000 messages hold 2..1001 — the log as a whole is 1..1001.
    assert.deepEqual(all, Array.from({ length: 1000 }, (_, i) => i + 2));
    const { rows } = await t.db.raw(`select seq from events where thread_id = 'race' order by seq`);
    assert.deepEqual(rows.map((r: any) => r.seq), Array.from({ length: 1001 }, (_, i) => i + 1));
  });
});
