import { ProgressDBError, RealtimeError, errorFromResponse } from './errors';
import type { Schemas } from './generated/openapi';
import { readSse } from './sse';
import type { Transport } from './transport';
import { Emitter, backoffDelay, sleep } from './util';

export type ThreadEvent = Schemas['Event'];
export type TailTransport = 'websocket' | 'sse';

export interface TailOptions {
  /** Replay every event after this seq, then go live. Omitted: live events from now on. */
  afterSeq?: number;
  /** `auto` (default): WebSocket when a constructor is available, else SSE over fetch. */
  transport?: 'auto' | TailTransport;
  /** Closes the tail. */
  signal?: AbortSignal;
}

export interface TailEvents extends Record<string, unknown> {
  /** Each event of the thread log, in seq order, exactly once. */
  event: ThreadEvent;
  /** Replay is done (after every connect); `seq` is the last seq replayed. */
  ready: { seq: number };
  /**
   * Retention removed events the tail had not delivered: it goes on from the horizon, and
   * `recovered` is false from now on.
   */
  reset: { purged_through_seq: number };
  /** After a reconnect's replay: whether continuity held (no event missed since the last delivered seq). */
  resumed: { recovered: boolean; lastSeq: number; reconnects: number; transport: TailTransport };
  typing: { user_id: string; state: 'start' | 'stop' };
  presence: { user_id: string; state: 'online' | 'offline'; online: string[] };
  read: { user_id: string; seq: number };
  status: { state: 'connecting' | 'live' | 'reconnecting' | 'closed'; transport: TailTransport | null };
  /** A transient problem the tail recovers from by itself (it keeps reconnecting). */
  warning: ProgressDBError;
  /** The tail ended: closed by you, access lost, thread deleted, key revoked, or a permanent error. */
  closed: { reason: string; error?: ProgressDBError };
}

/** Reads events of a thread after a seq from the REST log (used to fill a gap, should one ever show). */
export type EventReader = (afterSeq: number, limit: number) => Promise<{ data: ThreadEvent[]; has_more: boolean }>;

/**
 * A live tail of one thread: an async iterator of its log events and an event emitter of
 * everything else. It resumes from the last seq it delivered after any disconnect, on any
 * replica, and says whether continuity held (`recovered`).
 */
export class Tail extends Emitter<TailEvents> implements AsyncIterable<ThreadEvent> {
  /** The last seq delivered (undefined until the first event or `ready` of a live-only tail). */
  lastSeq: number | undefined;
  /** False once any gap could not be filled (e.g. below a retention horizon). */
  recovered = true;
  /** Connections after the first. */
  reconnects = 0;
  transport: TailTransport | null = null;
  /** Users online in the thread (any replica). */
  readonly presence = new Set<string>();
  closed = false;
  closeReason: string | undefined;
  private error: ProgressDBError | undefined;
  private queue: ThreadEvent[] = [];
  private waiters: Array<() => void> = [];
  private iterating = false;
  private chain: Promise<void> = Promise.resolve();
  private connections = 0;
  /** Set by the driver: stops it. */
  detach: () => void = () => undefined;
  /** Set by the WebSocket driver: sends typing. */
  sendTyping: ((state: 'start' | 'stop') => boolean) | undefined;

  constructor(
    readonly threadId: string,
    options: TailOptions,
    private readonly readEvents: EventReader,
  ) {
    super();
    this.lastSeq = options.afterSeq;
    options.signal?.addEventListener('abort', () => this.close(), { once: true });
  }

  /** Tells others in the thread that this user is typing (WebSocket only; false when not sent). */
  typing(state: 'start' | 'stop' = 'start'): boolean {
    return this.sendTyping?.(state) ?? false;
  }

  close(): void {
    this.end('closed');
  }

  [Symbol.asyncIterator](): AsyncIterator<ThreadEvent> {
    this.iterating = true;
    return {
      next: async (): Promise<IteratorResult<ThreadEvent>> => {
        for (;;) {
          const e = this.queue.shift();
          if (e) return { value: e, done: false };
          if (this.closed) {
            if (this.error) throw this.error;
            return { value: undefined, done: true };
          }
          await new Promise<void>((resolve) => this.waiters.push(resolve));
        }
      },
      return: async (): Promise<IteratorResult<ThreadEvent>> => {
        this.close();
        return { value: undefined, done: true };
      },
    };
  }

  // ---- called by the drivers ----

  /** @internal A connection (first or re-) was established. */
  connected(transport: TailTransport): void {
    this.transport = transport;
    if (this.connections++ > 0) this.reconnects++;
    this.emit('status', { state: 'connecting', transport });
  }

  /** @internal The subscription's start: a live-only tail learns where it starts. */
  subscribed(afterSeq: number, online: string[] | undefined): void {
    this.chain = this.chain.then(() => {
      if (this.lastSeq === undefined) this.lastSeq = afterSeq;
      if (online) {
        this.presence.clear();
        for (const u of online) this.presence.add(u);
      }
    });
  }

  /** @internal */
  deliver(event: ThreadEvent): void {
    this.chain = this.chain.then(() => this.process(event)).catch((e: unknown) => this.fail(asError(e)));
  }

  /** @internal Events up to `horizon` are gone (retention): continue after it. */
  reset(horizon: number): void {
    this.chain = this.chain.then(() => {
      if (this.closed) return;
      this.recovered = false;
      if (this.lastSeq === undefined || this.lastSeq < horizon) this.lastSeq = horizon;
      this.emit('reset', { purged_through_seq: horizon });
    });
  }

  /** @internal `recovered: false` when the server says the replay started above a retention horizon. */
  ready(seq: number, recovered = true): void {
    this.chain = this.chain.then(() => {
      if (this.closed) return;
      if (!recovered) this.recovered = false;
      if (this.lastSeq === undefined) this.lastSeq = seq;
      this.emit('ready', { seq });
      this.emit('status', { state: 'live', transport: this.transport });
      if (this.connections > 1)
        this.emit('resumed', {
          recovered: this.recovered,
          lastSeq: this.lastSeq,
          reconnects: this.reconnects,
          transport: this.transport ?? 'sse',
        });
    });
  }

  /** @internal The connection dropped; the driver reconnects. */
  interrupted(error?: ProgressDBError): void {
    if (this.closed) return;
    if (error) this.emit('warning', error);
    this.emit('status', { state: 'reconnecting', transport: this.transport });
  }

  /** @internal */
  ephemeral(frame: { type: string; user_id?: string; state?: string; seq?: number }): void {
    const user = frame.user_id ?? '';
    if (frame.type === 'typing')
      this.emit('typing', { user_id: user, state: frame.state === 'stop' ? 'stop' : 'start' });
    else if (frame.type === 'read') this.emit('read', { user_id: user, seq: frame.seq ?? 0 });
    else if (frame.type === 'presence') {
      const state = frame.state === 'offline' ? 'offline' : 'online';
      if (state === 'online') this.presence.add(user);
      else this.presence.delete(user);
      this.emit('presence', { user_id: user, state, online: [...this.presence] });
    }
  }

  /** @internal A permanent failure: the tail ends with this error. */
  fail(error: ProgressDBError): void {
    if (this.closed) return;
    this.error = error;
    this.end(error instanceof RealtimeError ? error.code : 'error', error);
  }

  /** @internal */
  end(reason: string, error?: ProgressDBError): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    this.detach();
    this.emit('status', { state: 'closed', transport: this.transport });
    this.emit('closed', { reason, error });
    this.wake();
  }

  private async process(event: ThreadEvent): Promise<void> {
    if (this.closed) return;
    if (this.lastSeq !== undefined && event.seq <= this.lastSeq) return; // already delivered
    if (this.lastSeq !== undefined && event.seq > this.lastSeq + 1) await this.fillGap(event.seq);
    if (this.closed) return;
    this.push(event);
  }

  /** The server promises no gaps; should one show anyway, read it from the REST log. */
  private async fillGap(untilSeq: number): Promise<void> {
    while (!this.closed && this.lastSeq! + 1 < untilSeq) {
      let page;
      try {
        page = await this.readEvents(this.lastSeq!, Math.min(1000, untilSeq - this.lastSeq! - 1));
      } catch (e) {
        if (e instanceof ProgressDBError && e.status === 410) {
          // Below the retained horizon: say so, and carry on from what exists.
          this.recovered = false;
          return;
        }
        throw e;
      }
      const events = page.data.filter((e) => e.seq > this.lastSeq! && e.seq < untilSeq);
      if (events.length === 0) {
        this.recovered = false;
        return;
      }
      for (const e of events) this.push(e);
    }
  }

  private push(event: ThreadEvent): void {
    if (this.lastSeq !== undefined && event.seq !== this.lastSeq + 1) this.recovered = false;
    this.lastSeq = event.seq;
    if (this.iterating || !this.has('event')) this.queue.push(event);
    this.emit('event', event);
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const resolve of w) resolve();
  }
}

function asError(e: unknown): ProgressDBError {
  return e instanceof ProgressDBError ? e : new ProgressDBError({ status: 0, detail: String(e), cause: e });
}

export interface SseDriverOptions {
  /** No byte (event or `: ping`) for this long means the connection is dead (default 60 s). */
  heartbeatTimeoutMs: number;
  /** A realtime token instead of key headers (browsers' frontend clients without a key). */
  token?: () => Promise<string | undefined>;
}

const PERMANENT = new Set([400, 401, 403, 404, 410, 422]);

/** Runs a tail over SSE (fetch streaming): reconnects with Last-Event-ID until the tail closes. */
export function runSseTail(tail: Tail, transport: Transport, o: SseDriverOptions): void {
  let controller: AbortController | null = null;
  tail.detach = () => controller?.abort();
  void (async () => {
    let failures = 0;
    while (!tail.closed) {
      controller = new AbortController();
      const ctrl = controller;
      let lastRx = Date.now();
      const watchdog = setInterval(
        () => {
          if (Date.now() - lastRx > o.heartbeatTimeoutMs) ctrl.abort(new Error('heartbeat timeout'));
        },
        Math.min(1000, o.heartbeatTimeoutMs / 4),
      );
      let immediate = false;
      try {
        const token = await o.token?.();
        const headers: Record<string, string> = { accept: 'text/event-stream' };
        if (!token) Object.assign(headers, await transport.authHeaders());
        if (tail.lastSeq !== undefined) headers['last-event-id'] = String(tail.lastSeq);
        const url = transport.url(`/v1/threads/${encodeURIComponent(tail.threadId)}/tail`, token ? { token } : {});
        const res = await transport.fetch(url, { headers, signal: ctrl.signal });
        if (!res.ok || !res.body) {
          const err = await errorFromResponse(res);
          if (PERMANENT.has(res.status)) return tail.fail(err);
          throw err;
        }
        tail.connected('sse');
        for await (const item of readSse(res.body)) {
          lastRx = Date.now();
          failures = 0;
          if (item.kind === 'comment') continue;
          if (item.event === 'message') tail.deliver(JSON.parse(item.data) as ThreadEvent);
          else if (item.event === 'ready') {
            const ready = JSON.parse(item.data) as { seq: number; recovered?: boolean };
            tail.ready(ready.seq, ready.recovered !== false);
          } else if (item.event === 'reset')
            tail.reset((JSON.parse(item.data) as { purged_through_seq: number }).purged_through_seq);
          else if (item.event === 'reconnect') {
            // The replica is shutting down (or we fell behind): resume elsewhere, at once.
            if ((JSON.parse(item.data) as { reason?: string }).reason === 'shutdown') transport.failover();
            immediate = true;
            break;
          } else if (item.event === 'closed') {
            const reason = (JSON.parse(item.data) as { reason?: string }).reason ?? 'closed';
            return tail.fail(new RealtimeError(reason, `The server ended the tail: ${reason}`));
          }
        }
        tail.interrupted();
      } catch (e) {
        if (tail.closed) return;
        const err = e instanceof ProgressDBError ? e : new ProgressDBError({ status: 0, detail: String(e), cause: e });
        if (err.status === 0 || err.status === 503) transport.failover();
        tail.interrupted(err);
      } finally {
        clearInterval(watchdog);
        ctrl.abort();
      }
      if (tail.closed) return;
      await sleep(immediate ? 50 + Math.random() * 200 : backoffDelay(failures++, transport.backoff));
    }
  })().catch((e: unknown) => tail.fail(asError(e)));
}
