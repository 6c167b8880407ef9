import { NetworkError, ProgressDBError, errorFromResponse } from './errors';
import { backoffDelay, randomId, sleep, type BackoffOptions } from './util';

export interface RetryOptions extends Partial<BackoffOptions> {
  /** Retries after the first attempt (default 4). 0 disables retries. */
  retries?: number;
}

export interface TransportOptions {
  /** The service's base URL, or several replicas: a failed connection moves on to the next. */
  baseUrl: string | readonly string[];
  /** Defaults to globalThis.fetch. */
  fetch?: typeof fetch;
  /** Per-attempt timeout (default 30 s). */
  timeoutMs?: number;
  retry?: RetryOptions;
}

export interface Credentials {
  /** The API key; empty for a client that has only a realtime token. */
  key: string;
  userId?: string;
  /** Resolves X-User-Signature (publishable keys). */
  signature?: () => Promise<string | undefined>;
}

export type Query = Record<string, string | number | boolean | null | undefined>;

export interface RequestOptions {
  query?: Query;
  /** JSON-encoded unless a string (sent as text/plain). */
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Override the Idempotency-Key this logical call uses on every attempt. */
  idempotencyKey?: string;
}

export interface ApiResult<T> {
  status: number;
  headers: Headers;
  body: T;
}

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
/** Statuses that mean "not done, try again": rate limited, overloaded or restarting, gateway trouble. */
const RETRY_STATUS = new Set([429, 502, 503, 504]);

/**
 * HTTP with the retry rules every call shares: one Idempotency-Key per logical call, reused on
 * each attempt; exponential backoff with jitter on 429/502/503/504 and network errors, honouring
 * Retry-After; failover to the next base URL when a replica cannot be reached.
 */
export class Transport {
  private readonly urls: string[];
  private current = 0;
  readonly fetch: typeof fetch;
  readonly timeoutMs: number;
  readonly retries: number;
  readonly backoff: BackoffOptions;

  constructor(
    options: TransportOptions,
    readonly credentials: Credentials,
  ) {
    const urls = typeof options.baseUrl === 'string' ? [options.baseUrl] : [...options.baseUrl];
    if (urls.length === 0) throw new TypeError('baseUrl: give at least one URL');
    this.urls = urls.map((u) => u.replace(/\/+$/, ''));
    const f = options.fetch ?? globalThis.fetch;
    if (typeof f !== 'function') throw new TypeError('No fetch: pass options.fetch');
    this.fetch = (input, init) => f(input, init);
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.retries = options.retry?.retries ?? 4;
    this.backoff = { minDelayMs: options.retry?.minDelayMs ?? 200, maxDelayMs: options.retry?.maxDelayMs ?? 10_000 };
  }

  /** The base URL in use (it changes after a connection failure). */
  get baseUrl(): string {
    return this.urls[this.current];
  }

  /** Moves to the next replica (after a failure on this one). */
  failover(): void {
    this.current = (this.current + 1) % this.urls.length;
  }

  /** The same credentials acting as another user (secret keys), sharing this transport's replicas. */
  withCredentials(credentials: Credentials): Transport {
    const t = Object.create(Transport.prototype) as Transport;
    Object.assign(t, this, { credentials });
    return t;
  }

  async authHeaders(): Promise<Record<string, string>> {
    const h: Record<string, string> = this.credentials.key ? { authorization: `Bearer ${this.credentials.key}` } : {};
    if (this.credentials.userId !== undefined) h['x-user-id'] = this.credentials.userId;
    const signature = await this.credentials.signature?.();
    if (signature) h['x-user-signature'] = signature;
    return h;
  }

  url(path: string, query?: Query): string {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== null) qs.set(k, String(v));
    const s = qs.toString();
    return `${this.baseUrl}${path}${s ? `?${s}` : ''}`;
  }

  /** A JSON API call with retries; throws ProgressDBError on an error answer. */
  async request<T>(method: string, path: string, o: RequestOptions = {}): Promise<ApiResult<T>> {
    const res = await this.send(method, path, o);
    const text = await res.text();
    const type = res.headers.get('content-type') ?? '';
    const body = (type.includes('json') && text ? JSON.parse(text) : text) as T;
    return { status: res.status, headers: res.headers, body };
  }

  /** Sends with retries and returns the successful Response (body unread). */
  async send(method: string, path: string, o: RequestOptions = {}): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json', ...(await this.authHeaders()), ...o.headers };
    if (MUTATING.has(method)) headers['idempotency-key'] = o.idempotencyKey ?? randomId('idem');
    let payload: string | undefined;
    if (typeof o.body === 'string') {
      payload = o.body;
      headers['content-type'] = 'text/plain; charset=utf-8';
    } else if (o.body !== undefined) {
      payload = JSON.stringify(o.body);
      headers['content-type'] = 'application/json';
    }
    for (let attempt = 0; ; attempt++) {
      let error: ProgressDBError;
      const timeout = AbortSignal.timeout(this.timeoutMs);
      const signal = o.signal ? AbortSignal.any([o.signal, timeout]) : timeout;
      try {
        const res = await this.fetch(this.url(path, o.query), { method, headers, body: payload, signal });
        if (res.ok) return res;
        error = await errorFromResponse(res);
        if (!RETRY_STATUS.has(res.status)) throw error;
        // 503 is also what a replica says while it shuts down: try another one.
        if (res.status === 503) this.failover();
      } catch (e) {
        if (e instanceof ProgressDBError && !(e instanceof NetworkError) && !RETRY_STATUS.has(e.status)) throw e;
        if (o.signal?.aborted) throw new NetworkError('aborted', o.signal.reason);
        if (e instanceof ProgressDBError) error = e;
        else {
          error = new NetworkError(
            timeout.aborted ? `no answer within ${this.timeoutMs} ms` : `request failed: ${String(e)}`,
            e,
          );
          this.failover();
        }
      }
      if (attempt >= this.retries) throw error;
      const wait = error.retryAfter !== undefined ? error.retryAfter * 1000 : backoffDelay(attempt, this.backoff);
      await sleep(Math.min(wait, 60_000), o.signal);
      if (o.signal?.aborted) throw new NetworkError('aborted', o.signal.reason);
    }
  }
}
