import type { IncomingMessage, Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { isConnectionError, pgCode } from '../../lib/db';
import { AppError, isAppError, forbidden, unauthorized, badRequest, rateLimited } from '../../lib/errors';
import { idSchema } from '../../lib/ids';
import { apiKeyFrom } from '../../lib/http/credentials';
import { inspectJson } from '../../lib/http/json';
import { endSocketWithProblem, PROBLEM_BASE, problemBody } from '../../lib/http/problem';
import { requestIdFor } from '../../lib/http/request-id';
import type { UpgradeLog } from '../../lib/http/request-log';
import { parse, type ApiPrincipal, type RateClass } from '../../lib/http/route';
import type { Logger } from '../../lib/logger';
import type { KeyAuthService } from '../keys/key-auth-service';
import type { AppendOutcome } from '../messages/message-append';
import { newMessageSchema, type MessageInput } from '../messages/messages-schemas';
import type { ReadStateService } from '../read-state/read-state-service';
import type { ThreadsService } from '../threads/threads-service';
import type { EventView } from '../events/events-schemas';
import type { Ephemeral, EphemeralMessage } from './ephemeral';
import { wsEventFrame, wsEventFrames, wsFramePayload } from './event-frames';
import type { RealtimeTokens } from './realtime-token';
import { wsClientMessageSchema, type WsClientMessage } from './realtime-schemas';
import type { CloseReason, SubscribeOptions, TailHub, TailSink } from './tail-hub';
import type { ConnectionTracker } from './track-connection';
import { createBacklogJudge, type BacklogJudge } from './slow-consumer';

export const WS_PATH = '/v1/ws';
/** Close codes (see docs/REALTIME.md). */
export const WS_CLOSE = { serviceRestart: 1012, slowConsumer: 4008, heartbeatTimeout: 4000, policy: 1008 } as const;

const MAX_MESSAGE_BYTES = 64 * 1024;
const MAX_SUBSCRIPTIONS = 1_000;
const TYPING_MIN_INTERVAL_MS = 1_000;
/** Client messages per socket: a burst of RATE_BURST, then RATE_PER_SECOND (subscribe costs queries). */
const RATE_BURST = 200;
const RATE_PER_SECOND = 50;
/** `send` frames a socket may have unanswered at once; more are refused (rate_limited) until acks come back. */
export const MAX_SENDS_IN_FLIGHT = 64;

type Typing = Map<string, { startedAt: number; on: boolean }>;

/**
 * `ws` gives every socket its own empty `_extensions` object, filled only when permessage-deflate
 * is negotiated, which the gateway never offers: the sockets (and their Receiver and Sender, which
 * take it in setSocket) share one frozen empty object instead.
 */
const NO_EXTENSIONS = Object.freeze({});

/**
 * EventEmitter gives every socket its own listener table, a dictionary object even when empty
 * (some 180 bytes). Nothing listens on a gateway socket (events arrive through Conn.emit), so
 * they share one empty table, frozen: a listener added by mistake throws instead of reaching
 * every socket.
 */
const NO_LISTENERS = Object.freeze(Object.create(null) as object);

/**
 * One socket: the `ws` WebSocket itself (WebSocketServer's `WebSocket` option), carrying the
 * gateway's state in its own fields, so an idle connection costs one object beside what `ws` and
 * the TCP socket need. Everything optional (subscriptions, typing state) is made on first use;
 * events reach the gateway through `emit` (no listeners), the heartbeat is one timer for all
 * sockets, and the connection id is derived from a serial number when it is needed.
 */
class Conn extends WebSocket {
  /** Replace the ones `ws`'s and EventEmitter's constructors made (see NO_EXTENSIONS, NO_LISTENERS). */
  _extensions = NO_EXTENSIONS;
  _events = NO_LISTENERS;
  /** `ws`'s own: the TCP socket, and the Sender (state 0: idle, nothing queued) — see sendFrames. */
  declare _socket: Socket;
  declare _sender: { _state: number; _queue: unknown[] };
  serial = 0;
  principal!: ApiPrincipal;
  /** The client address at the upgrade (rate limits of anonymous buckets, logs). */
  ip = '';
  /**
   * The socket's subscriptions by thread: most sockets hold one, kept as it is; a Map only from
   * the second on. Read and changed through the methods below.
   */
  subs: WsSubscription | Map<string, WsSubscription> | null = null;
  alive = true;
  gone = false;
  /** Per thread: when the last typing start went out, and whether a stop is owed. */
  typing: Typing | null = null;
  typingQueue: Promise<void> | null = null;
  tokens = RATE_BURST;
  /** 0 until the first message: the bucket starts full either way. */
  refilledAt = 0;
  sendsInFlight = 0;
  /** Made when the socket's backlog first goes over the limit. */
  backlog: BacklogJudge | null = null;
  gateway!: GatewayHooks;
  sub(threadId: string): WsSubscription | undefined {
    const { subs } = this;
    if (subs instanceof WsSubscription) return subs.threadId === threadId ? subs : undefined;
    return subs?.get(threadId);
  }
  subCount() {
    const { subs } = this;
    return subs instanceof WsSubscription ? 1 : (subs?.size ?? 0);
  }
  subThreadIds(): string[] {
    const { subs } = this;
    return subs instanceof WsSubscription ? [subs.threadId] : subs ? [...subs.keys()] : [];
  }
  /** Adds (or replaces) the subscription of its thread. */
  addSub(sub: WsSubscription) {
    const { subs } = this;
    if (!subs || (subs instanceof WsSubscription && subs.threadId === sub.threadId)) this.subs = sub;
    else if (subs instanceof WsSubscription)
      this.subs = new Map([
        [subs.threadId, subs],
        [sub.threadId, sub],
      ]);
    else subs.set(sub.threadId, sub);
  }
  deleteSub(threadId: string) {
    const { subs } = this;
    if (subs instanceof WsSubscription) {
      if (subs.threadId === threadId) this.subs = null;
    } else subs?.delete(threadId);
  }
  /**
   * `ws` reports the socket's events through emit: once the gateway owns the socket they go
   * straight to it, without a listener table per socket (four listeners turned the socket's
   * `_events` into a dictionary of some 280 bytes).
   */
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    const { gateway } = this;
    if (gateway)
      switch (event) {
        case 'message':
          gateway.message(this, args[0] as RawData, args[1] as boolean);
          return true;
        case 'pong':
          this.alive = true;
          return true;
        case 'ping':
          gateway.pinged(this, args[0] as Buffer);
          return true;
        case 'close':
          gateway.closed(this);
          return true;
        case 'error':
          gateway.errored(this);
          return true;
      }
    return super.emit(event, ...args);
  }
  /** A revocation of the socket's key closes it (ConnectionTracker). */
  revoke() {
    this.gateway.revoked(this);
  }
}

interface GatewayHooks {
  pinged(conn: Conn, data: Buffer): void;
  message(conn: Conn, data: RawData, isBinary: boolean): void;
  closed(conn: Conn): void;
  errored(conn: Conn): void;
  revoked(conn: Conn): void;
  recheck(sub: WsSubscription): Promise<boolean>;
  send(conn: Conn, msg: unknown): void;
  sendFrames(conn: Conn, frames: Buffer, events: readonly EventView[]): void;
  unsubscribed(sub: WsSubscription, reason: CloseReason): void;
  maxBufferedBytes: number;
}

/**
 * One thread subscription of a socket: the tail hub's options and sink in one object, with
 * shared methods (no closure per subscription). `handle` is set once access was granted.
 */
class WsSubscription implements SubscribeOptions, TailSink {
  handle: { close(): void } | null = null;
  afterSeq = 0;
  threadLastSeq = 0;
  purgedThroughSeq = 0;
  /** The retention horizon of the last reset, reported with `ready`. */
  purgedThrough: number | null = null;
  constructor(
    readonly conn: Conn,
    readonly threadId: string,
  ) {}
  get projectId() {
    return this.conn.principal.projectId;
  }
  get userId() {
    return this.conn.principal.userId;
  }
  get sink(): TailSink {
    return this;
  }
  recheck() {
    return this.conn.gateway.recheck(this);
  }
  send(events: EventView[]) {
    const { conn } = this;
    if (!conn.gone) conn.gateway.sendFrames(conn, wsEventFrames(events), events);
  }
  ready(seq: number) {
    const reset = this.purgedThrough === null ? {} : { recovered: false, purged_through_seq: this.purgedThrough };
    this.conn.gateway.send(this.conn, { type: 'ready', thread_id: this.threadId, seq, ...reset });
  }
  reset(horizon: number) {
    this.purgedThrough = horizon;
    this.conn.gateway.send(this.conn, {
      type: 'reset',
      thread_id: this.threadId,
      recovered: false,
      purged_through_seq: horizon,
    });
  }
  async drain() {
    const { conn } = this;
    while (!conn.gone && conn.bufferedAmount > conn.gateway.maxBufferedBytes / 2)
      await new Promise((r) => setTimeout(r, 20));
  }
  closed(reason: CloseReason) {
    this.conn.gateway.unsubscribed(this, reason);
  }
}

const threadKey = (p: string, t: string) => `${p}\u0000${t}`;

const header = (req: IncomingMessage, name: string) => {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
};

/** The socket's error listener until `ws` takes it over (one function for every socket). */
function destroyOnError(this: Duplex) {
  this.destroy();
}

/** An upgrade attempt, for its request-log line and metrics. */
interface UpgradeAttempt {
  requestId: string;
  method: string;
  route: string;
  startedAt: bigint;
  projectId?: string;
  rateClass?: string;
}

/**
 * GET /v1/ws: many thread subscriptions on one socket (each with its own after_seq), the same
 * events as SSE, typing, presence and read marks. Authenticated at upgrade like REST (API key
 * and signed user headers) or with a realtime token (?token=) for browsers.
 */
export function createWsGateway(deps: {
  db: Knex;
  hub: TailHub;
  ephemeral: () => Ephemeral;
  threads: Pick<ThreadsService, 'authorize'>;
  readState: Pick<ReadStateService, 'markRead'>;
  keyAuth: Pick<KeyAuthService, 'authenticate'>;
  tokens: RealtimeTokens;
  tracker: ConnectionTracker;
  /** The request log and HTTP metrics of each upgrade attempt (101, or the refusal's status). */
  onUpgrade?: UpgradeLog;
  /** The project's IP allowlist, allowed origins and rate limit, as REST routes get them from guards. */
  checkUpgrade: (req: IncomingMessage, principal: ApiPrincipal) => Promise<void>;
  /** The address of an upgrade request (as REST sees it), for the rate limiter. */
  clientIp: (req: IncomingMessage) => string;
  /** The REST rate limiter's admission: `send` spends from the same `write` bucket as POST …/messages. */
  admit?: (principal: ApiPrincipal, cls: RateClass, ip: string) => Promise<void>;
  /** The REST append (messages.append: same validation, authorization, idempotency, ingest). */
  append: (principal: ApiPrincipal, threadId: string, message: MessageInput) => Promise<AppendOutcome>;
  maxJsonDepth: number;
  /** Counts a refused credential against the client's auth bucket; throws the 429 once it is used up. */
  authFailed?: (req: IncomingMessage, error: unknown) => Promise<void>;
  /** Spends one action from the project's rate-limit buckets (subscribe = read; typing, read marks, send = write). */
  spendAction?: (principal: ApiPrincipal, cls: RateClass, ip: string, units?: number) => Promise<void>;
  logger: Logger;
  heartbeatMs: number;
  maxBufferedBytes: number;
  slowConsumerMs: number;
}) {
  const { db, hub, logger } = deps;
  const conns = new Set<Conn>();
  const byThread = new Map<string, Set<Conn>>();
  // No compression (a deflate context per socket), and no client tracking in `ws` (a Set entry
  // and a closure per socket): `conns` tracks them, `openSockets` counts them until 'close'. No
  // automatic pongs either (a closure and four fields per socket): the gateway answers pings.
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_MESSAGE_BYTES,
    perMessageDeflate: false,
    clientTracking: false,
    autoPong: false,
    WebSocket: Conn,
  });
  let heartbeat: NodeJS.Timeout | null = null;
  let closing = false;
  let slowConsumerCloses = 0;
  let openSockets = 0;
  let allClosed: (() => void) | null = null;
  // Connection ids: a per-gateway random UUID prefix and the socket's serial number, made when
  // needed (welcome, logs) rather than kept as a string per socket.
  const idPrefix = randomUUID().slice(0, 24);
  let serials = 0;
  const connectionId = (conn: Conn) => idPrefix + conn.serial.toString(16).padStart(12, '0');
  // Sockets of one key and user share one principal object.
  const principals = new Map<string, { principal: ApiPrincipal; sockets: number }>();
  const principalKey = (p: ApiPrincipal) => `${p.keyId}\u0000${p.userId ?? ''}`;
  function sharedPrincipal(p: ApiPrincipal): ApiPrincipal {
    const k = principalKey(p);
    const entry = principals.get(k);
    if (entry && entry.principal.settings === p.settings && entry.principal.kind === p.kind) {
      entry.sockets++;
      return entry.principal;
    }
    // The key's settings changed (a new cache entry): newer sockets share the new object.
    principals.set(k, { principal: p, sockets: 1 + (entry?.sockets ?? 0) });
    return p;
  }
  function releasePrincipal(p: ApiPrincipal) {
    const k = principalKey(p);
    const entry = principals.get(k);
    if (entry && --entry.sockets <= 0) principals.delete(k);
  }

  const hooks: GatewayHooks = {
    message: onMessage,
    pinged,
    closed: onClose,
    errored: cleanup,
    revoked: (conn) => closeConn(conn, WS_CLOSE.policy, 'API key revoked'),
    recheck: (sub) =>
      deps.threads.authorize(db, sub.conn.principal, sub.threadId, 'read').then(
        () => true,
        (e) => (isAppError(e) ? false : Promise.reject(e)),
      ),
    send: (conn, msg) => send(conn, msg),
    sendFrames,
    unsubscribed(sub, reason) {
      const { conn, threadId } = sub;
      if (conn.sub(threadId) !== sub) return;
      sub.handle = null;
      conn.deleteSub(threadId);
      unindex(conn, threadId);
      const { principal } = conn;
      if (principal.userId) deps.ephemeral().leave(principal.projectId, threadId, principal.userId);
      if (reason !== 'shutdown') send(conn, { type: 'unsubscribed', thread_id: threadId, reason });
    },
    maxBufferedBytes: deps.maxBufferedBytes,
  };

  async function authenticate(req: IncomingMessage, url: URL, attempt: UpgradeAttempt): Promise<ApiPrincipal> {
    let p: ApiPrincipal;
    try {
      p = await principalOf(req, url);
    } catch (e) {
      await deps.authFailed?.(req, e);
      throw e;
    }
    // Past the credentials: a 429 from here on is the upgrade's `read` limit or connection cap.
    attempt.projectId = p.projectId;
    attempt.rateClass = 'read';
    await deps.checkUpgrade(req, p);
    return p;
  }

  function newAttempt(req: IncomingMessage, route: string, startedAt: bigint): UpgradeAttempt {
    const requestId = requestIdFor(header(req, 'x-request-id'));
    // Until the credentials are accepted, a 429 comes from the client's `auth` bucket.
    return { requestId, method: req.method ?? 'GET', route, startedAt, rateClass: 'auth' };
  }

  function logAttempt(attempt: UpgradeAttempt, status: number, aborted = false) {
    deps.onUpgrade?.({ ...attempt, status, ...(aborted ? { aborted } : {}) });
  }

  /** Refuses an upgrade with a problem+json response, as REST would (same status mapping), and logs it. */
  function refuse(socket: Duplex, attempt: UpgradeAttempt, error: unknown) {
    const aborted = !socket.writable;
    const status = endSocketWithProblem(
      socket,
      isAppError(error) ? error : new AppError('unavailable', 'The service is unavailable; try again.'),
      attempt.requestId,
    );
    logAttempt(attempt, status, aborted);
  }

  // The 101 carries the request id, as every REST response does.
  let upgrading: UpgradeAttempt | null = null;
  wss.on('headers', (headers: string[]) => {
    if (upgrading) headers.push(`X-Request-Id: ${upgrading.requestId}`);
  });
  // A handshake `ws` itself finds invalid (method, version, key) is refused like the rest.
  wss.on('wsClientError', (err: Error, socket: Duplex) => {
    const attempt = upgrading;
    if (!attempt) return socket.destroy();
    if (attempt.method !== 'GET') {
      const status = endSocketWithProblem(
        socket,
        { status: 405, title: 'Method not allowed', slug: 'method-not-allowed', detail: 'Open a WebSocket with GET.' },
        attempt.requestId,
      );
      return logAttempt(attempt, status);
    }
    refuse(socket, attempt, badRequest(`Not a valid WebSocket handshake: ${err.message}.`));
  });

  async function principalOf(req: IncomingMessage, url: URL): Promise<ApiPrincipal> {
    const token = url.searchParams.get('token');
    if (token) return deps.tokens.verify(token);
    const key = apiKeyFrom(req.headers);
    if (!key)
      throw unauthorized(
        'Send an API key (Authorization or X-API-Key header), or a realtime token as ?token= (POST /v1/realtime/token).',
      );
    const p = await deps.keyAuth.authenticate(
      key,
      header(req, 'x-user-id'),
      header(req, 'x-user-signature'),
      header(req, 'x-user-token'),
    );
    if (p.kind === 'admin')
      throw forbidden('Admin keys (ak_) may call only /v1/admin routes; use a secret or publishable key.');
    return p;
  }

  function send(conn: Conn, msg: unknown) {
    if (conn.gone) return;
    conn.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
    judgeBacklog(conn);
  }

  /**
   * Events to one socket: the frames were built once for every subscriber (event-frames.ts), so
   * this is one socket write, without `ws`'s per-send framing (an options object, a header
   * buffer, a corked two-buffer write). Only while `ws`'s Sender is idle: the gateway never
   * compresses nor sends Blobs, so it always is, but if it ever had something queued the
   * events would go through it, in order, one by one.
   */
  function sendFrames(conn: Conn, frames: Buffer, events: readonly EventView[]) {
    if (conn.gone) return;
    const sender = conn._sender;
    if (conn.readyState === WebSocket.OPEN && sender._state === 0 && sender._queue.length === 0)
      conn._socket.write(frames);
    else for (const e of events) conn.send(wsFramePayload(wsEventFrame(e)), { binary: false });
    judgeBacklog(conn);
  }

  /**
   * A client's ping, answered as `ws` would. A client that pings without reading the pongs grows
   * the socket's backlog like one that does not read its events, and is cut off the same way
   * (`ws`'s own limit, 60 pongs not yet written, is gone with its automatic pongs).
   */
  function pinged(conn: Conn, data: Buffer) {
    if (conn.gone || conn.readyState !== WebSocket.OPEN) return;
    conn.pong(data);
    judgeBacklog(conn);
  }

  function judgeBacklog(conn: Conn) {
    if (conn.bufferedAmount > deps.maxBufferedBytes) {
      conn.backlog ??= createBacklogJudge(
        { maxBytes: deps.maxBufferedBytes, graceMs: deps.slowConsumerMs },
        () => conn.bufferedAmount,
        () => cutSlowConsumer(conn),
      );
      conn.backlog.check();
    }
  }

  function cutSlowConsumer(conn: Conn) {
    if (conn.gone) return;
    logger.info({ conn: connectionId(conn), buffered: conn.bufferedAmount }, 'closing slow WebSocket consumer');
    slowConsumerCloses++;
    closeConn(conn, WS_CLOSE.slowConsumer, 'slow consumer: too much unsent data; reconnect and resume with after_seq');
  }

  function closeConn(conn: Conn, code: number, reason: string) {
    if (conn.gone) return;
    cleanup(conn);
    conn.close(code, reason);
    // A peer that does not answer the close handshake is cut off.
    setTimeout(() => conn.terminate(), 2_000).unref();
  }

  function cleanup(conn: Conn) {
    if (conn.gone) return;
    conn.gone = true;
    conn.backlog?.stop();
    conns.delete(conn);
    deps.tracker.delete(conn.principal, conn);
    for (const threadId of conn.subThreadIds()) dropSub(conn, threadId);
    releasePrincipal(conn.principal);
  }

  function unindex(conn: Conn, threadId: string) {
    const k = threadKey(conn.principal.projectId, threadId);
    const set = byThread.get(k);
    set?.delete(conn);
    if (set?.size === 0) byThread.delete(k);
  }

  function dropSub(conn: Conn, threadId: string) {
    const sub = conn.sub(threadId);
    if (!sub) return;
    conn.deleteSub(threadId);
    sub.handle?.close();
    unindex(conn, threadId);
    if (conn.principal.userId && sub.handle)
      deps.ephemeral().leave(conn.principal.projectId, threadId, conn.principal.userId);
  }

  function fail(conn: Conn, e: unknown, ref: string | undefined, threadId?: string) {
    const known = isAppError(e);
    const down = !known && isConnectionError(e);
    if (!known && !down) logger.error({ err: e }, 'WebSocket request failed');
    send(conn, {
      type: 'error',
      ...(ref !== undefined ? { id: ref } : {}),
      ...(threadId ? { thread_id: threadId } : {}),
      code: known ? e.kind : down ? 'unavailable' : 'internal',
      message: known
        ? e.message
        : down
          ? 'The database is unavailable; retry shortly.'
          : 'Something went wrong; try again.',
    });
  }

  async function subscribe(conn: Conn, m: Extract<WsClientMessage, { type: 'subscribe' }>) {
    const { principal } = conn;
    if (conn.sub(m.thread_id)) dropSub(conn, m.thread_id);
    if (conn.subCount() >= MAX_SUBSCRIPTIONS) {
      return send(conn, {
        type: 'error',
        id: m.id,
        thread_id: m.thread_id,
        code: 'too_many_subscriptions',
        message: `At most ${MAX_SUBSCRIPTIONS} threads per socket.`,
      });
    }
    const sub = new WsSubscription(conn, m.thread_id);
    conn.addSub(sub);
    let thread;
    try {
      thread = await deps.threads.authorize(db, principal, m.thread_id, 'read');
    } catch (e) {
      if (conn.sub(m.thread_id) === sub) conn.deleteSub(m.thread_id);
      return fail(conn, e, m.id, m.thread_id);
    }
    if (conn.gone || conn.sub(m.thread_id) !== sub) return;
    const lastSeq = Number(thread.last_seq);
    const afterSeq = m.after_seq ?? lastSeq;
    const k = threadKey(principal.projectId, m.thread_id);
    let set = byThread.get(k);
    if (!set) byThread.set(k, (set = new Set()));
    set.add(conn);
    send(conn, {
      type: 'subscribed',
      ...(m.id !== undefined ? { id: m.id } : {}),
      thread_id: m.thread_id,
      after_seq: afterSeq,
      last_seq: lastSeq,
      presence: deps.ephemeral().online(principal.projectId, m.thread_id),
    });
    sub.afterSeq = afterSeq;
    sub.threadLastSeq = lastSeq;
    sub.purgedThroughSeq = Number(thread.purged_through_seq ?? 0);
    sub.handle = hub.subscribe(sub);
    if (principal.userId) deps.ephemeral().join(principal.projectId, m.thread_id, principal.userId);
  }

  /**
   * A `send` frame: the REST append over the socket. Validated like the route's body, admitted
   * by the same `write` rate limit, appended by messages.append (authorization, client-id
   * idempotency, group commit), and answered only once the group has committed.
   */
  async function sendMessage(conn: Conn, m: Extract<WsClientMessage, { type: 'send' }>) {
    const requestId = randomUUID();
    const ref = m.id !== undefined ? { id: m.id } : {};
    if (conn.sendsInFlight >= MAX_SENDS_IN_FLIGHT) {
      const e = rateLimited(`At most ${MAX_SENDS_IN_FLIGHT} sends may await their ack on one socket.`, 1);
      return send(conn, errorFrame(e, requestId, ref));
    }
    conn.sendsInFlight++;
    try {
      const threadId = parse(idSchema, m.thread_id, 'thread_id');
      const flaw = inspectJson(m.message, deps.maxJsonDepth);
      if (flaw === 'too_deep') throw badRequest(`The message nests deeper than ${deps.maxJsonDepth} levels.`);
      if (flaw === 'nul') throw badRequest('Strings in the message must not contain the NUL character (\\u0000).');
      const message = parse(newMessageSchema, m.message, 'message');
      await deps.admit?.(conn.principal, 'write', conn.ip);
      const outcome = await deps.append(conn.principal, threadId, message);
      const [stored] = outcome.messages;
      send(conn, {
        type: 'ack',
        ...ref,
        thread_id: threadId,
        seq: stored.seq,
        replayed: outcome.existed[0],
        message: stored,
      });
    } catch (e) {
      send(conn, errorFrame(e, requestId, ref, { request_id: requestId, thread: m.thread_id }));
    } finally {
      conn.sendsInFlight--;
    }
  }

  /** An error frame carrying the problem REST would have answered (same type, title, status). */
  function errorFrame(e: unknown, requestId: string, ref: { id?: string }, log?: Record<string, unknown>) {
    let error: AppError | null = null;
    if (isAppError(e)) error = e;
    else if (/^22/.test(pgCode(e) ?? ''))
      error = badRequest('A value in the message cannot be stored; check strings and numbers for unusual content.');
    else if (isConnectionError(e))
      error = new AppError('unavailable', 'The database is not reachable right now; retry shortly.', {
        retryAfterSeconds: 1,
      });
    else logger.error({ err: e, ...log }, 'WebSocket send failed');
    const problem = error
      ? problemBody(error, requestId)
      : {
          type: PROBLEM_BASE + 'internal',
          title: 'Internal server error',
          status: 500,
          detail: 'An unexpected error occurred; it has been logged.',
          request_id: requestId,
        };
    const retry = error?.extra.retryAfterSeconds;
    return {
      type: 'error',
      ...ref,
      code: error ? error.kind : 'internal',
      message: problem.detail,
      status: problem.status,
      ...(retry !== undefined ? { retry_after: Math.max(1, Math.ceil(retry)) } : {}),
      problem,
    };
  }

  /** What each action spends, as its REST equivalent would (GET …/tail, POST …/typing, PUT …/read). */
  const ACTION_CLASS: Partial<Record<WsClientMessage['type'], RateClass>> = {
    subscribe: 'read',
    typing: 'write',
    read: 'write',
  };

  async function handle(conn: Conn, m: WsClientMessage) {
    const ref = m.id !== undefined ? { id: m.id } : {};
    const cls = ACTION_CLASS[m.type];
    if (cls && deps.spendAction) await deps.spendAction(conn.principal, cls, conn.ip);
    switch (m.type) {
      case 'subscribe':
        return subscribe(conn, m);
      case 'unsubscribe':
        dropSub(conn, m.thread_id);
        return send(conn, { type: 'unsubscribed', ...ref, thread_id: m.thread_id, reason: 'unsubscribed' });
      case 'ping':
        return send(conn, { type: 'pong', ...ref });
      case 'typing': {
        const userId = conn.principal.userId;
        if (!userId)
          return send(conn, {
            type: 'error',
            ...ref,
            code: 'bad_request',
            message: 'Typing needs a user: connect with X-User-ID or a user token.',
          });
        if (!conn.sub(m.thread_id)?.handle)
          return send(conn, {
            type: 'error',
            ...ref,
            thread_id: m.thread_id,
            code: 'not_subscribed',
            message: 'Subscribe to the thread before sending typing.',
          });
        // At most one "start" per interval (a "stop" does not reset it), and a "stop" only after
        // a "start": alternating start/stop goes out as one start and one stop per interval.
        const typing = (conn.typing ??= new Map());
        const state = typing.get(m.thread_id) ?? { startedAt: 0, on: false };
        const now = Date.now();
        if (m.state === 'start' ? now - state.startedAt < TYPING_MIN_INTERVAL_MS : !state.on) return;
        typing.set(m.thread_id, m.state === 'start' ? { startedAt: now, on: true } : { ...state, on: false });
        // Typing is a write to the thread: an end user who may only read it cannot send it. One
        // after another per socket, so a stop never overtakes its start.
        const run = (conn.typingQueue ?? Promise.resolve()).then(async () => {
          await deps.threads.authorize(db, conn.principal, m.thread_id, 'write');
          await deps.ephemeral().typing(conn.principal.projectId, m.thread_id, userId, m.state);
        });
        conn.typingQueue = run.catch(() => undefined);
        return run;
      }
      case 'send':
        return sendMessage(conn, m);
      case 'read': {
        const r = await deps.readState.markRead(conn.principal, m.thread_id, m.seq);
        return send(conn, {
          type: 'read.ok',
          ...ref,
          thread_id: r.thread_id,
          last_read_seq: r.last_read_seq,
          unread: r.unread,
        });
      }
    }
  }

  // Called by Conn.emit for every socket: no listeners, no closures per socket.
  function onClose(conn: Conn) {
    cleanup(conn);
    if (--openSockets === 0) allClosed?.();
  }
  function onMessage(conn: Conn, data: RawData, isBinary: boolean) {
    conn.alive = true;
    let parsed: unknown;
    try {
      if (isBinary) throw new Error('binary');
      parsed = JSON.parse(data.toString());
    } catch {
      parsed = undefined;
    }
    // A `send` is not counted here: it spends from the REST write limit instead, and at most
    // MAX_SENDS_IN_FLIGHT await their ack. Every other frame (a bad one too) costs a token.
    if ((parsed as { type?: unknown } | undefined)?.type !== 'send') {
      const now = Date.now();
      conn.tokens = Math.min(RATE_BURST, conn.tokens + ((now - conn.refilledAt) / 1000) * RATE_PER_SECOND);
      conn.refilledAt = now;
      if (conn.tokens < 1)
        return send(conn, {
          type: 'error',
          code: 'rate_limited',
          message: `Too many messages: at most ${RATE_PER_SECOND} per second per socket (bursts of ${RATE_BURST}); this one was dropped.`,
        });
      conn.tokens -= 1;
    }
    if (parsed === undefined)
      return send(conn, {
        type: 'error',
        code: 'bad_request',
        message: 'Send one JSON object per text message (see docs/REALTIME.md).',
      });
    const r = wsClientMessageSchema.safeParse(parsed);
    if (!r.success) {
      const ref =
        typeof parsed === 'object' && parsed !== null && typeof (parsed as { id?: unknown }).id === 'string'
          ? { id: (parsed as { id: string }).id }
          : {};
      const detail = r.error.issues.map((i) => `${i.path.join('.') || 'message'}: ${i.message}`).join('; ');
      return send(conn, { type: 'error', ...ref, code: 'bad_request', message: `Invalid message: ${detail}` });
    }
    const m = r.data;
    handle(conn, m).catch((e) =>
      fail(conn, e, m.id, 'thread_id' in m && typeof m.thread_id === 'string' ? m.thread_id : undefined),
    );
  }

  function onConnection(conn: Conn, principal: ApiPrincipal, ip: string) {
    conn.serial = ++serials;
    conn.principal = sharedPrincipal(principal);
    conn.ip = ip;
    conn.gateway = hooks;
    openSockets++;
    conns.add(conn);
    deps.tracker.add(conn.principal, conn);
    send(conn, {
      type: 'welcome',
      connection_id: connectionId(conn),
      user_id: conn.principal.userId,
      heartbeat_ms: deps.heartbeatMs,
    });
  }

  /** Delivers typing, presence and read marks to the local sockets subscribed to the thread. */
  function deliverEphemeral(m: EphemeralMessage) {
    const set = byThread.get(threadKey(m.projectId, m.threadId));
    if (!set) return;
    const frame =
      m.kind === 'read'
        ? JSON.stringify({ type: 'read', thread_id: m.threadId, user_id: m.userId, seq: m.seq })
        : JSON.stringify({ type: m.kind, thread_id: m.threadId, user_id: m.userId, state: m.state });
    for (const conn of set) {
      // Your own typing is not echoed back to you.
      if (m.kind === 'typing' && conn.principal.userId === m.userId) continue;
      if (conn.sub(m.threadId)?.handle) send(conn, frame);
    }
  }

  return {
    deliverEphemeral,

    /** Serves WebSocket upgrades on /v1/ws of this HTTP server. */
    attach(server: Server) {
      server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
        const startedAt = process.hrtime.bigint();
        const url = new URL(req.url ?? '/', 'http://localhost');
        if (url.pathname !== WS_PATH) {
          // Leave other paths to other upgrade handlers, if there are any.
          if (server.listenerCount('upgrade') === 1) {
            const attempt = newAttempt(req, 'unmatched', startedAt);
            refuse(
              socket,
              attempt,
              new AppError('not_found', `No WebSocket endpoint at ${url.pathname}; use ${WS_PATH}.`),
            );
          }
          return;
        }
        const attempt = newAttempt(req, WS_PATH, startedAt);
        socket.on('error', destroyOnError);
        if (closing)
          return refuse(socket, attempt, new AppError('unavailable', 'The server is restarting; reconnect shortly.'));
        authenticate(req, url, attempt).then(
          (principal) => {
            if (closing)
              return refuse(
                socket,
                attempt,
                new AppError('unavailable', 'The server is restarting; reconnect shortly.'),
              );
            if (!socket.readable || !socket.writable) {
              // The client went away while it was being authenticated.
              socket.destroy();
              return logAttempt(attempt, 101, true);
            }
            upgrading = attempt;
            try {
              wss.handleUpgrade(req, socket, head, (ws) => {
                // `ws` handles the socket's errors from here on.
                socket.removeListener('error', destroyOnError);
                logAttempt(attempt, 101);
                onConnection(ws, principal, deps.clientIp(req));
              });
            } finally {
              upgrading = null;
            }
          },
          (e) => refuse(socket, attempt, e),
        );
      });
      if (!heartbeat) {
        heartbeat = setInterval(() => {
          for (const conn of conns) {
            if (!conn.alive) {
              cleanup(conn);
              conn.terminate();
              continue;
            }
            conn.alive = false;
            conn.ping();
          }
        }, deps.heartbeatMs);
        heartbeat.unref();
      }
    },

    /** Closes every socket with 1012 (service restart): clients reconnect elsewhere and resume. */
    async close() {
      closing = true;
      if (heartbeat) clearInterval(heartbeat);
      // Resolves once every socket has closed (as `ws`'s own client tracking would wait).
      const closed = openSockets === 0 ? Promise.resolve() : new Promise<void>((r) => (allClosed = r));
      for (const conn of [...conns])
        closeConn(conn, WS_CLOSE.serviceRestart, 'service restart: reconnect and resume with after_seq');
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await closed;
    },

    stats: () => ({ sockets: conns.size, slow_consumer_closes: slowConsumerCloses }),
  };
}

export type WsGateway = ReturnType<typeof createWsGateway>;
