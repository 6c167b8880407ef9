/**
 * Look-ups batched the way group commit batches writes: while no batch query is in flight, a
 * look-up goes out at once (at the end of the current turn of the event loop, with whatever
 * else that turn asked for); while one is in flight, new look-ups wait and go together in the
 * next query, sent when it returns. A look-up never joins a query that was already sent, so
 * every answer comes from a query that started after it was asked for (the page cache's "never
 * stale" rests on that: docs/DESIGN.md).
 */
export interface LookupBatcherOptions<K, R> {
  /** One query for many keys; answers by position (undefined: nothing for that key). */
  query: (keys: K[]) => Promise<ReadonlyArray<R | undefined>>;
  /** At most this many keys per query; the rest wait for the next one. */
  maxBatch: number;
  /** Called with the size of every batch sent (metrics). */
  onBatch?: (size: number) => void;
  /** How the first look-up of an idle batcher is sent (default: setImmediate). */
  schedule?: (send: () => void) => void;
}

interface Waiter<K, R> {
  key: K;
  resolve: (r: R | undefined) => void;
  reject: (e: unknown) => void;
}

export function createLookupBatcher<K, R>(opts: LookupBatcherOptions<K, R>) {
  const schedule = opts.schedule ?? ((send: () => void) => void setImmediate(send));
  let queue: Array<Waiter<K, R>> = [];
  /** A query is in flight, or the send of the next one is scheduled. */
  let busy = false;

  function send() {
    const batch = queue.length <= opts.maxBatch ? queue : queue.slice(0, opts.maxBatch);
    queue = batch === queue ? [] : queue.slice(opts.maxBatch);
    opts.onBatch?.(batch.length);
    let answered: Promise<ReadonlyArray<R | undefined>>;
    try {
      answered = opts.query(batch.map((w) => w.key));
    } catch (e) {
      answered = Promise.reject(e);
    }
    answered.then(
      (rows) => {
        for (let i = 0; i < batch.length; i++) batch[i].resolve(rows[i]);
        next();
      },
      (e: unknown) => {
        for (const w of batch) w.reject(e);
        next();
      },
    );
  }

  function next() {
    if (queue.length > 0) send();
    else busy = false;
  }

  return {
    /** The row for this key, from a query sent after this call. */
    lookup(key: K): Promise<R | undefined> {
      return new Promise<R | undefined>((resolve, reject) => {
        queue.push({ key, resolve, reject });
        if (busy) return;
        busy = true;
        schedule(send);
      });
    },

    /** Look-ups waiting for a query (not counting the one in flight). */
    get pending() {
      return queue.length;
    },
  };
}

export type LookupBatcher<K, R> = ReturnType<typeof createLookupBatcher<K, R>>;
