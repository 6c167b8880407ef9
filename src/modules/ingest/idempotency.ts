import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import { badRequest, unprocessable } from '../../lib/errors';
import type { Db } from '../../lib/db';

export interface IdempotencyScope {
  projectId: string;
  keyId: string;
  userId: string;
  key: string;
}

/** What an op writes beside its change, in the same transaction, when the request carried a key. */
export interface IdempotencyRecord<T> {
  scope: IdempotencyScope;
  requestHash: string;
  respond(value: T): { status: number; body: unknown };
}

/** The stored first response to a request with this Idempotency-Key. */
export class IdempotentReplay {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {}
}

/** Another request with the same key committed first (possibly in the same group). */
export class IdempotencyRace extends Error {}

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

/** The replay for a key seen before; a 422 when the key was used for a different request. */
export async function findIdempotentReplay(
  db: Db,
  scope: IdempotencyScope,
  hash: string,
): Promise<IdempotentReplay | null> {
  const row = await db('idempotency_keys')
    .first('request_hash', 'status', 'response')
    .where({ project_id: scope.projectId, key_id: scope.keyId, user_id: scope.userId, idem_key: scope.key });
  if (!row) return null;
  if (row.request_hash !== hash) {
    throw unprocessable(
      'This Idempotency-Key was already used with a different request; use a new key for a new request.',
    );
  }
  return new IdempotentReplay(row.status, row.response);
}

export async function recordIdempotentResponse<T>(tx: Knex.Transaction, rec: IdempotencyRecord<T>, value: T) {
  if (value instanceof IdempotentReplay) return;
  const { status, body } = rec.respond(value);
  const { rows } = await tx.raw(
    `insert into idempotency_keys (project_id, key_id, user_id, idem_key, request_hash, status, response)
     values (?, ?, ?, ?, ?, ?, ?::jsonb) on conflict do nothing returning 1`,
    [
      rec.scope.projectId,
      rec.scope.keyId,
      rec.scope.userId,
      rec.scope.key,
      rec.requestHash,
      status,
      JSON.stringify(body ?? null),
    ],
  );
  if (rows.length === 0) throw new IdempotencyRace();
}

/**
 * The whole Idempotency-Key flow for one POST: replay a stored response, or run the write
 * with a record to store beside it (same transaction), and shape the reply.
 */
export async function runIdempotent<T>(
  db: Db,
  ctx: {
    projectId: string;
    keyId: string;
    userId: string | null;
    header: string | undefined;
    route: string;
    body: unknown;
  },
  respond: (value: T) => { status: number; body: unknown; headers?: Record<string, string> },
  write: (record?: IdempotencyRecord<T>) => Promise<T | IdempotentReplay>,
): Promise<{ status: number; body: unknown; headers?: Record<string, string> }> {
  const key = parseIdempotencyKey(ctx.header);
  const replay = (r: IdempotentReplay) => ({
    status: r.status,
    body: r.body,
    headers: { 'Idempotent-Replayed': 'true' },
  });
  let record: IdempotencyRecord<T> | undefined;
  if (key) {
    const scope = { projectId: ctx.projectId, keyId: ctx.keyId, userId: ctx.userId ?? '', key };
    const hash = requestHash('POST', ctx.route, ctx.body);
    const stored = await findIdempotentReplay(db, scope, hash);
    if (stored) return replay(stored);
    record = { scope, requestHash: hash, respond };
  }
  const result = await write(record);
  return result instanceof IdempotentReplay ? replay(result) : respond(result);
}
