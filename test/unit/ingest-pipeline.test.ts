import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AppError } from '../../src/lib/errors';
import { createLogger } from '../../src/lib/logger';
import {
  createIngestPipeline,
  RUN_ALONE,
  type AfterBatch,
  type Batcher,
  type GroupStats,
  type WorkItem,
} from '../../src/modules/ingest/ingest-pipeline';
import { ConnectionLost, createFakeRunner, RetryableError, type FakeTx } from '../fakes/fake-transaction-runner';

/** The group scope of these tests: the names of what committed items recorded. */
type Scope = string[];
const scope = { create: (): Scope => [], merge: (into: Scope, from: Scope) => void into.push(...from) };
const options = { maxBatch: 100, maxWaitMs: 0, lanes: 1, queueLimit: 1000 };

function setup(opts: Parameters<typeof createFakeRunner>[0] & { lanes?: number; queueLimit?: number } = {}) {
  const fake = createFakeRunner(opts);
  const finished: Scope[] = [];
  const engine = createIngestPipeline<Scope, FakeTx>({
    runner: fake.runner,
    logger: createLogger('silent'),
    options: { ...options, lanes: opts.lanes ?? 1, queueLimit: opts.queueLimit ?? 1000 },
    scope,
    finish: async (tx, s) => {
      tx.log.push('finish');
      finished.push([...s]);
    },
  });
  const groups: GroupStats[] = [];
  engine.observe((s) => groups.push(s));
  return { ...fake, engine, groups, finished };
}

/** An item that writes `name` (and records it in the group scope), or fails after writing. */
function item(name: string, partition = 'p', fail?: unknown): WorkItem<string, Scope, FakeTx> {
  return {
    partition,
    async run(tx, s) {
      tx.write(name);
      s.push(name);
      if (fail) throw fail;
      return name;
    },
  };
}

/** A batcher that writes every input in one "statement"; inputs starting with "missing" go alone. */
function recordingBatcher(
  calls: string[][],
  opts: { fail?: (inputs: string[]) => boolean; fold?: boolean; folds?: string[]; autocommits?: boolean } = {},
) {
  const batcher: Batcher<string, string, Scope, FakeTx> = {
    name: 'test',
    ...(opts.folds && { folds: new Set(opts.folds) }),
    ...(opts.autocommits && { autocommits: (input: string) => !input.startsWith('locked') }),
    async run(tx, s, inputs, finish) {
      calls.push([...inputs]);
      for (const i of inputs) if (!i.startsWith('missing')) tx.write(i);
      if (opts.fail?.(inputs)) throw new Error('statement failed');
      s.push(...inputs.filter((i) => !i.startsWith('missing')));
      const folded = Boolean(finish && opts.fold);
      if (folded) tx.log.push(`folded finish of ${[...finish!.group, ...s].join(',')}`);
      const hooked = folded && finish!.hooks === true;
      if (hooked) tx.log.push(`folded hooks of ${s.join(',')}${finish!.autocommit ? ' (autocommit)' : ''}`);
      return {
        finished: folded,
        hooked,
        results: inputs.map((i) => (i.startsWith('missing') ? RUN_ALONE : { ok: `batched ${i}` })),
      };
    },
  };
  return batcher;
}

function mergeable(
  name: string,
  batcher: Batcher<string, string, Scope, FakeTx>,
  partition = 'p',
): WorkItem<string, Scope, FakeTx> {
  return { ...item(`alone ${name}`, partition), merge: { batcher: batcher, input: name } };
}

const settle = <T>(ps: Array<Promise<T>>) =>
  Promise.allSettled(ps).then((rs) => rs.map((r) => (r.status === 'fulfilled' ? r.value : r.reason)));

describe('group-commit engine (fake transaction runner)', () => {
  test('items submitted together commit in one transaction and are answered with their own results', async () => {
    const { engine, committed, transactions, groups } = setup();
    const results = await Promise.all(['a', 'b', 'c'].map((n, i) => engine.submit(item(n, `p${i}`))));
    assert.deepEqual(results, ['a', 'b', 'c']);
    assert.equal(transactions.length, 1);
    assert.deepEqual(committed, ['a', 'b', 'c']);
    assert.deepEqual(
      groups.map((g) => g.size),
      [3],
    );
  });

  test('a failing item rolls back only its own writes; its neighbours commit and it gets its error', async () => {
    const { engine, committed, finished } = setup();
    const boom = new AppError('conflict', 'no');
    const results = await settle([
      engine.submit(item('a')),
      engine.submit(item('b', 'p', boom)),
      engine.submit(item('c')),
    ]);
    assert.deepEqual(results, ['a', boom, 'c']);
    assert.deepEqual(committed, ['a', 'c']);
    assert.deepEqual(finished, [['a', 'c']], 'the rolled-back item left nothing in the group scope');
  });

  test('mergeable items run as one batch; items the batcher sends back run alone, after it', async () => {
    const { engine, committed, transactions } = setup();
    const calls: string[][] = [];
    const b = recordingBatcher(calls);
    const results = await Promise.all([
      engine.submit(mergeable('x', b, 'p1')),
      engine.submit(mergeable('missing-y', b, 'p2')),
      engine.submit(mergeable('z', b, 'p3')),
    ]);
    assert.deepEqual(calls, [['x', 'missing-y', 'z']]);
    assert.deepEqual(results, ['batched x', 'alone missing-y', 'batched z']);
    assert.deepEqual(committed, ['x', 'z', 'alone missing-y']);
    // The first statement of a transaction runs without a savepoint; the sent-back item has its own.
    assert.deepEqual(transactions[0].log, ['begin item_1', 'release item_1', 'finish']);
  });

  test('within a partition, submission order holds: an item alone flushes a batch holding its partition', async () => {
    const { engine, committed } = setup();
    const calls: string[][] = [];
    const b = recordingBatcher(calls);
    await Promise.all([
      engine.submit(mergeable('1', b, 'p')),
      engine.submit(mergeable('2', b, 'q')),
      engine.submit(item('edit', 'p')),
      engine.submit(item('other', 'r')),
      engine.submit(mergeable('3', b, 'p')),
    ]);
    assert.deepEqual(calls, [['1', '2'], ['3']]);
    assert.deepEqual(committed, ['1', '2', 'edit', 'other', '3']);
  });

  test('a failing first batch retries the group with savepoints, then runs its items alone', async () => {
    const { engine, committed, transactions } = setup();
    const calls: string[][] = [];
    const b = recordingBatcher(calls, { fail: (inputs) => inputs.includes('bad') });
    const bad: WorkItem<string, Scope, FakeTx> = {
      ...item('alone bad', 'p2', new AppError('conflict', 'bad alone')),
      merge: { batcher: b, input: 'bad' },
    };
    const results = await settle([engine.submit(mergeable('ok', b, 'p1')), engine.submit(bad)]);
    assert.equal(results[0], 'alone ok');
    assert.equal((results[1] as AppError).message, 'bad alone');
    assert.equal(transactions.length, 2, 'the bare attempt, then the group again with savepoints');
    assert.deepEqual(transactions[1].log.slice(0, 2), ['begin batch_0', 'rollback batch_0']);
    assert.deepEqual(committed, ['alone ok']);
  });

  test('items with an after-batch step stay in the batch; the step runs once, over the items that succeeded', async () => {
    const { engine, committed, transactions } = setup();
    const calls: string[][] = [];
    const b = recordingBatcher(calls);
    const seen: Array<Array<{ input: unknown; value: string }>> = [];
    const step: AfterBatch<string, FakeTx> = {
      name: 'record',
      async run(tx, done) {
        seen.push(done);
        tx.write(`recorded ${done.map((d) => d.input).join(',')}`);
        return [];
      },
    };
    const keyed = (name: string, partition: string): WorkItem<string, Scope, FakeTx> => ({
      ...mergeable(name, b, partition),
      merge: { batcher: b, input: name, after: { step, input: `k-${name}` } },
    });
    const results = await Promise.all([
      engine.submit(keyed('a', 'p1')),
      engine.submit(mergeable('plain', b, 'p2')),
      engine.submit(keyed('missing-b', 'p3')),
      engine.submit(keyed('c', 'p4')),
    ]);
    assert.deepEqual(calls, [['a', 'plain', 'missing-b', 'c']], 'keyed and plain items share one batch');
    assert.deepEqual(seen, [
      [
        { input: 'k-a', value: 'batched a' },
        { input: 'k-c', value: 'batched c' },
      ],
    ]);
    assert.deepEqual(results, ['batched a', 'batched plain', 'alone missing-b', 'batched c']);
    assert.deepEqual(committed, ['a', 'plain', 'c', 'recorded k-a,k-c', 'alone missing-b']);
    assert.equal(transactions.length, 1);
  });

  test('items an after-batch step refuses: the batch runs again without them, and they run alone', async () => {
    const { engine, committed, transactions, groups } = setup();
    const calls: string[][] = [];
    const b = recordingBatcher(calls);
    // Refuses every item whose key is "taken" (as a key another request stored first would be).
    const step: AfterBatch<string, FakeTx> = {
      name: 'record',
      async run(tx, done) {
        tx.write(`recorded ${done.map((d) => d.input).join(',')}`);
        return done.flatMap((d, j) => (d.input === 'taken' ? [j] : []));
      },
    };
    const keyed = (name: string, key: string, fail?: unknown): WorkItem<string, Scope, FakeTx> => ({
      ...item(`alone ${name}`, name, fail),
      merge: { batcher: b, input: name, after: { step, input: key } },
    });
    const results = await settle([
      engine.submit(keyed('a', 'free-a')),
      engine.submit(keyed('twin', 'taken', new AppError('conflict', 'raced'))),
      engine.submit(keyed('c', 'free-c')),
    ]);
    assert.deepEqual(results.slice(0, 1).concat(results.slice(2)), ['batched a', 'batched c']);
    assert.equal((results[1] as AppError).message, 'raced', 'the refused item ran alone and answered for itself');
    assert.deepEqual(calls, [
      ['a', 'twin', 'c'],
      ['a', 'twin', 'c'],
      ['a', 'c'],
    ]);
    assert.equal(
      transactions.length,
      2,
      'the bare attempt could not roll back the batch alone: once more with savepoints',
    );
    assert.deepEqual(transactions[1].log, [
      'begin batch_0',
      'rollback batch_0',
      'begin batch_0',
      'release batch_0',
      'begin item_1',
      'rollback item_1',
      'finish',
    ]);
    assert.deepEqual(committed, ['a', 'c', 'recorded free-a,free-c']);
    assert.deepEqual(
      groups.map((g) => g.size),
      [3],
    );
  });

  test('a group that fails at COMMIT is split until the one bad write fails alone', async () => {
    const { engine, committed, groups } = setup({
      failCommit: (writes) => (writes.includes('poison') ? new Error('deferred constraint') : null),
    });
    const names = ['a', 'b', 'poison', 'c', 'd'];
    const results = await settle(names.map((n) => engine.submit(item(n, n))));
    assert.deepEqual(results.slice(0, 2), ['a', 'b']);
    assert.equal((results[2] as Error).message, 'deferred constraint');
    assert.deepEqual(results.slice(3), ['c', 'd']);
    assert.deepEqual([...committed].sort(), ['a', 'b', 'c', 'd']);
    assert.deepEqual(
      groups.map((g) => g.size),
      [2, 2],
      'only the halves that committed are reported',
    );
  });

  test('retryable failures (deadlocks) run the whole group again; nothing is answered before it commits', async () => {
    let failures = 2;
    const { engine, committed, groups } = setup();
    const flaky: WorkItem<string, Scope, FakeTx> = {
      partition: 'p',
      async run(tx) {
        tx.write('flaky');
        if (failures-- > 0) throw new RetryableError('deadlock');
        return 'flaky';
      },
    };
    assert.deepEqual(await Promise.all([engine.submit(item('a')), engine.submit(flaky)]), ['a', 'flaky']);
    assert.deepEqual(committed, ['a', 'flaky']);
    assert.equal(groups[0].attempts, 3);
  });

  test('a lost connection answers the whole group "unavailable" and commits nothing', async () => {
    const { engine, committed } = setup();
    const lost: WorkItem<string, Scope, FakeTx> = {
      partition: 'p',
      run: () => Promise.reject(new ConnectionLost('gone')),
    };
    const results = await settle([engine.submit(item('a')), engine.submit(lost)]);
    assert.deepEqual(
      results.map((r) => (r as AppError).kind),
      ['unavailable', 'unavailable'],
    );
    assert.deepEqual(committed, []);
  });

  /** A beforeCommit hook that logs 'hook' in the transaction and records the scopes it saw. */
  function recordHooks(engine: ReturnType<typeof setup>['engine']): Scope[] {
    const seen: Scope[] = [];
    engine.beforeCommit(async (tx, s) => {
      tx.log.push('hook');
      seen.push([...s]);
    });
    return seen;
  }

  test('beforeCommit hooks see all the group committed, even when its last batch folded the finishing step in', async () => {
    const { engine, transactions, finished } = setup();
    const seen = recordHooks(engine);
    const calls: string[][] = [];
    const b = recordingBatcher(calls, { fold: true });
    await settle([
      engine.submit(item('a')),
      engine.submit(item('x', 'q', new Error('x'))),
      engine.submit(mergeable('m', b, 'r')),
    ]);
    assert.deepEqual(seen, [['a', 'm']]);
    // The NOTIFY takes effect at COMMIT (or never), so it may go before the hooks: the last
    // batch covered a and m, and the finishing step has nothing left to send.
    const log = transactions[0].log;
    assert.ok(log.indexOf('folded finish of a,m') >= 0 && log.indexOf('folded finish of a,m') < log.indexOf('hook'));
    assert.deepEqual(log.slice(-2), ['hook', 'finish']);
    assert.deepEqual(finished, [[]]);
  });

  test('with hooks and no folding batcher, the finishing step covers the whole group after them', async () => {
    const { engine, transactions, finished } = setup();
    const seen = recordHooks(engine);
    const calls: string[][] = [];
    const b = recordingBatcher(calls);
    await settle([engine.submit(item('a')), engine.submit(mergeable('m', b, 'r'))]);
    assert.deepEqual(seen, [['a', 'm']]);
    assert.deepEqual(finished, [['a', 'm']]);
    assert.deepEqual(transactions[0].log.slice(-2), ['hook', 'finish']);
  });

  test('without hooks, the last batch may fold the finishing step into its statement', async () => {
    const { engine, transactions, finished } = setup();
    const calls: string[][] = [];
    const b = recordingBatcher(calls, { fold: true });
    await Promise.all([engine.submit(item('a', 'p')), engine.submit(mergeable('m', b, 'q'))]);
    assert.ok(transactions[0].log.includes('folded finish of a,m'));
    assert.deepEqual(finished, [[]], 'the finishing step has nothing left to send');
  });

  /** A named beforeCommit hook (foldable by batchers that list it) recording the scopes it saw. */
  function recordNamedHook(engine: ReturnType<typeof setup>['engine'], name = 'outbox'): Scope[] {
    const seen: Scope[] = [];
    engine.beforeCommit(
      async (tx, s) => {
        tx.log.push('hook');
        seen.push([...s]);
      },
      { name },
    );
    return seen;
  }

  test('a group of one batcher that autocommits, with every hook foldable, is one autocommit statement', async () => {
    const { engine, transactions, autocommits, committed, finished, groups } = setup({ autocommit: true });
    const seen = recordNamedHook(engine);
    const calls: string[][] = [];
    const b = recordingBatcher(calls, { fold: true, folds: ['outbox'], autocommits: true });
    const results = await Promise.all(['a', 'b', 'c'].map((n, i) => engine.submit(mergeable(n, b, `p${i}`))));
    assert.deepEqual(results, ['batched a', 'batched b', 'batched c']);
    assert.equal(transactions.length, 0, 'no BEGIN/COMMIT');
    assert.equal(autocommits.length, 1);
    assert.deepEqual(autocommits[0].log, ['folded finish of a,b,c', 'folded hooks of a,b,c (autocommit)']);
    assert.deepEqual(committed, ['a', 'b', 'c']);
    assert.deepEqual(seen, [], 'the hook ran inside the statement, not after it');
    assert.deepEqual(finished, []);
    assert.deepEqual(
      groups.map((g) => g.size),
      [3],
    );
  });

  test('a failing autocommit statement wrote nothing: the group runs again in a transaction, items alone', async () => {
    const { engine, transactions, autocommits, committed } = setup({ autocommit: true });
    const seen = recordNamedHook(engine);
    const calls: string[][] = [];
    const b = recordingBatcher(calls, {
      fold: true,
      folds: ['outbox'],
      autocommits: true,
      fail: (inputs) => inputs.includes('bad'),
    });
    const results = await settle([engine.submit(mergeable('a', b, 'p')), engine.submit(mergeable('bad', b, 'q'))]);
    assert.equal(autocommits.length, 1);
    assert.equal(transactions.length, 1);
    // In the transaction the batch failed again (in its savepoint): each item alone, then the hook.
    assert.deepEqual(results, ['alone a', 'alone bad']);
    assert.deepEqual(committed, ['alone a', 'alone bad'], 'nothing of the failed statement');
    assert.deepEqual(seen, [['alone a', 'alone bad']]);
  });

  test('items an autocommit statement sends back commit afterwards, alone, in a transaction with the hooks', async () => {
    const { engine, transactions, autocommits, committed, finished } = setup({ autocommit: true });
    const seen = recordNamedHook(engine);
    const calls: string[][] = [];
    const b = recordingBatcher(calls, { fold: true, folds: ['outbox'], autocommits: true });
    const results = await Promise.all([
      engine.submit(mergeable('a', b, 'p')),
      engine.submit(mergeable('missing', b, 'q')),
    ]);
    assert.deepEqual(results, ['batched a', 'alone missing']);
    assert.equal(autocommits.length, 1);
    assert.equal(transactions.length, 1);
    assert.deepEqual(committed, ['a', 'alone missing']);
    assert.deepEqual(seen, [['alone missing']]);
    assert.deepEqual(finished, [['alone missing']]);
  });

  test('no autocommit when a hook cannot be folded, or an input needs a transaction', async () => {
    for (const [input, hookName] of [
      ['a', 'webhooks-elsewhere'],
      ['locked a', 'outbox'],
    ]) {
      const { engine, transactions, autocommits, committed } = setup({ autocommit: true });
      const seen = recordNamedHook(engine, hookName);
      const b = recordingBatcher([], { fold: true, folds: ['outbox'], autocommits: true });
      await engine.submit(mergeable(input, b, 'p'));
      assert.equal(autocommits.length, 0);
      assert.equal(transactions.length, 1);
      assert.deepEqual(committed, [input]);
      // A foldable hook is folded into the group's only batch even in a transaction (it is then
      // left nothing to do).
      assert.deepEqual(seen, hookName === 'outbox' ? [[]] : [[input]]);
    }
  });

  test('a hook folded into the first batch does not see it again, but sees what ran alone after it', async () => {
    const { engine, transactions, finished } = setup();
    const seen = recordNamedHook(engine);
    const b = recordingBatcher([], { fold: true, folds: ['outbox'] });
    await Promise.all([engine.submit(mergeable('m', b, 'p')), engine.submit(mergeable('missing', b, 'q'))]);
    assert.deepEqual(transactions[0].log.slice(0, 2), ['folded finish of m', 'folded hooks of m']);
    assert.deepEqual(seen, [['alone missing']]);
    assert.deepEqual(finished, [['alone missing']]);
  });

  test('partitions hash to lanes: two lanes commit separate groups', async () => {
    const { engine, transactions } = setup({ lanes: 2 });
    // Find two partitions on different lanes by trying: each lane's group is its own transaction.
    await Promise.all(['p0', 'p1', 'p2', 'p3', 'p4', 'p5'].map((p) => engine.submit(item(p, p))));
    assert.equal(transactions.length, 2);
    const all = transactions.flatMap((t) => t.writes).sort();
    assert.deepEqual(all, ['p0', 'p1', 'p2', 'p3', 'p4', 'p5']);
  });

  test('a full queue and a closed engine refuse writes with "unavailable"; close() waits for queued writes', async () => {
    const { engine, committed } = setup({ queueLimit: 2 });
    const queued = [engine.submit(item('a')), engine.submit(item('b'))];
    await assert.rejects(engine.submit(item('c')), (e: AppError) => e.kind === 'unavailable');
    await engine.close();
    assert.deepEqual(await Promise.all(queued), ['a', 'b']);
    assert.deepEqual(committed, ['a', 'b']);
    await assert.rejects(engine.submit(item('d')), (e: AppError) => e.kind === 'unavailable');
  });
});
