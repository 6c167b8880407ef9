import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Knex } from 'knex';
import type { PgListener } from '../../src/lib/pg-listener';
import { createLogger } from '../../src/lib/logger';
import type { EventView } from '../../src/modules/events/events-schemas';
import type { EventsStore } from '../../src/modules/events/events-store';
import { createTailHub, type TailSink } from '../../src/modules/realtime/tail-hub';

const at = '2026-01-01 00:00:00+00';

/** A hub over an in-memory log of one thread, with the LISTEN handler in the test's hands. */
async function hubOverFakeLog() {
  const log: EventView[] = [];
  let notify: (payload: string) => void = () => undefined;
  const listener = {
    listen: (_channel: string, handler: (payload: string) => void) => {
      notify = handler;
      return Promise.resolve();
    },
    on: () => undefined,
  } as unknown as PgListener;
  const eventsStore: EventsStore = {
    needsOpening: () => false,
    after: (_db, _p, _t, after, limit) => Promise.resolve(log.filter((e) => e.seq > after).slice(0, limit)),
  };
  const hub = createTailHub({ db: {} as Knex, listener, eventsStore, logger: createLogger('silent') });
  await hub.start();
  const append = (seq: number) => {
    const e = { seq, type: 'message.created', thread_id: 't', message_id: `m${seq}`, actor: 'u', data: { seq } };
    log.push({ ...e, created_at: '2026-01-01T00:00:00.000000Z' });
    return e;
  };
  return {
    hub,
    /** Appends seq and sends its NOTIFY, with the event carried or (`pointerOnly`) to be read back. */
    commit(seq: number, pointerOnly = false) {
      const e = append(seq);
      const carried = [['p', 't', seq, e.type, e.message_id, e.actor, e.data, at]];
      notify(JSON.stringify(pointerOnly ? { p: [['p', 't', seq]] } : { p: [['p', 't', seq]], e: carried }));
    },
  };
}

/** A subscriber whose every send costs `costMs` of CPU, as a socket write does. */
function slowSink(costMs: number) {
  const seqs: number[] = [];
  let onReady: () => void = () => undefined;
  const ready = new Promise<void>((r) => (onReady = r));
  const sink: TailSink = {
    send(events) {
      const until = performance.now() + costMs;
      while (performance.now() < until);
      seqs.push(...events.map((e) => e.seq));
    },
    ready: () => onReady(),
    reset: () => undefined,
    drain: () => Promise.resolve(),
    closed: () => undefined,
  };
  return { sink, seqs, ready };
}

describe('live tail fan-out (pure)', () => {
  test('a big fan-out starts after the wake-up callback and yields to I/O, and every subscriber still gets each event once, in order', async () => {
    const { hub, commit } = await hubOverFakeLog();
    const subs = Array.from({ length: 300 }, () => slowSink(0.05));
    for (const s of subs)
      hub.subscribe({
        projectId: 'p',
        threadId: 't',
        afterSeq: 0,
        threadLastSeq: 0,
        userId: null,
        sink: s.sink,
        recheck: () => Promise.resolve(true),
      });
    await Promise.all(subs.map((s) => s.ready));

    const received = () => subs.filter((s) => s.seqs.length > 0).length;
    commit(1);
    assert.equal(received(), 0, 'the NOTIFY callback returns before any socket write (the COMMIT reply goes first)');
    let midway = -1;
    setImmediate(() => (midway = received()));
    commit(2);
    commit(3, true);
    commit(4);
    const deadline = Date.now() + 10_000;
    while (subs.some((s) => s.seqs.length < 4) && Date.now() < deadline) await sleep(5);

    assert.ok(midway > 0 && midway < subs.length, `I/O ran midway through the fan-out (${midway} of ${subs.length})`);
    for (const s of subs) assert.deepEqual(s.seqs, [1, 2, 3, 4]);
    hub.closeAll();
  });
});
