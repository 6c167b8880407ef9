import type { Knex } from 'knex';

/**
 * What chat UIs ask of a thread beyond seq order: replies to a message, a user's messages,
 * and thread lists by creation time.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- The message this one replies to (same thread), fixed when the message is appended: it is
    -- in the message.created event too, so replaying the log rebuilds it.
    alter table messages add column reply_to text;
    create trigger messages_reply_to_fixed before update of reply_to on messages
      for each row when (old.reply_to is distinct from new.reply_to)
      execute function progressdb_reject_change();

    -- ?reply_to= and ?author= pages: a scan of one reply chain or one author's messages in seq order.
    create index messages_replies on messages (project_id, thread_id, reply_to, seq) where reply_to is not null;
    create index messages_by_author on messages (project_id, thread_id, author, seq);

    -- GET /v1/threads?sort=created (keyset on created_at, id like threads_activity).
    create index threads_created on threads (project_id, created_at desc, id desc);
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`
    drop index threads_created;
    drop index messages_by_author;
    drop index messages_replies;
    drop trigger messages_reply_to_fixed on messages;
    alter table messages drop column reply_to;
  `);
}
