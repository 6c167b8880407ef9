import { ProgressDBError, RealtimeError } from './errors';
import type { Schemas } from './generated/openapi';
import type { Tail, ThreadEvent } from './tail';
import type { Transport } from './transport';
import { Emitter, backoffDelay } from './util';

/** What the SDK needs of a WebSocket: the browser's, or `ws`'s in Node. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/**
 * A WebSocket constructor: `globalThis.WebSocket` in browsers, `WebSocket` from the `ws`
 * package in Node 20 (which has no global one). Node's `ws` also takes `{ headers }`.
 */
export type WebSocketConstructor = new (url: string, protocols?: string | string[] | object) => WebSocketLike;

export interface SocketOptions {
  /** How often to ping (default 15 s). */
  heartbeatIntervalMs: number;
  /** Silence for this long means the socket is dead (default 2 × interval + 5 s). */
  heartbeatTimeoutMs: number;
  /** Mints a realtime token for `?token=` (clients acting as a user); undefined → key headers (Node only). */
  token?: () => Promise<string>;
}

export type SendMessage = Omit<Schemas['NewMessage'], 'id'> & { id: string; [field: string]: unknown };
type Message = Schemas['Message'];
type Problem = Schemas['Problem'];

interface PendingSend {
  resolve(m: Message): void;
  reject(e: Error): void;
}

interface ServerFrame {
  type: string;
  id?: string;
  thread_id?: string;
  event?: ThreadEvent;
  seq?: number;
  after_seq?: number;
  presence?: string[];
  user_id?: string;
  state?: string;
  reason?: string;
  code?: string;
  message?: unknown;
  status?: number;
  retry_after?: number;
  /** On an error answering a `send`: the problem REST would have answered. */
  problem?: Problem;
  heartbeat_ms?: number;
  recovered?: boolean;
  purged_through_seq?: number;
}

const OPEN = 1;
/** Codes after which reconnecting is pointless (revoked key, frame too big). */
const FATAL_CLOSE = new Set([1008, 1009]);

/** Error frames after which a send is retried over REST (which backs off), not thrown. */
const SEND_RETRIED = new Set(['rate_limited', 'unavailable', 'internal']);

/** Sends that could not go over the socket; the caller falls back to REST with the same message id. */
export class SocketUnavailable extends Error {}

/**
 * One WebSocket shared by a client's tails: subscriptions with after_seq, typing, read marks
 * and `send`. Reconnects (any replica) with backoff, resubscribing every thread from the last
 * seq its tails delivered; a heartbeat detects dead connections.
 */
export class RealtimeSocket extends Emitter<{ open: undefined; close: { code: number } }> {
  private ws: WebSocketLike | null = null;
  private readonly tails = new Map<string, Set<Tail>>();
  private readonly pending = new Map<string, PendingSend>();
  private refs = 0;
  private failures = 0;
  private everOpened = false;
  private lastRx = 0;
  private heartbeat: ReturnType<typeof setInterval> | null = null;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private connecting = false;
  private stopped = false;
  /** Set once the server answered a `send` with an ack: it speaks the send protocol. */
  private sendSupported: boolean | undefined;
  /** Called when WebSocket never worked: the tails move to SSE. */
  onUnusable: ((tails: Tail[]) => void) | undefined;

  constructor(
    private readonly transport: Transport,
    private readonly WebSocketImpl: WebSocketConstructor,
    private readonly options: SocketOptions,
  ) {
    super();
  }

  get isOpen(): boolean {
    return this.ws !== null && this.ws.readyState === OPEN && !this.stopped;
  }

  /** Whether `send` frames are worth trying (the socket is open and the server has not refused them). */
  get canSend(): boolean {
    return this.isOpen && this.sendSupported !== false;
  }

  add(tail: Tail): void {
    let set = this.tails.get(tail.threadId);
    const fresh = !set;
    if (!set) this.tails.set(tail.threadId, (set = new Set()));
    set.add(tail);
    tail.sendTyping = (state) => this.frame({ type: 'typing', thread_id: tail.threadId, state });
    tail.detach = () => this.remove(tail);
    if (!this.ws && !this.connecting) this.connect();
    // A tail that wants older events than the running subscription restarts it from its seq
    // (the others drop what they already have).
    else if (this.isOpen && (fresh || tail.lastSeq !== undefined)) this.subscribe(tail.threadId, [tail]);
  }

  private remove(tail: Tail): void {
    const set = this.tails.get(tail.threadId);
    if (!set?.delete(tail)) return;
    if (set.size === 0) {
      this.tails.delete(tail.threadId);
      this.frame({ type: 'unsubscribe', thread_id: tail.threadId });
    }
  }

  /** Appends a message over the socket; resolves with the committed message (ack after commit). */
  send(threadId: string, message: SendMessage): Promise<Message> {
    if (!this.canSend) return Promise.reject(new SocketUnavailable('socket not open'));
    const ref = `s${++this.refs}`;
    return new Promise<Message>((resolve, reject) => {
      // No answer in time: the caller retries over REST with the same message id (idempotent).
      const timer = setTimeout(() => {
        if (this.pending.delete(ref)) reject(new SocketUnavailable('no ack in time'));
      }, this.transport.timeoutMs);
      const settle =
        <T>(f: (v: T) => void) =>
        (v: T) => {
          clearTimeout(timer);
          f(v);
        };
      this.pending.set(ref, { resolve: settle(resolve), reject: settle(reject) });
      if (!this.frame({ type: 'send', id: ref, thread_id: threadId, message })) {
        this.pending.delete(ref);
        clearTimeout(timer);
        reject(new SocketUnavailable('socket not open'));
      }
    });
  }

  /** Moves the user's read mark over the socket (false when not sent). */
  read(threadId: string, seq: number): boolean {
    return this.frame({ type: 'read', thread_id: threadId, seq });
  }

  close(): void {
    this.stopped = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.drop(1000, 'client closed');
  }

  private frame(msg: Record<string, unknown>): boolean {
    if (!this.isOpen) return false;
    try {
      this.ws!.send(JSON.stringify(msg));
      return true;
    } catch {
      return false;
    }
  }

  /** Subscribes (again) to a thread; `connecting` are the tails this (re)connects. */
  private subscribe(threadId: string, connecting?: Tail[]): void {
    const tails = [...(this.tails.get(threadId) ?? [])];
    const seqs = tails.map((t) => t.lastSeq);
    // Live only when no tail has a position yet; otherwise from the furthest-behind tail.
    const afterSeq = seqs.some((s) => s === undefined) ? undefined : Math.min(...(seqs as number[]));
    for (const t of connecting ?? tails) t.connected('websocket');
    this.frame({ type: 'subscribe', thread_id: threadId, ...(afterSeq !== undefined ? { after_seq: afterSeq } : {}) });
  }

  private connect(): void {
    if (this.stopped) return;
    this.connecting = true;
    void this.open().catch((e: unknown) => {
      this.connecting = false;
      const err = e instanceof ProgressDBError ? e : new ProgressDBError({ status: 0, detail: String(e), cause: e });
      for (const t of this.allTails()) t.interrupted(err);
      // A refused token (bad key, forbidden user) will not get better by retrying.
      if (err.status >= 400 && err.status < 500 && err.status !== 429) {
        for (const t of this.allTails()) t.fail(err);
        return;
      }
      if (err.status === 0 || err.status === 503) this.transport.failover();
      this.scheduleReconnect(false);
    });
  }

  private async open(): Promise<void> {
    const token = this.options.token ? await this.options.token() : undefined;
    if (this.stopped) return;
    const url = `${this.transport.baseUrl.replace(/^http/, 'ws')}/v1/ws${token ? `?token=${encodeURIComponent(token)}` : ''}`;
    const ws = token
      ? new this.WebSocketImpl(url)
      : new this.WebSocketImpl(url, { headers: await this.transport.authHeaders() });
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.connecting = false;
      this.everOpened = true;
      this.lastRx = Date.now();
      this.startHeartbeat();
      for (const threadId of this.tails.keys()) this.subscribe(threadId);
      this.emit('open', undefined);
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastRx = Date.now();
      if (typeof ev.data !== 'string' && !(ev.data instanceof ArrayBuffer) && !ArrayBuffer.isView(ev.data)) return;
      const text = typeof ev.data === 'string' ? ev.data : new TextDecoder().decode(ev.data);
      let frame: ServerFrame;
      try {
        frame = JSON.parse(text) as ServerFrame;
      } catch {
        return;
      }
      this.dispatch(frame);
    };
    ws.onerror = () => undefined;
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.closed(ev.code, ev.reason);
    };
  }

  private dispatch(f: ServerFrame): void {
    if (f.type === 'welcome') {
      this.failures = 0;
      return;
    }
    if ((f.type === 'ack' || f.type === 'error') && f.id && this.pending.has(f.id)) {
      const p = this.pending.get(f.id)!;
      this.pending.delete(f.id);
      if (f.type === 'ack') {
        this.sendSupported = true;
        p.resolve(f.message as Message);
      } else if (f.problem && !SEND_RETRIED.has(f.code ?? '')) {
        // Refused by the service (validation, access, conflict): the same typed error the REST
        // call would have thrown; retrying over REST would be refused alike.
        this.sendSupported = true;
        const pr = f.problem;
        p.reject(
          new ProgressDBError({
            status: pr.status,
            type: pr.type,
            title: pr.title,
            detail: pr.detail,
            requestId: pr.request_id,
            errors: pr.errors,
            retryAfter: f.retry_after,
          }),
        );
      } else if (this.sendSupported === undefined && f.code === 'bad_request') {
        // A server without the send protocol refuses the frame itself: use REST from now on.
        this.sendSupported = false;
        p.reject(new SocketUnavailable('send not supported by this server'));
      } else if (SEND_RETRIED.has(f.code ?? '')) {
        // Not committed (database away, a rate limit): REST, with the same message id, retries
        // with backoff (honouring Retry-After) and cannot store it twice.
        p.reject(new SocketUnavailable(`send failed: ${String(f.message)}`));
      } else {
        p.reject(
          new RealtimeError(f.code ?? 'error', String(f.message ?? 'send failed'), f.status ?? 0, f.retry_after),
        );
      }
      return;
    }
    const tails = f.thread_id ? this.tails.get(f.thread_id) : undefined;
    if (!tails) return;
    switch (f.type) {
      case 'subscribed':
        for (const t of tails) t.subscribed(f.after_seq ?? 0, f.presence);
        return;
      case 'event':
        if (f.event) for (const t of tails) t.deliver(f.event);
        return;
      case 'ready':
        for (const t of tails) t.ready(f.seq ?? 0, f.recovered !== false);
        return;
      case 'reset':
        for (const t of tails) t.reset(f.purged_through_seq ?? 0);
        return;
      case 'typing':
      case 'presence':
      case 'read':
        for (const t of tails) t.ephemeral(f);
        return;
      case 'unsubscribed':
        if (f.reason === 'unsubscribed') return;
        this.tails.delete(f.thread_id!);
        for (const t of tails)
          t.fail(new RealtimeError(f.reason ?? 'unsubscribed', `The server ended the tail: ${f.reason}`));
        return;
      case 'error':
        // Subscribe refused (forbidden, not found…) ends those tails; a passing failure is retried.
        if (f.code === 'unavailable' || f.code === 'internal' || f.code === 'rate_limited') {
          const threadId = f.thread_id!;
          setTimeout(
            () => this.tails.has(threadId) && this.subscribe(threadId, []),
            backoffDelay(1, this.transport.backoff),
          );
          return;
        }
        if (f.code === 'not_subscribed') return;
        this.tails.delete(f.thread_id!);
        for (const t of tails)
          t.fail(new RealtimeError(f.code ?? 'error', String(f.message ?? 'refused'), f.status ?? 0));
        return;
    }
  }

  private startHeartbeat(): void {
    this.stopHeartbeat();
    const every = this.options.heartbeatIntervalMs;
    this.heartbeat = setInterval(
      () => {
        if (Date.now() - this.lastRx > this.options.heartbeatTimeoutMs) {
          // Nothing heard (not even a pong): the connection is dead even if TCP has not noticed.
          this.drop(4000, 'heartbeat timeout');
          this.closed(4000, 'heartbeat timeout');
          return;
        }
        this.frame({ type: 'ping' });
      },
      Math.min(every, this.options.heartbeatTimeoutMs / 2),
    );
  }

  private stopHeartbeat(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  /** Forgets the current socket without waiting for a close handshake. */
  private drop(code: number, reason: string): void {
    const ws = this.ws;
    this.ws = null;
    this.stopHeartbeat();
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    const terminate = (ws as { terminate?: () => void }).terminate;
    try {
      if (typeof terminate === 'function') terminate.call(ws);
      else ws.close(code, reason);
    } catch {
      /* already closed */
    }
  }

  private allTails(): Tail[] {
    return [...this.tails.values()].flatMap((s) => [...s]);
  }

  private closed(code: number, reason: string): void {
    this.ws = null;
    this.connecting = false;
    this.stopHeartbeat();
    for (const p of this.pending.values()) p.reject(new SocketUnavailable(`socket closed (${code})`));
    this.pending.clear();
    this.emit('close', { code });
    if (this.stopped) return;
    if (FATAL_CLOSE.has(code)) {
      const err = new RealtimeError(code === 1008 ? 'revoked' : 'closed', `WebSocket closed: ${code} ${reason}`);
      for (const t of this.allTails()) t.fail(err);
      this.tails.clear();
      return;
    }
    for (const t of this.allTails())
      t.interrupted(new RealtimeError('disconnected', `WebSocket closed: ${code} ${reason}`));
    // 1012: that replica is restarting; 1006: it vanished. Either way, another replica now.
    if (code === 1012 || code === 1006 || code === 4000) this.transport.failover();
    this.scheduleReconnect(code === 1012 || code === 4008);
  }

  private scheduleReconnect(soon: boolean): void {
    if (this.stopped || this.reconnectTimer) return;
    if (!this.everOpened && this.failures >= 2 && this.onUnusable) {
      // WebSocket never worked here (a proxy refusing upgrades?): the tails go on over SSE.
      const tails = this.allTails();
      this.tails.clear();
      this.stopped = true;
      this.onUnusable(tails);
      return;
    }
    const delay = soon ? 50 + Math.random() * 250 : backoffDelay(this.failures++, this.transport.backoff);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.tails.size > 0 || this.everOpened) this.connect();
    }, delay);
  }
}
