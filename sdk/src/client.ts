import type { Paths, Schemas } from './generated/openapi';
import { signUserId } from './signing';
import { RealtimeSocket, SocketUnavailable, type WebSocketConstructor } from './socket';
import { Tail, runSseTail, type TailOptions, type ThreadEvent } from './tail';
import { Transport, type Credentials, type Query, type RequestOptions, type TransportOptions } from './transport';
import { randomId } from './util';

export type Thread = Schemas['Thread'];
export type Message = Schemas['Message'];
export type MessageVersion = Schemas['MessageVersion'];
export type Member = Schemas['Member'];
export type ReadMark = Schemas['ReadMark'];
export type UnreadList = Schemas['UnreadList'];
export type MessagePage = Schemas['MessagePage'];
export type ThreadCreate = Schemas['ThreadCreate'];
export type ThreadUpdate = Schemas['ThreadUpdate'];
export type NewMessage = Schemas['NewMessage'];
export type Role = Member['role'];

type MessageQuery = Paths['/v1/threads/{thread_id}/messages']['get']['query'];
type ThreadListQuery = Paths['/v1/threads']['get']['query'];

export interface ClientOptions extends TransportOptions {
  /**
   * WebSocket constructor for live tails and sends. Browsers: the global one (default). Node 20
   * has none: pass `WebSocket` from the `ws` package, or leave it out to tail over SSE.
   * `null` forces SSE.
   */
  WebSocket?: WebSocketConstructor | null;
  /** Realtime heartbeat: ping interval over WebSocket (default 15 s). */
  heartbeatIntervalMs?: number;
  /** Silence after which a live connection counts as dead (default 60 s; SSE pings every 25 s). */
  heartbeatTimeoutMs?: number;
}

export interface BackendClientOptions extends ClientOptions {
  /** The project's secret key (sk_…). Keep it on your backend. */
  secretKey: string;
  /** The project's signing secret: lets signUser() work locally, without a round trip. */
  signingSecret?: string;
}

export interface FrontendClientOptions extends ClientOptions {
  /** The project's publishable key (pk_…). */
  publishableKey: string;
  /** The end user this client acts as. */
  userId: string;
  /** HMAC-SHA256 of userId under the signing secret, from your backend (signUser). */
  signature: string | (() => Promise<string>);
}

/**
 * A frontend client with only a realtime token (from your backend: `POST /v1/realtime/token`
 * as the user). It can tail threads (WebSocket or SSE, typing, presence, read marks) as that
 * user; REST calls need the publishable key and signature instead.
 */
export interface FrontendTokenClientOptions extends ClientOptions {
  /** The token, or a function that fetches a fresh one (called on every (re)connect). */
  realtimeToken: string | (() => Promise<string>);
}

export interface IterateMessagesOptions {
  /** `backward`: newest first (default); `forward`: oldest first. */
  direction?: 'backward' | 'forward';
  /** Start after this seq (forward) or before it (backward). */
  afterSeq?: number;
  beforeSeq?: number;
  /** Messages per request (1–200, default 200). */
  pageSize?: number;
  includeDeleted?: boolean;
  /** Only the replies to this message. */
  replyTo?: string;
  /** Only messages by this user. */
  author?: string;
  /** Further filters the service supports, passed through as query parameters. */
  filter?: Record<string, string | number | boolean>;
  signal?: AbortSignal;
}

/** One page of messages: the newest without a cursor, or before/after/around a seq. */
export interface ListMessagesOptions {
  limit?: number;
  beforeSeq?: number;
  afterSeq?: number;
  /** A page centred on this seq (a search hit, a reply's parent); not with beforeSeq/afterSeq. */
  aroundSeq?: number;
  includeDeleted?: boolean;
  replyTo?: string;
  author?: string;
}

/** A page of the caller's threads. */
export interface ListThreadsOptions {
  limit?: number;
  cursor?: string;
  /** `last_activity` (default): most recent activity first; `created`: newest thread first. */
  sort?: 'last_activity' | 'created';
}

/** One page of a cursor-paginated list (members, versions, unread counts). */
export interface CursorPageOptions {
  limit?: number;
  /** The previous page's next_cursor, unchanged. */
  cursor?: string;
}

/** Walking a cursor-paginated list: items per request (the route's maximum by default). */
export interface IterateCursorOptions {
  pageSize?: number;
  signal?: AbortSignal;
}

/** A new message; `replyTo` is the same as `reply_to`. */
export type SendMessage = NewMessage & { replyTo?: string } & Record<string, unknown>;

export interface SendOptions {
  signal?: AbortSignal;
  /** `auto` (default): over the open WebSocket if there is one, else REST. */
  via?: 'auto' | 'rest' | 'websocket';
}

const enc = encodeURIComponent;
const threadPath = (id: string) => `/v1/threads/${enc(id)}`;
const messagePath = (thread: string, message: string) => `${threadPath(thread)}/messages/${enc(message)}`;

const CAMEL_TO_QUERY: Record<string, string> = {
  beforeSeq: 'before_seq',
  afterSeq: 'after_seq',
  aroundSeq: 'around_seq',
  includeDeleted: 'include_deleted',
  replyTo: 'reply_to',
};

/** Query parameters from either the service's names (before_seq) or the SDK's (beforeSeq). */
function pageQuery(q: Record<string, unknown> | undefined): Query {
  const out: Query = {};
  for (const [k, v] of Object.entries(q ?? {}))
    if (v !== undefined) out[CAMEL_TO_QUERY[k] ?? k] = typeof v === 'boolean' ? String(v) : (v as Query[string]);
  return out;
}

/** The body to send: `replyTo` becomes `reply_to`. */
function toNewMessage(message: SendMessage): NewMessage & Record<string, unknown> {
  const { replyTo, ...rest } = message;
  return replyTo === undefined ? rest : { ...rest, reply_to: replyTo };
}

/**
 * The data plane of one project, acting as one principal: a secret key (optionally as a user,
 * see asUser) or a publishable key with a signed user id.
 */
export class ProgressDBClient {
  /** Threads: create, list (with unread counts), read, update, delete. */
  readonly threads;
  /** Thread members and roles. */
  readonly members;
  /** Messages: send, batch, list, iterate, edit, delete, versions, reactions. */
  readonly messages;
  /** The raw thread log. */
  readonly events;
  /** Read marks and unread counts. */
  readonly reads;
  private socketInstance: RealtimeSocket | null = null;
  private readonly openTails = new Set<Tail>();

  constructor(
    protected readonly transport: Transport,
    protected readonly options: ClientOptions,
    /** Where realtime tokens come from when not minted with the key (token-only clients). */
    private readonly tokenSource?: () => Promise<string>,
  ) {
    const t = transport;
    const req = <T>(method: string, path: string, o?: RequestOptions) =>
      t.request<T>(method, path, o).then((r) => r.body);

    this.threads = {
      create: (input: ThreadCreate, o?: RequestOptions) => req<Thread>('POST', '/v1/threads', { ...o, body: input }),
      get: (id: string, o?: RequestOptions) => req<Thread>('GET', threadPath(id), o),
      update: (id: string, input: ThreadUpdate, o?: RequestOptions) =>
        req<Thread>('PATCH', threadPath(id), { ...o, body: input }),
      delete: (id: string, o?: RequestOptions) => req<Thread>('DELETE', threadPath(id), o),
      /** One page; `cursor` from the previous page's next_cursor (with the same `sort`). */
      list: (
        query?: (ThreadListQuery | ListThreadsOptions) & Record<string, string | number | undefined>,
        o?: RequestOptions,
      ) => req<Schemas['ThreadList']>('GET', '/v1/threads', { ...o, query: query as Query }),
      /** Every thread of the caller, most recent activity (or `sort: 'created'`: creation) first; pages fetched as you go. */
      iterate: (
        query: ListThreadsOptions & Record<string, string | number | undefined> = {},
        o?: { signal?: AbortSignal },
      ) => iterateThreads(t, query as Record<string, string | number>, o?.signal),
    };

    this.members = {
      /** Every member, by user id (pages of 500 fetched until the last). */
      list: (threadId: string, o?: RequestOptions) =>
        collect(iterateCursor<Member>(t, `${threadPath(threadId)}/members`, { ...pass(o), pageSize: 500 })),
      /** One page by user id (limit 100 by default, at most 500); `cursor` from the previous page's next_cursor. */
      page: (threadId: string, query: CursorPageOptions = {}, o?: RequestOptions) =>
        req<Schemas['MemberList']>('GET', `${threadPath(threadId)}/members`, { ...o, query: cursorQuery(query) }),
      /** Every member by user id; pages fetched as you go. */
      iterate: (threadId: string, o: IterateCursorOptions = {}) =>
        iterateCursor<Member>(t, `${threadPath(threadId)}/members`, o),
      set: (threadId: string, userId: string, role: Role = 'member', o?: RequestOptions) =>
        req<Member>('PUT', `${threadPath(threadId)}/members/${enc(userId)}`, { ...o, body: { role } }),
      remove: (threadId: string, userId: string, o?: RequestOptions) =>
        req<unknown>('DELETE', `${threadPath(threadId)}/members/${enc(userId)}`, o),
    };

    this.messages = {
      /**
       * Appends a message (acknowledged after commit). Over the open WebSocket when there is
       * one, else REST; either way retries are idempotent (a client message id / Idempotency-Key).
       */
      send: (threadId: string, message: SendMessage, o: SendOptions = {}) =>
        this.sendMessage(threadId, toNewMessage(message), o),
      /** A reply to `parentId` (a message of the same thread). */
      reply: (threadId: string, parentId: string, message: SendMessage, o: SendOptions = {}) =>
        this.sendMessage(threadId, toNewMessage({ ...message, replyTo: parentId }), o),
      /** Up to 1,000 messages in one transaction, contiguous seqs. */
      sendBatch: (threadId: string, messages: SendMessage[], o?: RequestOptions) =>
        req<{ data: Message[] }>('POST', `${threadPath(threadId)}/messages/batch`, {
          ...o,
          body: { messages: messages.map(toNewMessage) },
        }).then((r) => r.data),
      get: (threadId: string, messageId: string, o?: RequestOptions) =>
        req<Message>('GET', messagePath(threadId, messageId), o),
      /** One page (ascending by seq); the newest page without before/after/around. */
      list: (
        threadId: string,
        query?: (MessageQuery | ListMessagesOptions) & Record<string, string | number | boolean | null | undefined>,
      ) => req<MessagePage>('GET', `${threadPath(threadId)}/messages`, { query: pageQuery(query) }),
      /** The page centred on `seq` (jump to a search hit or a reply's parent); page on with list({ beforeSeq / afterSeq }). */
      around: (
        threadId: string,
        seq: number,
        query: Omit<ListMessagesOptions, 'aroundSeq' | 'beforeSeq' | 'afterSeq'> = {},
      ) =>
        req<MessagePage>('GET', `${threadPath(threadId)}/messages`, { query: pageQuery({ ...query, aroundSeq: seq }) }),
      /** Every reply to a message, oldest first. */
      replies: (threadId: string, messageId: string, o: Omit<IterateMessagesOptions, 'replyTo' | 'direction'> = {}) =>
        iterateMessages(t, threadId, { ...o, replyTo: messageId, direction: 'forward' }),
      /** Every message, page by page as you iterate: `backward` is newest first. */
      iterate: (threadId: string, o: IterateMessagesOptions = {}) => iterateMessages(t, threadId, o),
      edit: (threadId: string, messageId: string, body: unknown, o?: RequestOptions) =>
        req<Message>('PATCH', messagePath(threadId, messageId), { ...o, body: { body } }),
      delete: (threadId: string, messageId: string, o?: RequestOptions) =>
        req<Message>('DELETE', messagePath(threadId, messageId), o),
      /** Every version of a message, oldest first (pages of 200 fetched until the last). */
      versions: (threadId: string, messageId: string, o?: RequestOptions) =>
        collect(
          iterateCursor<MessageVersion>(t, `${messagePath(threadId, messageId)}/versions`, {
            ...pass(o),
            pageSize: 200,
          }),
        ),
      /** One page of versions, oldest first (limit 50 by default, at most 200). */
      versionsPage: (threadId: string, messageId: string, query: CursorPageOptions = {}, o?: RequestOptions) =>
        req<Schemas['MessageVersionList']>('GET', `${messagePath(threadId, messageId)}/versions`, {
          ...o,
          query: cursorQuery(query),
        }),
      /** Every version, oldest first; pages fetched as you go. */
      iterateVersions: (threadId: string, messageId: string, o: IterateCursorOptions = {}) =>
        iterateCursor<MessageVersion>(t, `${messagePath(threadId, messageId)}/versions`, o),
      react: (threadId: string, messageId: string, reaction: string, o?: RequestOptions) =>
        req<Message>('PUT', `${messagePath(threadId, messageId)}/reactions/${enc(reaction)}`, o),
      unreact: (threadId: string, messageId: string, reaction: string, o?: RequestOptions) =>
        req<Message>('DELETE', `${messagePath(threadId, messageId)}/reactions/${enc(reaction)}`, o),
    };

    this.events = {
      list: (threadId: string, query: { after_seq?: number; limit?: number } = {}, o?: RequestOptions) =>
        req<Schemas['EventPage']>('GET', `${threadPath(threadId)}/events`, { ...o, query }),
      /** Every event after `afterSeq` (default 0), oldest first. */
      iterate: (threadId: string, o: { afterSeq?: number; pageSize?: number; signal?: AbortSignal } = {}) =>
        iterateEvents(t, threadId, o),
    };

    this.reads = {
      /** Moves the user's read mark (it only moves forward). */
      mark: (threadId: string, seq: number, o?: RequestOptions) =>
        req<ReadMark>('POST', `${threadPath(threadId)}/read`, { ...o, body: { seq } }),
      /**
       * One page of unread counts, most recent activity first (limit 100 by default, at most
       * 500); `total` sums this page. `cursor` from the previous page's next_cursor.
       */
      unread: (query: CursorPageOptions = {}, o?: RequestOptions) =>
        req<UnreadList>('GET', '/v1/me/unread', { ...o, query: cursorQuery(query) }),
      /** Unread counts of every thread of the user, most recent activity first; pages fetched as you go. */
      iterateUnread: (o: IterateCursorOptions = {}) => iterateCursor<UnreadList['data'][number]>(t, '/v1/me/unread', o),
    };
  }

  /** The user this client acts as, if any. */
  get userId(): string | undefined {
    return this.transport.credentials.userId;
  }

  /**
   * A live tail of a thread: `for await (const event of client.tail(id, { afterSeq }))`, and
   * `.on('typing' | 'presence' | 'read' | 'resumed' | …)`. Resumes after any disconnect.
   */
  tail(threadId: string, options: TailOptions = {}): Tail {
    const tail = new Tail(threadId, options, (afterSeq, limit) =>
      this.events.list(threadId, { after_seq: afterSeq, limit }),
    );
    this.openTails.add(tail);
    tail.on('closed', () => this.openTails.delete(tail));
    const socket = options.transport === 'sse' ? null : this.socket();
    if (socket) socket.add(tail);
    else if (options.transport === 'websocket') throw new TypeError('No WebSocket constructor: pass options.WebSocket');
    else this.runSse(tail);
    return tail;
  }

  /** A short-lived token for `GET /v1/ws?token=` and SSE `?token=` (needs a user). */
  realtimeToken(o?: RequestOptions): Promise<Schemas['RealtimeToken']> {
    return this.transport.request<Schemas['RealtimeToken']>('POST', '/v1/realtime/token', o).then((r) => r.body);
  }

  /** Closes every tail of this client and its WebSocket. */
  close(): void {
    for (const t of [...this.openTails]) t.close();
    this.socketInstance?.close();
    this.socketInstance = null;
  }

  /** The WebSocket shared by this client's tails, or null when there is no constructor. */
  protected socket(): RealtimeSocket | null {
    if (this.socketInstance) return this.socketInstance;
    const WS = this.options.WebSocket === undefined ? defaultWebSocket() : this.options.WebSocket;
    if (!WS) return null;
    const interval = this.options.heartbeatIntervalMs ?? 15_000;
    this.socketInstance = new RealtimeSocket(this.transport, WS, {
      heartbeatIntervalMs: interval,
      heartbeatTimeoutMs: this.options.heartbeatTimeoutMs ?? Math.max(2 * interval + 5_000, 10_000),
      token:
        this.tokenSource ?? (this.userId !== undefined ? () => this.realtimeToken().then((r) => r.token) : undefined),
    });
    this.socketInstance.onUnusable = (tails) => tails.forEach((t) => this.runSse(t));
    return this.socketInstance;
  }

  private runSse(tail: Tail): void {
    runSseTail(tail, this.transport, {
      heartbeatTimeoutMs: this.options.heartbeatTimeoutMs ?? 60_000,
      token: this.tokenSource,
    });
  }

  private async sendMessage(
    threadId: string,
    message: NewMessage & Record<string, unknown>,
    o: SendOptions,
  ): Promise<Message> {
    const socket = o.via === 'rest' ? null : this.socketInstance;
    if (socket && (socket.canSend || o.via === 'websocket')) {
      // A client message id makes the REST fallback idempotent if the socket dies before the ack.
      const withId = { ...message, id: message.id ?? randomId('msg') };
      try {
        return await socket.send(threadId, withId);
      } catch (e) {
        if (!(e instanceof SocketUnavailable) || o.via === 'websocket') throw e;
        message = withId;
      }
    }
    return this.transport
      .request<Message>('POST', `${threadPath(threadId)}/messages`, { body: message, signal: o.signal })
      .then((r) => r.body);
  }
}

/** A backend client (secret key): everything in the project, as any user. */
export class BackendClient extends ProgressDBClient {
  constructor(private readonly backendOptions: BackendClientOptions) {
    super(new Transport(backendOptions, { key: backendOptions.secretKey }), backendOptions);
  }

  /**
   * The user's X-User-Signature: computed locally (HMAC-SHA256 hex, Web Crypto) when the
   * client has the signing secret, else by `POST /v1/_sign`. `remote: true` always asks the service.
   */
  async signUser(userId: string, o: { remote?: boolean } = {}): Promise<string> {
    if (this.backendOptions.signingSecret && !o.remote) return signUserId(this.backendOptions.signingSecret, userId);
    const r = await this.transport.request<{ user_id: string; signature: string }>('POST', '/v1/_sign', {
      body: { user_id: userId },
    });
    return r.body.signature;
  }

  /** The same secret key acting as one end user (X-User-ID): policies, authorship, unread counts. */
  asUser(userId: string): ProgressDBClient {
    const credentials: Credentials = { key: this.backendOptions.secretKey, userId };
    return new ProgressDBClient(this.transport.withCredentials(credentials), this.backendOptions);
  }
}

export function createBackendClient(options: BackendClientOptions): BackendClient {
  return new BackendClient(options);
}

/** A frontend client: a publishable key and a signed user id, acting as that user. */
export function createFrontendClient(options: FrontendClientOptions | FrontendTokenClientOptions): ProgressDBClient {
  if ('realtimeToken' in options) {
    const { realtimeToken } = options;
    const source = typeof realtimeToken === 'string' ? () => Promise.resolve(realtimeToken) : realtimeToken;
    return new ProgressDBClient(new Transport(options, { key: '' }), options, source);
  }
  const { signature } = options;
  const credentials: Credentials = {
    key: options.publishableKey,
    userId: options.userId,
    signature: typeof signature === 'string' ? () => Promise.resolve(signature) : cached(signature),
  };
  return new ProgressDBClient(new Transport(options, credentials), options);
}

function cached(f: () => Promise<string>): () => Promise<string> {
  let p: Promise<string> | undefined;
  return () => (p ??= f().catch((e: unknown) => ((p = undefined), Promise.reject(e as Error))));
}

function defaultWebSocket(): WebSocketConstructor | null {
  const WS = (globalThis as { WebSocket?: unknown }).WebSocket;
  return typeof WS === 'function' ? (WS as WebSocketConstructor) : null;
}

async function* iterateMessages(t: Transport, threadId: string, o: IterateMessagesOptions): AsyncGenerator<Message> {
  const backward = (o.direction ?? 'backward') === 'backward';
  const limit = o.pageSize ?? 200;
  let before = o.beforeSeq;
  let after = o.afterSeq ?? (backward ? undefined : 0);
  for (;;) {
    const query: Query = {
      limit,
      include_deleted: o.includeDeleted ? 'true' : undefined,
      reply_to: o.replyTo,
      author: o.author,
      ...o.filter,
    };
    if (backward) {
      if (before !== undefined) query.before_seq = before;
    } else query.after_seq = after;
    const { body: page } = await t.request<MessagePage>('GET', `${threadPath(threadId)}/messages`, {
      query,
      signal: o.signal,
    });
    const data = page.data;
    if (backward) {
      for (let i = data.length - 1; i >= 0; i--) {
        if (o.afterSeq !== undefined && data[i].seq <= o.afterSeq) return;
        yield data[i];
      }
      if (!page.has_more_before || data.length === 0) return;
      before = data[0].seq;
    } else {
      for (const m of data) {
        if (o.beforeSeq !== undefined && m.seq >= o.beforeSeq) return;
        yield m;
      }
      if (!page.has_more_after || data.length === 0) return;
      after = data[data.length - 1].seq;
    }
  }
}

async function* iterateThreads(t: Transport, query: Record<string, string | number>, signal?: AbortSignal) {
  let cursor: string | undefined;
  for (;;) {
    const { body } = await t.request<Schemas['ThreadList']>('GET', '/v1/threads', {
      query: { limit: 200, ...query, cursor },
      signal,
    });
    yield* body.data;
    if (!body.next_cursor || body.data.length === 0) return;
    cursor = body.next_cursor;
  }
}

const cursorQuery = (q: CursorPageOptions): Query => ({ limit: q.limit, cursor: q.cursor });
const pass = (o?: RequestOptions) => ({ headers: o?.headers, signal: o?.signal });

/** Items of a `{ data, next_cursor }` list, page after page until next_cursor is null. */
async function* iterateCursor<T>(
  t: Transport,
  path: string,
  o: IterateCursorOptions & { headers?: Record<string, string> },
): AsyncGenerator<T> {
  let cursor: string | undefined;
  for (;;) {
    const { body } = await t.request<{ data: T[]; next_cursor: string | null }>('GET', path, {
      query: { limit: o.pageSize, cursor },
      headers: o.headers,
      signal: o.signal,
    });
    yield* body.data;
    if (!body.next_cursor || body.data.length === 0) return;
    cursor = body.next_cursor;
  }
}

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

async function* iterateEvents(
  t: Transport,
  threadId: string,
  o: { afterSeq?: number; pageSize?: number; signal?: AbortSignal },
): AsyncGenerator<ThreadEvent> {
  let after = o.afterSeq ?? 0;
  for (;;) {
    const { body } = await t.request<Schemas['EventPage']>('GET', `${threadPath(threadId)}/events`, {
      query: { after_seq: after, limit: o.pageSize ?? 1000 },
      signal: o.signal,
    });
    yield* body.data;
    if (!body.has_more || body.data.length === 0) return;
    after = body.data[body.data.length - 1].seq;
  }
}
