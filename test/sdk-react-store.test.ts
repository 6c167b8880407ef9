import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { createBackendClient, createFrontendClient, type WebSocketConstructor } from '../sdk/src/index';
import { MessagesStore, type MessagesState } from '../sdk/src/react/messages-store';
import { startTestApp, type TestContext } from './helpers/app';
import { sleep } from './helpers/load';

/** The state behind useMessages (sdk/react), driven against a real server without a DOM. */
describe('React bindings: the useMessages store', () => {
  let t: TestContext;
  before(async () => {
    t = await startTestApp();
  });
  after(() => t.stop());

  async function until(store: MessagesStore, check: (s: MessagesState) => boolean, what: string) {
    const deadline = Date.now() + 15_000;
    while (!check(store.getState())) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}: ${JSON.stringify(store.getState())}`);
      await sleep(20);
    }
  }

  for (const transport of ['websocket', 'sse'] as const) {
    test(`newest page, loadOlder, optimistic send reconciled by id, live edits and reactions (${transport})`, async () => {
      const creds = await t.project(`store ${transport}`);
      const backend = createBackendClient({ baseUrl: t.url, secretKey: creds.keys.secret });
      const thread = `store-${transport}`;
      await backend.threads.create({ id: thread, type: 'group', members: ['ann', 'ben'] });
      await backend.asUser('ben').messages.sendBatch(
        thread,
        Array.from({ length: 25 }, (_, i) => ({ id: `old-${i}`, body: { text: `old ${i}` } })),
      );
      const ann = createFrontendClient({
        baseUrl: t.url,
        publishableKey: creds.keys.publishable,
        userId: 'ann',
        signature: await backend.signUser('ann', { remote: true }),
        WebSocket: transport === 'websocket' ? (WebSocket as unknown as WebSocketConstructor) : null,
      });
      const store = new MessagesStore(ann, thread, 10);
      const renders: MessagesState[] = [];
      store.subscribe(() => renders.push(store.getState()));
      try {
        await store.start();
        let s = store.getState();
        assert.deepEqual(
          s.messages.map((m) => m.id),
          Array.from({ length: 10 }, (_, i) => `old-${15 + i}`),
        );
        assert.equal(s.hasOlder, true);
        await store.loadOlder();
        await store.loadOlder();
        s = store.getState();
        assert.equal(s.messages.length, 25);
        assert.equal(s.messages[0].id, 'old-0');
        assert.equal(s.hasOlder, false);
        await until(store, (x) => x.live, 'the live tail');

        // Optimistic: shown at once as "sending", then the stored message under the same id, once.
        const sending = store.send({ text: 'hi ben' });
        const optimistic = store.getState().messages.at(-1)!;
        assert.equal(optimistic.status, 'sending');
        assert.equal(optimistic.author, 'ann');
        const stored = await sending;
        assert.ok(stored);
        assert.equal(stored.id, optimistic.id, 'reconciled by the client message id');
        await sleep(200); // the live copy of the same message arrives too
        const mine = store.getState().messages.filter((m) => m.id === stored.id);
        assert.equal(mine.length, 1);
        assert.equal(mine[0].status, 'sent');
        assert.equal(mine[0].seq, stored.seq);

        // Someone else's message, edit and reaction arrive live.
        const ben = backend.asUser('ben');
        const reply = await ben.messages.send(thread, { body: { text: 'hello ann' } });
        await until(store, (x) => x.messages.some((m) => m.id === reply.id), 'ben’s message');
        await ben.messages.edit(thread, reply.id, { text: 'hello, ann' });
        await until(
          store,
          (x) => x.messages.some((m) => m.id === reply.id && m.edited_at !== null && m.version === 2),
          'the edit',
        );
        await ben.messages.react(thread, stored.id, 'heart');
        await until(store, (x) => x.messages.find((m) => m.id === stored.id)?.reactions.heart === 1, 'the reaction');
        // Replayed events never apply twice: counts come from the server.
        await sleep(200);
        assert.equal(store.getState().messages.find((m) => m.id === stored.id)?.reactions.heart, 1);

        // A send the server refuses stays visible as failed, then succeeds on retry (same id).
        await backend.threads.update(thread, { policies: { write: 'owners' } });
        const refused = await store.send({ text: 'not allowed' });
        assert.equal(refused, undefined);
        const failed = store.getState().messages.find((m) => m.status === 'failed');
        assert.ok(failed);
        await backend.threads.update(thread, { policies: { write: 'members' } });
        const retried = await store.retry(failed.id);
        assert.equal(retried?.id, failed.id);
        assert.equal(store.getState().messages.filter((m) => m.status !== 'sent').length, 0);
        assert.ok(renders.length > 5);
      } finally {
        store.stop();
        ann.close();
      }
    });
  }

  test('jumpTo a page around a message, loadNewer to the live end (what arrived meanwhile once), replies keep reply_to', async () => {
    const creds = await t.project('store jump');
    const backend = createBackendClient({ baseUrl: t.url, secretKey: creds.keys.secret });
    const thread = 'store-jump';
    await backend.threads.create({ id: thread, type: 'group', members: ['ann', 'ben'] });
    const old = await backend.asUser('ben').messages.sendBatch(
      thread,
      Array.from({ length: 40 }, (_, i) => ({ id: `m-${i}`, body: { text: `m ${i}` } })),
    );
    const ann = createFrontendClient({
      baseUrl: t.url,
      publishableKey: creds.keys.publishable,
      userId: 'ann',
      signature: await backend.signUser('ann', { remote: true }),
      WebSocket: WebSocket as unknown as WebSocketConstructor,
    });
    const store = new MessagesStore(ann, thread, 10);
    const fresh = new MessagesStore(ann, thread, 10);
    const ids = () => store.getState().messages.map((m) => m.id);
    try {
      await store.start();
      await until(store, (x) => x.live, 'the live tail');
      assert.deepEqual(
        ids(),
        Array.from({ length: 10 }, (_, i) => `m-${30 + i}`),
      );

      // The page around m-5: five before it, it and four after; older and newer remain.
      await store.jumpTo(old[5].seq);
      assert.deepEqual(
        ids(),
        Array.from({ length: 10 }, (_, i) => `m-${i}`),
      );
      let s = store.getState();
      assert.equal(s.hasOlder, false);
      assert.equal(s.hasNewer, true);

      // A message sent now is kept aside: the loaded stretch stays contiguous.
      const live = await backend.asUser('ben').messages.send(thread, { id: 'live-1', body: { text: 'live' } });
      await until(store, (x) => x.lastSeq >= live.seq, 'the live message');
      assert.ok(!ids().includes('live-1'));

      // Paging down reaches the end, and the live message joins once.
      for (let i = 0; i < 10 && store.getState().hasNewer; i++) await store.loadNewer();
      s = store.getState();
      assert.equal(s.hasNewer, false);
      assert.deepEqual(ids(), [...old.map((m) => m.id), 'live-1']);
      const after = await backend.asUser('ben').messages.send(thread, { id: 'live-2', body: { text: 'after' } });
      await until(store, (x) => x.messages.at(-1)?.id === after.id, 'live messages shown again');

      // Everything is loaded now: a jump within it loads nothing.
      await store.jumpTo(old[2].seq);
      assert.equal(store.getState().hasNewer, false);
      assert.deepEqual(ids(), [...old.map((m) => m.id), 'live-1', 'live-2']);

      // A reply is optimistic with its reply_to, stored with it (messages.reply); sent while away
      // from the newest messages, it brings them back.
      await fresh.start();
      await fresh.jumpTo(old[2].seq);
      assert.equal(fresh.getState().hasNewer, true);
      const sending = fresh.reply('m-2', { text: 're: m 2' });
      assert.equal(fresh.getState().messages.at(-1)?.reply_to, 'm-2');
      const stored = await sending;
      assert.equal(stored?.reply_to, 'm-2');
      await until(fresh, (x) => !x.hasNewer && x.messages.at(-1)?.id === stored?.id, 'back at the newest');
      assert.equal(fresh.getState().messages.filter((m) => m.id === stored?.id).length, 1);
      assert.equal((await backend.messages.get(thread, stored.id)).reply_to, 'm-2');

      // jumpToLatest after a jump: the newest page again.
      await fresh.jumpTo(old[0].seq);
      assert.equal(fresh.getState().hasNewer, true);
      await fresh.jumpToLatest();
      assert.equal(fresh.getState().hasNewer, false);
      assert.equal(fresh.getState().messages.at(-1)?.id, stored?.id);
    } finally {
      fresh.stop();
      store.stop();
      ann.close();
    }
  });
});
