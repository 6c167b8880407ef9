/**
 * Fast seeding for `npm run bench`: messages written straight into the thread log with SQL, the
 * way the service writes them, so a 1,000,000-message thread takes seconds, not an hour of API
 * calls. Valid data, as the append path leaves it: for each message one `message.created` event
 * (data {id, author, body, version: 1}) and its current-state row (version 1, version_seqs
 * [seq]), seqs continuing the thread's log gaplessly from its `last_seq`, and `last_seq` (with
 * `last_activity_at`) bumped in the same transaction under the thread row's lock — the same
 * allocation the service does, so appends that race with the seeding stay ordered. The log
 * tables only refuse UPDATE, DELETE and TRUNCATE (append-only triggers); inserts are what the
 * service does too.
 */
import type pg from 'pg';

const CHUNK = 250_000;

/** Appends `count` messages to each of `threadIds` (existing threads of the project). */
export async function seedMessages(
  db: pg.ClientBase,
  projectId: string,
  threadIds: string[],
  count: number,
  author = 'seed-author',
): Promise<void> {
  if (count <= 0 || threadIds.length === 0) return;
  await db.query('begin');
  try {
    await db.query('set local synchronous_commit = off');
    const { rows } = await db.query(
      `select id, last_seq from threads where project_id = $1 and id = any($2::text[]) order by id for update`,
      [projectId, threadIds],
    );
    if (rows.length !== threadIds.length) throw new Error(`seed: ${threadIds.length - rows.length} threads missing`);
    const ids = rows.map((r) => r.id as string);
    const bases = rows.map((r) => Number(r.last_seq));
    // Chunks keep each statement's memory bounded on a 1M-message thread.
    for (let from = 1; from <= count; from += CHUNK) {
      const to = Math.min(count, from + CHUNK - 1);
      await db.query(
        `with r as (
           select $1::text as project_id, t.id as thread_id, t.base + g as seq,
                  'seed-' || (t.base + g) as id, $5::text as author,
                  jsonb_build_object('text', 'seeded message ' || g || ' of a benchmark thread, typical chat length') as body
             from unnest($2::text[], $3::bigint[]) as t(id, base), generate_series($4::bigint, $6::bigint) g
         ), e as (
           insert into events (project_id, thread_id, seq, type, message_id, actor, data)
           select project_id, thread_id, seq, 'message.created', id, author,
                  jsonb_build_object('id', id, 'author', author, 'body', body, 'version', 1)
             from r
         )
         insert into messages (project_id, thread_id, seq, id, author, body, version, version_seqs, created_at)
         select project_id, thread_id, seq, id, author, body, 1, array[seq], now() from r`,
        [projectId, ids, bases, from, author, to],
      );
    }
    await db.query(
      `update threads set last_seq = last_seq + $3, last_activity_at = now() where project_id = $1 and id = any($2::text[])`,
      [projectId, ids, count],
    );
    await db.query('commit');
  } catch (e) {
    await db.query('rollback').catch(() => undefined);
    throw e;
  }
}
