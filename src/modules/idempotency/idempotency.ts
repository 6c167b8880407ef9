import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import { badRequest, unprocessable } from '../../lib/errors';
import type { Logger } from '../../lib/logger';
import type { Reply } from '../../lib/http/route';
import type { AfterBatch, WorkItem } from '../ingest/ingest-pipeline';
import { createLookupBatcher } from '../../lib/lookup-batcher';
import { createIdempotencyStore, type IdempotencyScope, type StoredResponse } from './idempotency-store';

/**
 * Turns a write's work item into one that also stores the response under the request's
 * Idempotency-Key, in the same transaction. Services take it as `opts.wrap` and apply it to
 * the item they submit; they know nothing else about idempotency.
 */
export type WorkItemWrapper<T> = <S>(item: WorkItem<T, S, Knex.Transaction>) => WorkItem<T, S, Knex.Transaction>;

/** Another request with the same key committed first (possibly in the same group). */
class IdempotencyRace extends Error {}

const KEY_PATTERN = /^[\x21-\x7e]{1,255}$/;

export function parseIdempotencyKey(header: string | undefined): string | null {
  if (header === undefined) return null;
  if (!KEY_PATTERN.test(header)) throw badRequest('Idempotency-Key must be 1–255 printable ASCII characters.');
  return header;
}

export function requestHash(method: string, route: string, body: unknown): string {
  return createHash('sha256')
    .update(`${method} ${route}\n${JSON.stringify(body ?? null)}`)
    .digest('hex');
}

type Shaped = { status: number; body: unknown; headers?: Record<string, string> };

/** What a merged keyed write hands to `recordAfterBatch`: its key, request hash and response shape. */
interface Recording {
  scope: IdempotencyScope;
  hash: string;
  respond(value: unknown): Shaped;
}

/**
 * Idempotency-Key, in one place: a route opts in by answering through `reply`. The first
 * response to a key is stored beside the write (same transaction); a retry gets it back with
 * `Idempotent-Replayed: true`; the same key with a different request is a 422.
 */
export interface IdempotencyOptions {
  /** A key is remembered this long; a retry after it runs the request again. */
  ttlSeconds: number;
  /** How often this replica sweeps expired keys (every replica does; sweeps split the rows). */
  sweepIntervalMs: number;
  /** Rows per DELETE: each batch is a short transaction. */
  sweepBatch: number;
}

export const defaultIdempotencyOptions: IdempotencyOptions = {
  ttlSeconds: 86_400,
  sweepIntervalMs: 600_000,
  sweepBatch: 1_000,
};

export function createIdempotency(deps: { db: Knex; logger?: Logger; options?: Partial<IdempotencyOptions> }) {
  const store = createIdempotencyStore();
  const options = { ...defaultIdempotencyOptions, ...deps.options };
  const ttl = options.ttlSeconds;
  let timer: NodeJS.Timeout | null = null;
  let closed = false;
  let sweeping: Promise<number> | null = null;
  // Look-ups before submit, batched like reads' access checks: one query per turn of the event
  // loop (and while one is in flight, the next waits for it), each answered by a query sent after
  // it was asked — so a response committed before the request is always seen.
  const lookups = createLookupBatcher<IdempotencyScope, StoredResponse>({
    query: (scopes) => store.findMany(deps.db, scopes, ttl),
    maxBatch: 256,
  });

  /** Deletes every expired key, one bounded batch at a time; resolves to the number deleted. */
  async function sweepAll(): Promise<number> {
    let total = 0;
    for (;;) {
      const n = await store.sweepExpired(deps.db, ttl, options.sweepBatch);
      total += n;
      if (n < options.sweepBatch || closed) return total;
    }
  }

  function schedule() {
    // Jitter, so replicas started together do not sweep in lockstep.
    const delay = options.sweepIntervalMs * (0.75 + Math.random() / 2);
    timer = setTimeout(() => {
      sweeping = sweepAll()
        .then((n) => {
          if (n > 0) deps.logger?.debug({ deleted: n }, 'expired idempotency keys swept');
          return n;
        })
        .catch((err: unknown) => {
          deps.logger?.warn({ err }, 'idempotency sweep failed; retrying next interval');
          return 0;
        })
        .finally(() => {
          sweeping = null;
          if (!closed) schedule();
        });
    }, delay);
    timer.unref();
  }

  /**
   * Merged writes (appends) store their responses after their batch, all at once: one INSERT for
   * the batch's keyed items that succeeded. A key stored first by another request (committed
   * meanwhile, or twice in this batch) is refused: the batch runs again without that item, which
   * then runs alone, fails its own INSERT (`IdempotencyRace`) and is answered with the replay.
   */
  const recordAfterBatch: AfterBatch<unknown, Knex.Transaction> = {
    name: 'idempotency',
    async run(tx, done) {
      const refused: number[] = [];
      const rows: Array<{ k: number; scope: IdempotencyScope; requestHash: string; status: number; body: unknown }> =
        [];
      const seen = new Set<string>();
      done.forEach(({ input, value }, k) => {
        const { scope, hash, respond } = input as Recording;
        const id = JSON.stringify([scope.projectId, scope.keyId, scope.userId, scope.key]);
        if (seen.has(id)) return void refused.push(k);
        seen.add(id);
        const { status, body } = respond(value);
        rows.push({ k, scope, requestHash: hash, status, body });
      });
      const stored = await store.recordMany(tx, rows, ttl);
      rows.forEach((r, j) => stored.has(j) || refused.push(r.k));
      return refused;
    },
  };

  async function replayOf(scope: IdempotencyScope, hash: string): Promise<Reply | null> {
    const row = await lookups.lookup(scope);
    if (!row) return null;
    if (row.request_hash !== hash) {
      throw unprocessable(
        'This Idempotency-Key was already used with a different request; use a new key for a new request.',
      );
    }
    return { status: row.status, body: row.response, headers: { 'Idempotent-Replayed': 'true' } };
  }

  return {
    /** Starts the periodic sweep of expired keys. */
    start() {
      if (!timer && !closed) schedule();
    },

    /** One full sweep now (tests, and operators through the CLI). */
    sweep: sweepAll,

    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      timer = null;
      await sweeping;
    },

    /**
     * Replays a stored response, or runs `write` with a wrapper for its work item and shapes
     * the reply with `respond`. Without an Idempotency-Key header the wrapper is not given.
     */
    async reply<T>(
      ctx: {
        projectId: string;
        keyId: string;
        userId: string | null;
        header: string | undefined;
        route: string;
        body: unknown;
        /** The request's method (part of what a key is bound to); POST unless said. */
        method?: string;
      },
      respond: (value: T) => Shaped,
      write: (wrap?: WorkItemWrapper<T>) => Promise<T>,
    ): Promise<Reply> {
      const key = parseIdempotencyKey(ctx.header);
      if (!key) return respond(await write());
      const scope = { projectId: ctx.projectId, keyId: ctx.keyId, userId: ctx.userId ?? '', key };
      const hash = requestHash(ctx.method ?? 'POST', ctx.route, ctx.body);
      const stored = await replayOf(scope, hash);
      if (stored) return stored;
      const recording: Recording = { scope, hash, respond };
      const wrap: WorkItemWrapper<T> = (item) => ({
        partition: item.partition,
        // Alone: its response is stored in its own savepoint, after its write.
        async run(tx, pointers) {
          const value = await item.run(tx, pointers);
          const { status, body } = respond(value);
          if (!(await store.record(tx, scope, hash, status, body, ttl))) throw new IdempotencyRace();
          return value;
        },
        // Merged: still merged, its response stored with the batch's others (`recordAfterBatch`).
        ...(item.merge && { merge: { ...item.merge, after: { step: recordAfterBatch, input: recording } } }),
      });
      try {
        return respond(await write(wrap));
      } catch (e) {
        // The first request with this key has committed by now: answer with its response.
        if (e instanceof IdempotencyRace) return (await replayOf(scope, hash)) ?? Promise.reject(e);
        throw e;
      }
    },
  };
}

export type Idempotency = ReturnType<typeof createIdempotency>;
