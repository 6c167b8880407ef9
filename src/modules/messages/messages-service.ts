import type { Knex } from 'knex';
import { badRequest, forbidden, notFound, preconditionFailed, unprocessable, AppError } from '../../lib/errors';
import { idSchema, newId } from '../../lib/ids';
import { jsonBytes } from '../../lib/http/json';
import { decodePageCursor, encodePageCursor } from '../../lib/http/page-cursor';
import type { ApiPrincipal } from '../../lib/http/route';
import type { WorkItemWrapper } from '../idempotency/idempotency';
import type { CommitPointers, LogIngest, LogWorkItem, ThreadLog } from '../thread-log/thread-log';
import { isTrusted } from '../threads/thread-access';
import type { ThreadsService } from '../threads/threads-service';
import {
  appendMany,
  createAppendBatcher,
  THREAD_MISSING,
  WRITE_DENIED,
  type AppendOutcome,
  type AppendRequest,
  type NewMessage,
} from './message-append';
import type { MessagesStore } from './messages-store';
import type { MessageInput, MessageVersionView, MessageView, PageQuery } from './messages-schemas';
import type { EncryptionService } from '../encryption/encryption-service';
import { isEnvelope } from '../encryption/envelope';
import { someString } from '../encryption/field-paths';
import { versionOf, type PageCache } from './page-cache';
import { z } from '../../lib/zod';

/** A versions page's cursor: its thread, its message and the last version it returned. */
const versionCursor = z.tuple([idSchema, idSchema, z.number().int().min(1).max(Number.MAX_SAFE_INTEGER)]);

/** Field encryption as the messages service uses it (seal before ingest, open on every read). */
export type MessageCrypto = Pick<
  EncryptionService,
  'encrypts' | 'sealer' | 'openMessages' | 'openVersions' | 'reservedIn' | 'reservedPrefix'
>;

/** An edit or delete: idempotency (`wrap`), and the versions If-Match allows ('*': any). */
export interface RevisionOptions {
  wrap?: WorkItemWrapper<MessageView>;
  ifMatch?: number[] | '*';
}

export function createMessagesService(deps: {
  db: Knex;
  ingest: LogIngest;
  log: ThreadLog;
  threads: Pick<ThreadsService, 'authorize' | 'authorizeRead' | 'mayWrite' | 'writeGuard' | 'createIfAbsent'>;
  messagesStore: MessagesStore;
  maxMessageBytes: number;
  maxReactionsPerMessage: number;
  crypto: MessageCrypto;
  /** Serialised pages per replica; absent or disabled: every page is read from PostgreSQL. */
  pageCache?: PageCache;
  /** How long an opened (decrypted) page may be served from the page cache; 0: never cached. */
  sealedPageTtlMs?: number;
}) {
  const { db, ingest, log, threads, messagesStore, crypto, pageCache } = deps;
  const open = (p: ApiPrincipal, threadId: string, m: MessageView) =>
    crypto.openMessages(p.projectId, threadId, [m]).then((r) => r[0]);
  const appendBatcher = createAppendBatcher({ log, messagesStore, writeGuard: threads.writeGuard });

  function toNewMessage(principal: ApiPrincipal, m: MessageInput, index: number | null): NewMessage {
    const where = index === null ? '' : ` (messages[${index}])`;
    if (m.author !== undefined && !isTrusted(principal) && m.author !== principal.userId) {
      throw forbidden(`Only secret keys may post as another author${where}.`);
    }
    const author = m.author ?? principal.userId;
    if (!author) throw badRequest(`Send "author" or an X-User-ID header to say who wrote the message${where}.`);
    if (jsonBytes(m.body) > deps.maxMessageBytes) {
      throw new AppError(
        'payload_too_large',
        `A message body may be at most ${deps.maxMessageBytes} bytes of JSON${where}.`,
      );
    }
    if (crypto.reservedIn(m.body))
      throw badRequest(`Strings starting with "${crypto.reservedPrefix}" are reserved for encrypted values${where}.`);
    return {
      id: m.id ?? newId('msg'),
      clientChosen: m.id !== undefined,
      author,
      body: m.body,
      replyTo: m.reply_to ?? null,
    };
  }

  /**
   * An append on its own, in its savepoint: when its thread is missing (posting to an unknown
   * id creates it) or the merged batch could not take it. Write permission is decided here
   * again, under the thread's lock.
   */
  async function appendAlone(
    tx: Knex.Transaction,
    pointers: CommitPointers,
    principal: ApiPrincipal,
    request: AppendRequest,
  ): Promise<AppendOutcome> {
    if ((await threads.mayWrite(tx, principal, request.threadId, { lock: true })) === 'absent') {
      const created = await threads.createIfAbsent(tx, pointers, principal, { id: request.threadId, type: 'group' });
      // Another replica's first write created it meanwhile (committed): write to it, if allowed.
      if (!created && (await threads.mayWrite(tx, principal, request.threadId, { lock: true })) === 'absent')
        throw notFound('thread');
    }
    const {
      results: [result],
    } = await appendMany({ log, messagesStore }, tx, pointers, [request]);
    // Checked above under the thread's lock (no write guard here, so never WRITE_DENIED).
    if (result === THREAD_MISSING || result === WRITE_DENIED) throw notFound('thread');
    if (result instanceof AppError) throw result;
    return result;
  }

  /**
   * Appends through the group-commit pipeline: merged with the group's other appends when the
   * thread exists and the caller may write to it; otherwise alone (`appendAlone`).
   * `opts.wrap` (idempotency) adds to the work item what the route opted into.
   */
  async function append(
    principal: ApiPrincipal,
    threadId: string,
    messages: MessageInput[],
    opts: { wrap?: WorkItemWrapper<AppendOutcome> } = {},
  ): Promise<AppendOutcome> {
    const request: AppendRequest = {
      projectId: principal.projectId,
      threadId,
      messages: messages.map((m, i) => toNewMessage(principal, m, messages.length > 1 ? i : null)),
      ...(isTrusted(principal) ? {} : { writer: principal }),
    };
    // No look-up before submit: every append is submitted in the tick it was made (calls made
    // together share a group, in call order). Other callers than secret keys are checked by the
    // group's writing statement (`writer`); one it does not admit runs alone, under the rule.
    const item: LogWorkItem<AppendOutcome> = {
      partition: `${principal.projectId}:${threadId}`,
      run: (tx, pointers) => appendAlone(tx, pointers, principal, request),
      merge: { batcher: appendBatcher, input: request },
    };
    // Projects that encrypt nothing stay synchronous up to submit (see above).
    if (!crypto.encrypts(principal)) return ingest.submit(opts.wrap ? opts.wrap(item) : item);
    // Sealed here, before the pipeline: the group transaction only ever sees ciphertext.
    const sealer = (await crypto.sealer(principal, threadId))!;
    for (const m of request.messages) {
      const plain = m.body;
      m.plain = plain;
      m.body = sealer.seal(m.id, 1, plain);
      m.sameBody = (stored) => sealer.matches(m.id, 1, stored, plain);
    }
    const outcome = await ingest.submit(opts.wrap ? opts.wrap(item) : item);
    if (!Array.isArray((outcome as Partial<AppendOutcome>).messages)) return outcome;
    // Fresh messages answer with the plaintext they were sent with; replays are opened.
    const plainOf = new Map(request.messages.map((m) => [m.body, m.plain]));
    const views = outcome.messages.map((v) => (plainOf.has(v.body) ? { ...v, body: plainOf.get(v.body) } : v));
    return { ...outcome, messages: await crypto.openMessages(principal.projectId, threadId, views) };
  }

  /** Edits or soft-deletes: a new version appended to the log, then the current row updated. */
  async function revise(
    principal: ApiPrincipal,
    threadId: string,
    messageId: string,
    change: { deleted: false; body: unknown } | { deleted: true },
    opts: RevisionOptions = {},
  ): Promise<MessageView> {
    if (!change.deleted && jsonBytes(change.body) > deps.maxMessageBytes) {
      throw new AppError('payload_too_large', `A message body may be at most ${deps.maxMessageBytes} bytes of JSON.`);
    }
    if (!change.deleted && crypto.reservedIn(change.body))
      throw badRequest(`Strings starting with "${crypto.reservedPrefix}" are reserved for encrypted values.`);
    // An edit is sealed like the original (its version is part of the associated data). Projects
    // that encrypt nothing take no await here: an edit is submitted in the tick it was made, so
    // seq order stays submission order beside appends.
    const sealer = change.deleted || !crypto.encrypts(principal) ? null : await crypto.sealer(principal, threadId);
    const item: LogWorkItem<MessageView> = {
      partition: `${principal.projectId}:${threadId}`,
      run: async (tx, pointers) => {
        // The thread lock first: every change to a message takes it, so the row below is stable.
        // An edit writes to the thread: an author who may no longer write (removed, or the
        // policy tightened) cannot change their messages either; a secret key still can.
        await threads.authorize(tx, principal, threadId, 'write', true);
        const message = await messagesStore.get(tx, principal.projectId, threadId, messageId);
        if (!message) throw notFound('message');
        if (!isTrusted(principal) && message.author !== principal.userId)
          throw forbidden('Only the author of a message (or a secret key) may change it.');
        if (opts.ifMatch && opts.ifMatch !== '*' && !opts.ifMatch.includes(message.version))
          throw preconditionFailed(
            `If-Match names version ${opts.ifMatch.join(', ')}; the message is at version ${message.version}.`,
            { current_version: message.version },
          );
        if (message.deleted)
          throw new AppError('conflict', 'The message is deleted; its history stays readable through /versions.');
        const version = message.version + 1;
        const body = change.deleted ? null : sealer ? sealer.seal(messageId, version, change.body) : change.body;
        const { lastSeq } = await log.append(tx, pointers, principal.projectId, threadId, [
          change.deleted
            ? {
                type: 'message.deleted',
                messageId,
                actor: principal.userId ?? message.author,
                data: { id: messageId, version },
              }
            : {
                type: 'message.edited',
                messageId,
                actor: principal.userId ?? message.author,
                data: { id: messageId, body, version },
              },
        ]);
        return messagesStore.applyEdit(tx, principal.projectId, threadId, messageId, {
          body,
          deleted: change.deleted,
          seq: lastSeq,
        });
      },
    };
    const revised = await ingest.submit(opts.wrap ? opts.wrap(item) : item);
    return open(principal, threadId, revised);
  }

  async function react(
    principal: ApiPrincipal,
    threadId: string,
    messageId: string,
    reaction: string,
    on: boolean,
  ): Promise<MessageView> {
    const userId = principal.userId;
    if (!userId) throw badRequest('Reactions belong to a user: send X-User-ID.');
    const reacted = await ingest.submit<MessageView>({
      partition: `${principal.projectId}:${threadId}`,
      run: async (tx, pointers) => {
        // A reaction is a write to the thread's log: it needs write access, like a message.
        await threads.authorize(tx, principal, threadId, 'write', true);
        const message = await messagesStore.get(tx, principal.projectId, threadId, messageId);
        if (!message || message.deleted) throw notFound('message');
        const kinds = Object.keys(message.reactions ?? {});
        if (on && !kinds.includes(reaction) && kinds.length >= deps.maxReactionsPerMessage)
          throw unprocessable(
            `A message carries at most ${deps.maxReactionsPerMessage} distinct reactions (MAX_REACTIONS_PER_MESSAGE); add one of those it has.`,
          );
        const key = { projectId: principal.projectId, threadId, messageId, reaction, userId };
        if (!(await messagesStore.setReaction(tx, key, on))) return message;
        await log.append(tx, pointers, principal.projectId, threadId, [
          {
            type: on ? 'reaction.added' : 'reaction.removed',
            messageId,
            actor: userId,
            data: { message_id: messageId, reaction, user_id: userId },
          },
        ]);
        return messagesStore.adjustReactionCount(tx, principal.projectId, threadId, messageId, reaction, on ? 1 : -1);
      },
    });
    return open(principal, threadId, reacted);
  }

  async function readPage(principal: ApiPrincipal, threadId: string, q: PageQuery) {
    const filter = { limit: q.limit, includeDeleted: q.include_deleted, replyTo: q.reply_to, author: q.author };
    const page =
      q.around_seq !== undefined
        ? await messagesStore.pageAround(db, principal.projectId, threadId, { ...filter, aroundSeq: q.around_seq })
        : await messagesStore.page(db, principal.projectId, threadId, {
            ...filter,
            beforeSeq: q.before_seq,
            afterSeq: q.after_seq,
          });
    const sealed = page.data.some((m: MessageView) => m.body !== null && someString(m.body, isEnvelope));
    const data = sealed ? await crypto.openMessages<MessageView>(principal.projectId, threadId, page.data) : page.data;
    return { page: { ...page, data }, sealed };
  }

  return {
    append,
    /** A stored Idempotency-Key response holds what was stored (sealed); open it for the client. */
    async openReply<R extends { status?: number; body?: unknown }>(
      principal: ApiPrincipal,
      threadId: string,
      reply: R,
    ) {
      const b = reply.body as { data?: MessageView[] } & Partial<MessageView>;
      if (!b || typeof b !== 'object' || (reply.status ?? 200) >= 300) return reply;
      if (Array.isArray(b.data))
        return { ...reply, body: { ...b, data: await crypto.openMessages(principal.projectId, threadId, b.data) } };
      if (typeof b.id === 'string' && typeof b.version === 'number')
        return { ...reply, body: await open(principal, threadId, b as MessageView) };
      return reply;
    },
    edit: (p: ApiPrincipal, t: string, m: string, body: unknown, opts?: RevisionOptions) =>
      revise(p, t, m, { deleted: false, body }, opts),
    remove: (p: ApiPrincipal, t: string, m: string, opts?: RevisionOptions) => revise(p, t, m, { deleted: true }, opts),
    react,

    async page(principal: ApiPrincipal, threadId: string, q: PageQuery) {
      await threads.authorize(db, principal, threadId, 'read');
      return readPage(principal, threadId, q).then((r) => r.page);
    },

    /**
     * A page as the JSON bytes to send. The newest page and `after_seq` pages come from the
     * page cache when it holds them for the thread's current version, which the row that
     * authorized this read carries (one round trip for a hit). `page` is set when it was read.
     */
    async pageJson(
      principal: ApiPrincipal,
      threadId: string,
      q: PageQuery,
    ): Promise<{ json: Buffer; page?: Awaited<ReturnType<typeof readPage>>['page'] }> {
      const thread = await threads.authorizeRead(principal, threadId);
      const cacheable = pageCache?.enabled === true && q.before_seq === undefined;
      const key = cacheable ? pageKey(principal.projectId, threadId, q) : '';
      const version = versionOf(thread);
      const hit = cacheable ? pageCache.get(key, version) : undefined;
      if (hit) return { json: hit };
      const { page, sealed } = await readPage(principal, threadId, q);
      const json = Buffer.from(JSON.stringify(page));
      // Opened (decrypted) pages are kept only briefly: a key the KMS stops honouring must stop
      // reads soon after the replica's key cache lets go of it, which a cached plaintext kept
      // for as long as the thread is unchanged would outlive. (Shredding moves last_seq: at once.)
      if (cacheable) pageCache.set(key, version, json, sealed ? (deps.sealedPageTtlMs ?? 0) : undefined);
      return { json, page };
    },

    async get(principal: ApiPrincipal, threadId: string, messageId: string): Promise<MessageView> {
      await threads.authorize(db, principal, threadId, 'read');
      const message = await messagesStore.get(db, principal.projectId, threadId, messageId);
      if (!message) throw notFound('message');
      const { version_seqs: _seqs, ...view } = message;
      return open(principal, threadId, view);
    },

    /**
     * A page of a message's versions, oldest first. Version n was appended at version_seqs[n - 1],
     * so a page is a slice of that array: primary-key look-ups into the log for its seqs only.
     */
    async versions(
      principal: ApiPrincipal,
      threadId: string,
      messageId: string,
      page: { limit: number; cursor?: string },
    ): Promise<{ data: MessageVersionView[]; next_cursor: string | null }> {
      const after = page.cursor ? decodePageCursor(page.cursor, 'versions', versionCursor) : undefined;
      if (after && (after[0] !== threadId || after[1] !== messageId))
        throw badRequest('cursor belongs to another message: pass the next_cursor of a previous page unchanged.');
      await threads.authorize(db, principal, threadId, 'read');
      const message = await messagesStore.get(db, principal.projectId, threadId, messageId);
      if (!message) throw notFound('message');
      const from = after?.[2] ?? 0;
      const seqs = message.version_seqs.slice(from, from + page.limit);
      const versions = await messagesStore.versions(db, principal.projectId, threadId, seqs);
      const last = from + seqs.length;
      return {
        data: await crypto.openVersions(principal.projectId, threadId, messageId, versions),
        next_cursor:
          message.version_seqs.length > last ? encodePageCursor('versions', threadId, messageId, last) : null,
      };
    },
  };
}

export type MessagesService = ReturnType<typeof createMessagesService>;

/** (project, thread, every query parameter): a new page parameter is part of the key by itself. */
function pageKey(projectId: string, threadId: string, q: PageQuery): string {
  const params = q as Record<string, unknown>;
  const shape = Object.keys(params)
    .filter((k) => params[k] !== undefined)
    .sort()
    .map((k) => `${k}=${JSON.stringify(params[k])}`)
    .join('&');
  return `${projectId}\u0000${threadId}\u0000${shape}`;
}
