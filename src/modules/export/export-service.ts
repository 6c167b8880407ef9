import type { Knex } from 'knex';
import { AppError, badRequest, conflict, unprocessable } from '../../lib/errors';
import { jsonBytes } from '../../lib/http/json';
import { zodFieldErrors } from '../../lib/http/problem';
import type { CommitPointers, LogIngest, ThreadLog } from '../thread-log/thread-log';
import type { MessagesStore } from '../messages/messages-store';
import { EXPORT_FORMAT, exportLineSchema, type EventLine, type ImportResult, type ThreadLine } from './export-schemas';
import { messageIdOf, type ExportStore } from './export-store';

const THREAD_PAGE = 100;
const EVENT_PAGE = 1_000;

export interface ExportCursor {
  afterThread?: string;
  afterSeq: number;
}

/**
 * Export: a project's threads and their retained events as NDJSON lines, read page by page
 * (constant memory), resumable at any (thread, seq). Import: the same lines appended to a
 * project's threads through the ingest pipeline with their original authors and times, in
 * bounded batches, idempotent by (thread, seq): what an interrupted import wrote is recognised
 * and skipped, so running it again completes it without duplicates.
 */
export function createExportService(deps: {
  db: Knex;
  store: ExportStore;
  ingest: LogIngest;
  log: Pick<ThreadLog, 'append'>;
  messagesStore: Pick<MessagesStore, 'get' | 'setReaction' | 'adjustReactionCount'>;
  batchSize: number;
  maxMessageBytes: number;
}) {
  const { db, store, ingest, messagesStore } = deps;

  async function* exportLines(
    projectId: string,
    from: ExportCursor = { afterSeq: 0 },
    onEvents?: (exported: number) => void,
  ): AsyncGenerator<string> {
    yield (
      JSON.stringify({
        kind: 'export',
        format: EXPORT_FORMAT,
        project_id: projectId,
        exported_at: new Date().toISOString(),
      }) + '\n'
    );
    let threads = 0;
    let events = 0;
    let fromId = from.afterThread ?? '';
    let inclusive = from.afterThread !== undefined;
    for (;;) {
      const page = await store.threadsPage(db, projectId, fromId, inclusive, THREAD_PAGE);
      for (const t of page) {
        threads++;
        yield JSON.stringify({ kind: 'thread', ...t }) + '\n';
        // The thread line's last_seq is the cut: its events are exported up to there.
        let after = Math.max(t.purged_through_seq, t.id === from.afterThread ? from.afterSeq : 0);
        for (;;) {
          const rows = await store.eventsPage(db, projectId, t.id, after, t.last_seq, EVENT_PAGE);
          if (rows.length > 0) {
            events += rows.length;
            onEvents?.(events);
            yield rows.map((r) => JSON.stringify({ kind: 'event', ...r })).join('\n') + '\n';
            after = rows[rows.length - 1].seq;
          }
          if (rows.length < EVENT_PAGE) break;
        }
      }
      if (page.length < THREAD_PAGE) break;
      fromId = page[page.length - 1].id;
      inclusive = false;
    }
    yield JSON.stringify({ kind: 'end', threads, events }) + '\n';
  }

  function checkEvent(e: EventLine, where: string) {
    const d = e.data;
    const str = (v: unknown) => typeof v === 'string' && v.length > 0 && v.length <= 128;
    const bad = (what: string) => unprocessable(`${where}: ${e.type} ${what}`);
    if (e.type.startsWith('message.') || e.type.startsWith('reaction.')) {
      if (!str(messageIdOf(e))) throw bad('needs message_id');
    }
    if (e.type === 'message.created') {
      if (!str(d.author ?? e.actor)) throw bad('needs data.author (or actor)');
      if (jsonBytes(d.body ?? null) > deps.maxMessageBytes)
        throw new AppError(
          'payload_too_large',
          `${where}: a message body may be at most ${deps.maxMessageBytes} bytes`,
        );
    }
    if (e.type.startsWith('member.') && !str(d.user_id)) throw bad('needs data.user_id');
    if (e.type === 'member.added' && !['owner', 'admin', 'member'].includes(d.role as string))
      throw bad('needs data.role: owner, admin or member');
    if (e.type.startsWith('reaction.') && (!str(d.user_id) || !str(d.reaction)))
      throw bad('needs data.user_id and data.reaction');
  }

  /** One batch of one thread's events, in one group-commit transaction. */
  async function importBatch(
    tx: Knex.Transaction,
    pointers: CommitPointers,
    projectId: string,
    t: ThreadLine,
    events: EventLine[],
  ) {
    let row = await store.lockThread(tx, projectId, t.id);
    if (!row) {
      if (!(await store.insertThread(tx, projectId, t)))
        throw conflict(`Thread "${t.id}" cannot be created here: its id or its dm pair is taken.`);
      // A thread exported after a purge starts at its horizon, with the members it had then.
      if (t.purged_through_seq > 0) await store.insertMembers(tx, projectId, t.id, t.members);
      row = { last_seq: t.purged_through_seq, purged_through_seq: t.purged_through_seq, deleted_at: null };
    }
    const last = Number(row.last_seq);
    const present = events.filter((e) => e.seq <= last && e.seq > Number(row.purged_through_seq));
    if (present.length > 0) {
      const keys = await store.eventKeys(tx, projectId, t.id, present[0].seq, present[present.length - 1].seq);
      for (const e of present) {
        const k = keys.get(e.seq);
        if (
          !k ||
          k.type !== e.type ||
          (k.message_id ?? null) !== (e.message_id ?? null) ||
          Date.parse(k.created_at) !== Date.parse(e.created_at)
        )
          throw conflict(
            `Thread "${t.id}" already has a different event at seq ${e.seq}: import into a project where the thread does not exist.`,
          );
      }
    }
    const fresh = events.filter((e) => e.seq > last);
    if (fresh.length === 0) return { imported: 0, skipped: events.length };
    fresh.forEach((e, i) => {
      if (e.seq !== last + 1 + i)
        throw unprocessable(
          `Thread "${t.id}": its log continues at seq ${last + 1 + i}, but the next event is seq ${e.seq}; events must be complete and in order.`,
        );
    });
    await deps.log.append(
      tx,
      pointers,
      projectId,
      t.id,
      fresh.map((e) => ({ type: e.type, messageId: e.message_id, actor: e.actor, data: e.data, at: e.created_at })),
      { allowDeleted: true },
    );
    // Consecutive new messages (most of any log) go in one INSERT; everything else in order.
    let created: EventLine[] = [];
    for (const e of fresh) {
      if (e.type === 'message.created') {
        created.push(e);
        continue;
      }
      await store.insertMessages(tx, projectId, created);
      created = [];
      if ((await store.project(tx, projectId, e)) !== 'reaction') continue;
      const messageId = messageIdOf(e);
      // A reaction to a message that is not here (purged before the export) changes no state.
      if (!(await messagesStore.get(tx, projectId, t.id, messageId))) continue;
      const on = e.type === 'reaction.added';
      const key = {
        projectId,
        threadId: t.id,
        messageId,
        reaction: e.data.reaction as string,
        userId: e.data.user_id as string,
      };
      if (await messagesStore.setReaction(tx, key, on))
        await messagesStore.adjustReactionCount(tx, projectId, t.id, messageId, key.reaction, on ? 1 : -1);
    }
    await store.insertMessages(tx, projectId, created);
    await store.touch(tx, projectId, t.id, fresh[fresh.length - 1].created_at);
    return { imported: fresh.length, skipped: events.length - fresh.length };
  }

  async function importLines(
    projectId: string,
    lines: AsyncIterable<{ line: string; n: number }>,
    onBatch?: (r: ImportResult) => void,
  ): Promise<ImportResult> {
    const result: ImportResult = { threads: 0, events_imported: 0, events_skipped: 0, complete: false };
    let thread: ThreadLine | null = null;
    let ensured = false;
    let pending: EventLine[] = [];

    const flush = async () => {
      if (!thread || (ensured && pending.length === 0)) return;
      const t = thread;
      const batch = pending;
      pending = [];
      const r = await ingest.submit({
        partition: `${projectId}:${t.id}`,
        run: (tx, pointers) => importBatch(tx, pointers, projectId, t, batch),
      });
      ensured = true;
      result.events_imported += r.imported;
      result.events_skipped += r.skipped;
      onBatch?.(result);
    };

    for await (const { line, n } of lines) {
      if (result.complete) throw badRequest(`Line ${n}: nothing may follow the end line.`);
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        throw badRequest(`Line ${n} is not valid JSON.`);
      }
      const parsed = exportLineSchema.safeParse(value);
      if (!parsed.success) {
        const errors = zodFieldErrors(parsed.error, `line ${n}`);
        throw badRequest(`Line ${n}: ${errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`, errors);
      }
      const l = parsed.data;
      switch (l.kind) {
        case 'export':
          break;
        case 'thread':
          await flush();
          if (thread?.id !== l.id) result.threads++;
          thread = l;
          ensured = false;
          break;
        case 'event':
          if (!thread || l.thread_id !== thread.id)
            throw badRequest(`Line ${n}: an event of thread "${l.thread_id}" must follow that thread's line.`);
          checkEvent(l, `Line ${n}`);
          pending.push(l);
          if (pending.length >= deps.batchSize) await flush();
          break;
        case 'end':
          await flush();
          result.complete = true;
          break;
      }
    }
    await flush();
    return result;
  }

  return {
    exportLines,
    importLines,
    /** Retained events from `fromThread` on: the denominator of an export's progress. */
    eventCount: (projectId: string, fromThread = '') => store.eventCount(db, projectId, fromThread),
  };
}

export type ExportService = ReturnType<typeof createExportService>;
