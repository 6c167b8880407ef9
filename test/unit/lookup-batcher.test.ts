import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { createLookupBatcher } from '../../src/lib/lookup-batcher';

/** A fake batch query the test answers by hand: every call is recorded with its keys. */
function fakeQuery() {
  const calls: Array<{ keys: string[]; answer: (rows?: Array<string | undefined>) => void; fail: (e: Error) => void }> =
    [];
  const query = (keys: string[]) =>
    new Promise<Array<string | undefined>>((resolve, reject) => {
      calls.push({
        keys,
        answer: (rows) => resolve(rows ?? keys.map((k) => (k.startsWith('missing') ? undefined : `row:${k}`))),
        fail: reject,
      });
    });
  return { calls, query };
}

describe('read-access batcher (pure)', () => {
  test('an idle batcher sends a look-up alone, in the same turn of the event loop', async () => {
    const { calls, query } = fakeQuery();
    const batcher = createLookupBatcher({ query, maxBatch: 500 });
    const a = batcher.lookup('a');
    await tick();
    assert.deepEqual(
      calls.map((c) => c.keys),
      [['a']],
    );
    calls[0].answer();
    assert.equal(await a, 'row:a');
    const b = batcher.lookup('b');
    await tick();
    assert.deepEqual(calls[1]?.keys, ['b'], 'idle again: the next look-up goes at once');
    calls[1].answer();
    assert.equal(await b, 'row:b');
  });

  test('look-ups made in one turn go together; look-ups made while a query is in flight wait for the next one', async () => {
    const { calls, query } = fakeQuery();
    const sizes: number[] = [];
    const batcher = createLookupBatcher({ query, maxBatch: 500, onBatch: (n) => sizes.push(n) });
    const first = [batcher.lookup('a'), batcher.lookup('b')];
    await tick();
    assert.equal(calls.length, 1);
    assert.deepEqual(calls[0].keys, ['a', 'b']);
    const second = [batcher.lookup('c'), batcher.lookup('missing-d'), batcher.lookup('e')];
    await tick();
    await tick();
    assert.equal(calls.length, 1, 'nothing is sent while a query is in flight');
    assert.equal(batcher.pending, 3);
    calls[0].answer();
    assert.deepEqual(await Promise.all(first), ['row:a', 'row:b']);
    assert.equal(calls.length, 2, 'the waiting look-ups go as soon as the query in flight returns');
    assert.deepEqual(calls[1].keys, ['c', 'missing-d', 'e'], 'in the order they were made');
    calls[1].answer();
    assert.deepEqual(await Promise.all(second), ['row:c', undefined, 'row:e'], 'answers by position');
    assert.deepEqual(sizes, [2, 3]);
  });

  test('a look-up never joins a query that was already sent', async () => {
    const { calls, query } = fakeQuery();
    const batcher = createLookupBatcher({ query, maxBatch: 500 });
    const early = batcher.lookup('x');
    await tick();
    const sentAt = calls.length;
    const late = batcher.lookup('x');
    await tick();
    calls[0].answer(['old']);
    assert.equal(await early, 'old');
    assert.equal(calls.length, sentAt + 1, 'the later look-up has a query of its own, sent after it');
    calls[1].answer(['new']);
    assert.equal(await late, 'new');
  });

  test('a failing query rejects every look-up in it, and only those', async () => {
    const { calls, query } = fakeQuery();
    const batcher = createLookupBatcher({ query, maxBatch: 500 });
    const failing = [batcher.lookup('a'), batcher.lookup('b')].map((p) =>
      p.then(
        () => 'ok',
        (e: Error) => e.message,
      ),
    );
    await tick();
    const after = batcher.lookup('c');
    calls[0].fail(new Error('Connection terminated unexpectedly'));
    assert.deepEqual(await Promise.all(failing), [
      'Connection terminated unexpectedly',
      'Connection terminated unexpectedly',
    ]);
    assert.deepEqual(calls[1].keys, ['c'], 'the batcher goes on with the next batch');
    calls[1].answer();
    assert.equal(await after, 'row:c');
  });

  test('a query that throws synchronously rejects its look-ups and leaves the batcher usable', async () => {
    let throwNext = true;
    const batcher = createLookupBatcher<string, string>({
      query: (keys) => {
        if (throwNext) {
          throwNext = false;
          throw new Error('boom');
        }
        return Promise.resolve(keys.map((k) => `row:${k}`));
      },
      maxBatch: 500,
    });
    await assert.rejects(batcher.lookup('a'), /boom/);
    assert.equal(await batcher.lookup('b'), 'row:b');
  });

  test('caps a batch at maxBatch; the rest go in the following queries', async () => {
    const { calls, query } = fakeQuery();
    const batcher = createLookupBatcher({ query, maxBatch: 3 });
    const all = ['a', 'b', 'c', 'd', 'e', 'f', 'g'].map((k) => batcher.lookup(k));
    await tick();
    assert.deepEqual(calls[0].keys, ['a', 'b', 'c']);
    calls[0].answer();
    await tick();
    assert.deepEqual(calls[1].keys, ['d', 'e', 'f']);
    calls[1].answer();
    await tick();
    assert.deepEqual(calls[2].keys, ['g']);
    calls[2].answer();
    assert.deepEqual(await Promise.all(all), ['row:a', 'row:b', 'row:c', 'row:d', 'row:e', 'row:f', 'row:g']);
    assert.equal(calls.length, 3);
  });
});
