import type { Knex } from 'knex';
import { AppError, badRequest, conflict, forbidden, notFound } from '../../lib/errors';
import { decodePageCursor, encodePageCursor } from '../../lib/http/page-cursor';
import { idSchema, newId, userIdSchema } from '../../lib/ids';
import type { ApiPrincipal } from '../../lib/http/route';
import { z } from '../../lib/zod';
import type { WorkItemWrapper } from '../idempotency/idempotency';
import type {
  CommitPointers,
  EventInput,
  LogIngest,
  LogWorkItem,
  ThreadGuard,
  ThreadLog,
} from '../thread-log/thread-log';
import { assertAccess, isTrusted, type Access } from './thread-access';
import type { CreateThreadInput, Role, ThreadView, UpdateThreadInput } from './threads-schemas';
import { createLookupBatcher } from '../../lib/lookup-batcher';
import {
  toThreadView,
  type ReadAccessKey,
  type ReadAccessRow,
  type ThreadRow,
  type ThreadsStore,
} from './threads-store';

export interface CreatedThread {
  thread: ThreadView;
  created: boolean;
}

/** The keyset of a thread list: (last_activity_at, id) or (created_at, id), newest first. */
export type ThreadSort = 'last_activity' | 'created';

// A last_activity cursor is [at, id] (as before sort existed); a created cursor names its sort.
const encodeCursor = (t: ThreadRow, sort: ThreadSort) =>
  Buffer.from(
    JSON.stringify(sort === 'created' ? [t.created_at, t.id, 'created'] : [t.last_activity_at, t.id]),
  ).toString('base64url');
function decodeCursor(cursor: string, sort: ThreadSort): { at: string; id: string } {
  try {
    const [at, id, cursorSort = 'last_activity'] = JSON.parse(
      Buffer.from(cursor, 'base64url').toString('utf8'),
    ) as unknown[];
    if (
      typeof at === 'string' &&
      /^\d{4}-\d\d-\d\dT[\d:.]+Z$/.test(at) &&
      !Number.isNaN(Date.parse(at)) &&
      idSchema.safeParse(id).success &&
      (cursorSort === 'last_activity' || cursorSort === 'created')
    ) {
      if (cursorSort !== sort) throw badRequest(`cursor belongs to sort=${cursorSort}: send the same sort with it.`);
      return { at, id: id as string };
    }
  } catch (e) {
    if (e instanceof AppError) throw e;
  }
  throw badRequest('cursor is not valid: pass the next_cursor of a previous page unchanged.');
}

/** Keys per batched read-access query; more wait for the next one. */
const READ_ACCESS_MAX_BATCH = 500;

/** A member page's cursor: its thread and the last user id. */
const memberCursor = z.tuple([idSchema, userIdSchema]);

export function createThreadsService(deps: {
  db: Knex;
  threadsStore: ThreadsStore;
  ingest: LogIngest;
  log: ThreadLog;
  /** Unread per thread for a user (read-state module); lists carry `unread` when given. */
  unreadCounts?: (projectId: string, userId: string, threadIds: string[]) => Promise<Map<string, number>>;
  /** Called with the size of every batched read-access query (metrics). */
  onReadAccessBatch?: (size: number) => void;
}) {
  const { db, threadsStore: store, ingest, log } = deps;
  // Concurrent reads authorize together: one query per batch instead of one per read.
  const readAccess = createLookupBatcher<ReadAccessKey, ReadAccessRow>({
    query: (keys) => store.readAccessMany(db, keys),
    maxBatch: READ_ACCESS_MAX_BATCH,
    onBatch: deps.onReadAccessBatch,
  });

  /** The thread if the caller may access it; 404 when it does not exist in the caller's project. */
  async function authorize(
    tx: Knex | Knex.Transaction,
    principal: ApiPrincipal,
    threadId: string,
    access: Access,
    lock = false,
  ) {
    const thread = await store.getWithRole(tx, principal.projectId, threadId, principal.userId, { lock });
    if (!thread) throw notFound('thread');
    assertAccess(principal, thread, thread.role, access);
    return thread;
  }

  /**
   * `authorize(…, 'read')` for the hot read paths: the same rule on a lean row (policies, role,
   * version), looked up together with the concurrent reads' rows in one prepared statement sent
   * after this call (`src/lib/lookup-batcher.ts`), so the row is at least as new as the read.
   */
  async function authorizeRead(principal: ApiPrincipal, threadId: string) {
    const row = await readAccess.lookup({ projectId: principal.projectId, threadId, userId: principal.userId });
    if (!row) throw notFound('thread');
    assertAccess(principal, row, row.role, 'read');
    return row;
  }

  /**
   * The one write-permission rule: 'allowed', or 'absent' when there is no live thread (the
   * write then creates it or answers 404). Throws when the caller may not write.
   */
  async function mayWrite(
    conn: Knex | Knex.Transaction,
    principal: ApiPrincipal,
    threadId: string,
    opts: { lock?: boolean } = {},
  ): Promise<'allowed' | 'absent'> {
    const thread = await store.getWithRole(conn, principal.projectId, threadId, principal.userId, opts);
    if (!thread) {
      if ((await store.exists(conn, principal.projectId, threadId)) === 'deleted') throw notFound('thread');
      return 'absent';
    }
    assertAccess(principal, thread, thread.role, 'write');
    return 'allowed';
  }

  /**
   * Write permission for many end users at once, as a guard of the statement that writes to
   * their threads (`ThreadLog.appendRecords`): decided on each thread as that statement locks
   * it, so a removal or policy change either committed before (and is seen) or waits for the
   * write. A thread the guard refuses is not written; its writes then run alone (`mayWrite`).
   */
  function writeGuard(checks: Array<{ projectId: string; threadId: string; userId: string | null }>): ThreadGuard {
    return (name) => store.writeGuard(name, checks);
  }

  /**
   * Creates a thread inside a group transaction: the row, then thread.created and one
   * member.added per member as its first events. Returns the existing thread for a repeated dm.
   */
  async function createInTx(
    tx: Knex.Transaction,
    pointers: CommitPointers,
    principal: ApiPrincipal,
    input: CreateThreadInput & { id: string },
  ): Promise<CreatedThread> {
    const created = await insertInTx(tx, pointers, principal, input);
    if (!created) throw conflict(`A thread with id "${input.id}" already exists.`);
    return created;
  }

  /** A repeated dm create answers the dm only to a caller who is still one of its members. */
  async function existingDm(tx: Knex.Transaction, principal: ApiPrincipal, row: ThreadRow): Promise<CreatedThread> {
    if (!isTrusted(principal)) {
      const member = principal.userId
        ? await store.getMember(tx, principal.projectId, row.id, principal.userId)
        : undefined;
      if (!member) throw forbidden(`User "${principal.userId ?? ''}" is no longer a member of this dm.`);
    }
    return { thread: toThreadView(row), created: false };
  }

  /**
   * For a write that creates its thread: creates it, or answers null when another transaction
   * (another replica's first write) created it first and committed; the caller then writes to it.
   */
  function createIfAbsent(
    tx: Knex.Transaction,
    pointers: CommitPointers,
    principal: ApiPrincipal,
    input: CreateThreadInput & { id: string },
  ): Promise<CreatedThread | null> {
    return insertInTx(tx, pointers, principal, input);
  }

  async function insertInTx(
    tx: Knex.Transaction,
    pointers: CommitPointers,
    principal: ApiPrincipal,
    input: CreateThreadInput & { id: string },
  ): Promise<CreatedThread | null> {
    const actor = principal.userId;
    const members = new Map<string, Role>();
    if (actor) members.set(actor, 'owner');
    for (const m of input.members ?? []) {
      const userId = typeof m === 'string' ? m : m.user_id;
      const role = typeof m === 'string' ? 'member' : m.role;
      if (!members.has(userId)) members.set(userId, role);
    }
    let dmKey: string | null = null;
    if (input.type === 'dm') {
      if (members.size !== 2)
        throw badRequest('A dm has exactly two distinct members (the caller counts when X-User-ID is sent).');
      dmKey = JSON.stringify([...members.keys()].sort());
      const existing = await store.findDm(tx, principal.projectId, dmKey);
      if (existing) return existingDm(tx, principal, existing);
    }
    const row = await store.insert(tx, {
      project_id: principal.projectId,
      id: input.id,
      type: input.type,
      title: input.title ?? null,
      attributes: input.attributes ?? {},
      read_policy: input.policies?.read ?? 'members',
      write_policy: input.policies?.write ?? 'members',
      created_by: actor,
      dm_key: dmKey,
    });
    if (!row) {
      if (dmKey) {
        const existing = await store.findDm(tx, principal.projectId, dmKey);
        if (existing) return existingDm(tx, principal, existing);
      }
      return null;
    }
    const events: EventInput[] = [
      {
        type: 'thread.created',
        actor,
        data: {
          id: row.id,
          type: row.type,
          title: row.title,
          attributes: row.attributes,
          policies: { read: row.read_policy, write: row.write_policy },
          created_by: actor,
        },
      },
    ];
    for (const [userId, role] of members) {
      await store.upsertMember(tx, principal.projectId, row.id, userId, role);
      events.push({ type: 'member.added', actor, data: { user_id: userId, role } });
    }
    const { lastSeq, at } = await log.append(tx, pointers, principal.projectId, row.id, events);
    return { thread: toThreadView({ ...row, last_seq: lastSeq, last_activity_at: at }), created: true };
  }

  return {
    authorize,
    authorizeRead,
    mayWrite,
    writeGuard,
    createInTx,
    createIfAbsent,

    create(
      principal: ApiPrincipal,
      input: CreateThreadInput,
      opts: { wrap?: WorkItemWrapper<CreatedThread> } = {},
    ): Promise<CreatedThread> {
      const id = input.id ?? newId('thr');
      const item: LogWorkItem<CreatedThread> = {
        partition: `${principal.projectId}:${id}`,
        run: (tx, pointers) => createInTx(tx, pointers, principal, { ...input, id }),
      };
      return ingest.submit(opts.wrap ? opts.wrap(item) : item);
    },

    async get(principal: ApiPrincipal, threadId: string): Promise<ThreadView> {
      return toThreadView(await authorize(db, principal, threadId, 'read'));
    },

    async list(principal: ApiPrincipal, limit: number, cursor?: string, sort: ThreadSort = 'last_activity') {
      const rows = await store.list(
        db,
        principal.projectId,
        principal.userId,
        limit,
        cursor ? decodeCursor(cursor, sort) : undefined,
        sort,
      );
      const page = rows.slice(0, limit);
      const unread =
        principal.userId && deps.unreadCounts
          ? await deps.unreadCounts(
              principal.projectId,
              principal.userId,
              page.map((t) => t.id),
            )
          : null;
      const data = page.map((t) => (unread ? { ...toThreadView(t), unread: unread.get(t.id) ?? 0 } : toThreadView(t)));
      return { data, next_cursor: rows.length > limit ? encodeCursor(page[page.length - 1], sort) : null };
    },

    update(principal: ApiPrincipal, threadId: string, patch: UpdateThreadInput): Promise<ThreadView> {
      return ingest.submit({
        partition: `${principal.projectId}:${threadId}`,
        run: async (tx, pointers) => {
          const thread = await authorize(tx, principal, threadId, 'manage', true);
          const changes: Record<string, unknown> = {};
          const data: Record<string, unknown> = {};
          if (patch.title !== undefined) changes.title = data.title = patch.title;
          if (patch.attributes !== undefined) {
            changes.attributes = JSON.stringify(patch.attributes);
            data.attributes = patch.attributes;
          }
          if (patch.policies) {
            const policies = {
              read: patch.policies.read ?? thread.read_policy,
              write: patch.policies.write ?? thread.write_policy,
            };
            changes.read_policy = policies.read;
            changes.write_policy = policies.write;
            data.policies = policies;
          }
          await log.append(tx, pointers, principal.projectId, threadId, [
            { type: 'thread.updated', actor: principal.userId, data },
          ]);
          return toThreadView(await store.update(tx, principal.projectId, threadId, changes));
        },
      });
    },

    remove(principal: ApiPrincipal, threadId: string): Promise<void> {
      return ingest.submit({
        partition: `${principal.projectId}:${threadId}`,
        run: async (tx, pointers) => {
          await authorize(tx, principal, threadId, 'manage', true);
          await log.append(tx, pointers, principal.projectId, threadId, [
            { type: 'thread.deleted', actor: principal.userId, data: {} },
          ]);
          // Releasing the dm pair lets the same two users start a new dm (the unique index
          // covers deleted rows too); thread.created keeps who the pair was.
          await store.update(tx, principal.projectId, threadId, { deleted_at: tx.fn.now(), dm_key: null });
        },
      });
    },

    /** A page of members by user id; the cursor names its thread, so another thread's is refused. */
    async members(principal: ApiPrincipal, threadId: string, page: { limit: number; cursor?: string }) {
      const after = page.cursor ? decodePageCursor(page.cursor, 'members', memberCursor) : undefined;
      if (after && after[0] !== threadId)
        throw badRequest('cursor belongs to another thread: pass the next_cursor of a previous page unchanged.');
      await authorize(db, principal, threadId, 'read');
      const rows = await store.members(db, principal.projectId, threadId, page.limit + 1, after?.[1]);
      const data = rows.slice(0, page.limit);
      return {
        data,
        next_cursor:
          rows.length > page.limit ? encodePageCursor('members', threadId, data[data.length - 1].user_id) : null,
      };
    },

    putMember(principal: ApiPrincipal, threadId: string, userId: string, role: Role) {
      return ingest.submit({
        partition: `${principal.projectId}:${threadId}`,
        run: async (tx, pointers) => {
          const thread = await authorize(tx, principal, threadId, 'manage', true);
          const current = await store.getMember(tx, principal.projectId, threadId, userId);
          if (
            thread.type === 'dm' &&
            !current &&
            !(thread.dm_key && (JSON.parse(thread.dm_key) as string[]).includes(userId))
          ) {
            throw badRequest('A dm is between its two users only; create a group thread to add more people.');
          }
          if ((role === 'owner' || current?.role === 'owner') && !isTrusted(principal) && thread.role !== 'owner') {
            throw forbidden('Only an owner (or a secret key) can make or change an owner.');
          }
          if (current?.role === role) return { member: current, created: false };
          const member = await store.upsertMember(tx, principal.projectId, threadId, userId, role);
          await log.append(tx, pointers, principal.projectId, threadId, [
            { type: 'member.added', actor: principal.userId, data: { user_id: userId, role } },
          ]);
          return { member, created: !current };
        },
      });
    },

    removeMember(principal: ApiPrincipal, threadId: string, userId: string): Promise<void> {
      return ingest.submit({
        partition: `${principal.projectId}:${threadId}`,
        run: async (tx, pointers) => {
          // Leaving a thread needs no role; removing someone else needs owner or admin.
          const thread = await store.getWithRole(tx, principal.projectId, threadId, principal.userId, { lock: true });
          if (!thread) throw notFound('thread');
          if (userId !== principal.userId) {
            assertAccess(principal, thread, thread.role, 'manage');
            const target = await store.getMember(tx, principal.projectId, threadId, userId);
            if (target?.role === 'owner' && !isTrusted(principal) && thread.role !== 'owner')
              throw forbidden('Only an owner (or a secret key) can remove an owner.');
          }
          if (!(await store.removeMember(tx, principal.projectId, threadId, userId))) throw notFound('member');
          await log.append(tx, pointers, principal.projectId, threadId, [
            { type: 'member.removed', actor: principal.userId, data: { user_id: userId } },
          ]);
        },
      });
    },
  };
}

export type ThreadsService = ReturnType<typeof createThreadsService>;
