import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { ProgressDBError, createBackendClient, type ThreadEvent, type WebSocketConstructor } from '../sdk/src/index';
import { api, startTestApp, type TestContext } from './helpers/app';

/** Honest horizons through the SDK: a tail that starts below what retention kept says so. */
describe('SDK live tail below a retention horizon', () => {
  let t: TestContext;
  before(async () => {
    t = await startTestApp();
  });
  after(() => t.stop());

  test('the tail reports reset and recovered: false, then delivers what remains; REST says 410', async () => {
    const creds = await t.app.projects.createProject({
      name: 'sdk retention',
      settings: { max_messages_per_thread: 5 },
    });
    const client = createBackendClient({ baseUrl: t.url, secretKey: creds.keys.secret });
    const writer = client.asUser('writer');
    await writer.messages.sendBatch(
      'kept',
      Array.from({ length: 12 }, (_, i) => ({ id: `r${i}`, body: i })),
    );
    const run = await api(t.url, 'POST', '/v1/admin/retention/run', { key: creds.keys.admin, body: {} });
    assert.equal(run.status, 200, run.text);
    const { purged_through_seq: horizon, last_seq: lastSeq } = await client.threads.get('kept');
    assert.ok(horizon > 0, 'retention removed a prefix');

    const gone = await client.events.list('kept', { after_seq: 0 }).then(
      () => assert.fail('expected 410'),
      (e: unknown) => e as ProgressDBError,
    );
    assert.ok(gone instanceof ProgressDBError);
    assert.equal(gone.status, 410);

    for (const WebSocketImpl of [WebSocket as unknown as WebSocketConstructor, null]) {
      const c = createBackendClient({ baseUrl: t.url, secretKey: creds.keys.secret, WebSocket: WebSocketImpl });
      const tail = c.tail('kept', { afterSeq: 0 });
      const resets: number[] = [];
      tail.on('reset', (r) => resets.push(r.purged_through_seq));
      const events: ThreadEvent[] = [];
      for await (const e of tail) {
        events.push(e);
        if (e.seq >= lastSeq) break;
      }
      assert.deepEqual(resets, [horizon], `${tail.transport}: one reset at the horizon`);
      assert.equal(tail.recovered, false);
      assert.deepEqual(
        events.map((e) => e.seq),
        Array.from({ length: lastSeq - horizon }, (_, i) => horizon + 1 + i),
        `${tail.transport}: everything after the horizon, once, in order`,
      );
      c.close();
    }
  });
});
