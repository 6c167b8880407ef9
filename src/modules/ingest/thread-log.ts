import type { Knex } from 'knex';
import { notFound } from '../../lib/errors';

export type EventType =
  | 'thread.created'
  | 'thread.updated'
  | 'thread.deleted'
  | 'member.added'
  | 'member.removed'
  | 'message.created'
  | 'message.edited'
  | 'message.deleted'
  | 'reaction.added'
  | 'reaction.removed';

export interface EventInput {
  type: EventType;
  messageId?: string | null;
  actor: string | null;
  data: Record<string, unknown>;
  /** When it happened, for imported history; default: now(). */
  at?: string;
}

/**
 * Pointers to what a group committed: per thread, the highest seq (NOTIFY carries only
 * these) and the lowest (so in-transaction hooks can select the group's events).
 */
export class CommitPointers {
  readonly latest = new Map<string, { projectId: string; threadId: string; seq: number; first: number }>();

  record(projectId: string, threadId: string, seq: number, first = seq) {
    const key = `${projectId}\u0000${threadId}`;
    const prev = this.latest.get(key);
    this.latest.set(key, {
      projectId,
      threadId,
      seq: Math.max(seq, prev?.seq ?? seq),
      first: Math.min(first, prev?.first ?? first),
    });
  }

  mergeFrom(other: CommitPointers) {
    for (const p of other.latest.values()) this.record(p.projectId, p.threadId, p.seq, p.first);
  }
}

/**
 * Appends events to a thread inside the caller's transaction. The UPDATE of the thread row
 * both allocates the seq range and holds the row lock until commit, so seq order is commit
 * order and a rolled-back writer leaves no gap.
 */
export async function appendEvents(
  tx: Knex.Transaction,
  pointers: CommitPointers,
  projectId: string,
  threadId: string,
  events: EventInput[],
  opts: { allowDeleted?: boolean } = {},
): Promise<{ firstSeq: number; lastSeq: number; at: string }> {
  const { rows } = await tx.raw(
    `update threads set last_seq = last_seq + ?, last_activity_at = now()
      where project_id = ? and id = ? ${opts.allowDeleted ? '' : 'and deleted_at is null'}
      returning last_seq, now() as at`,
    [events.length, projectId, threadId],
  );
  if (rows.length === 0) throw notFound('thread');
  const lastSeq = Number(rows[0].last_seq);
  const firstSeq = lastSeq - events.length + 1;
  await tx('events').insert(
    events.map((e, i) => ({
      project_id: projectId,
      thread_id: threadId,
      seq: firstSeq + i,
      type: e.type,
      message_id: e.messageId ?? null,
      actor: e.actor,
      data: JSON.stringify(e.data),
      ...(e.at ? { created_at: e.at } : {}),
    })),
  );
  pointers.record(projectId, threadId, lastSeq, firstSeq);
  return { firstSeq, lastSeq, at: rows[0].at as string };
}

export const NOTIFY_CHANNEL = 'progressdb_events';
const NOTIFY_MAX_BYTES = 7_900;

/** The NOTIFY payloads for these pointers: {"p":[[project_id, thread_id, seq], …]}, each under 8,000 bytes. */
export function notifyPayloads(pointers: CommitPointers): string[] {
  const payloads: string[] = [];
  let batch: Array<[string, string, number]> = [];
  let size = 8;
  for (const p of pointers.latest.values()) {
    const item: [string, string, number] = [p.projectId, p.threadId, p.seq];
    const itemSize = Buffer.byteLength(JSON.stringify(item)) + 1;
    if (size + itemSize > NOTIFY_MAX_BYTES && batch.length > 0) {
      payloads.push(JSON.stringify({ p: batch }));
      batch = [];
      size = 8;
    }
    batch.push(item);
    size += itemSize;
  }
  if (batch.length > 0) payloads.push(JSON.stringify({ p: batch }));
  return payloads;
}

/**
 * One NOTIFY per committed group (more only if the pointers exceed PostgreSQL's 8,000-byte
 * payload). Payload: {"p":[[project_id, thread_id, seq], …]}.
 */
export async function notifyPointers(tx: Knex.Transaction, pointers: CommitPointers) {
  const payloads = notifyPayloads(pointers);
  if (payloads.length === 0) return;
  await tx.raw(`select pg_notify(?, x) from unnest(?::text[]) as x`, [NOTIFY_CHANNEL, payloads]);
}
