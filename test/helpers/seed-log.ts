import type { Knex } from 'knex';

/**
 * Writes a thread with a history dated in the past straight into the tables (INSERT only, as
 * the append path would have): thread.created and member.added at `start`, then `messages`
 * message.created events, message i at start + i·stepMs. The API cannot backdate writes, and
 * retention needs old rows to act on.
 */
export async function seedThread(
  db: Knex,
  o: { projectId: string; threadId: string; messages: number; start: Date; stepMs: number; author?: string },
) {
  const author = o.author ?? 'seed';
  const n = o.messages;
  const start = o.start.toISOString();
  const lastAt = new Date(o.start.getTime() + n * o.stepMs).toISOString();
  await db.raw(
    `insert into threads (project_id, id, type, created_by, created_at, updated_at, last_seq, last_activity_at)
     values (?, ?, 'group', ?, ?, ?, ?, ?)`,
    [o.projectId, o.threadId, author, start, start, n + 2, lastAt],
  );
  await db.raw(
    `insert into thread_members (project_id, thread_id, user_id, role, added_at) values (?, ?, ?, 'owner', ?)`,
    [o.projectId, o.threadId, author, start],
  );
  await db.raw(
    `insert into events (project_id, thread_id, seq, type, message_id, actor, data, created_at) values
       (:p, :t, 1, 'thread.created', null, :a,
        jsonb_build_object('id', :t::text, 'type', 'group', 'title', null, 'attributes', '{}'::jsonb,
                           'policies', jsonb_build_object('read', 'members', 'write', 'members'), 'created_by', :a::text),
        :s),
       (:p, :t, 2, 'member.added', null, :a, jsonb_build_object('user_id', :a::text, 'role', 'owner'), :s)`,
    { p: o.projectId, t: o.threadId, a: author, s: start },
  );
  if (n === 0) return;
  await db.raw(
    `with g as (
       select i, 'm' || i as id, :s::timestamptz + (i * :step::bigint) * interval '1 millisecond' as at
         from generate_series(1, :n::int) as i
     ), e as (
       insert into events (project_id, thread_id, seq, type, message_id, actor, data, created_at)
       select :p, :t, i + 2, 'message.created', id, :a,
              jsonb_build_object('id', id, 'author', :a::text, 'body', jsonb_build_object('text', 'message ' || i), 'version', 1), at
         from g
     )
     insert into messages (project_id, thread_id, seq, id, author, body, version, version_seqs, created_at)
     select :p, :t, i + 2, id, :a, jsonb_build_object('text', 'message ' || i), 1, array[i + 2]::bigint[], at from g`,
    { p: o.projectId, t: o.threadId, a: author, s: start, step: o.stepMs, n },
  );
}
