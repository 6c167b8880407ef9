/**
 * Client-side helpers for fault tests: a writer that retries like a well-behaved client
 * (same idempotency key, another replica, bounded backoff) and records what was acknowledged.
 */

export interface Attempt {
  status: number | 'network' | 'timeout';
  replica: string;
  body?: any;
  headers?: Headers;
  contentType?: string;
  text?: string;
  ms: number;
}

export interface Target {
  name: string;
  url: string;
}

/** One HTTP attempt that never throws: network failures and timeouts become statuses. */
export async function attempt(
  target: Target,
  method: string,
  path: string,
  opts: { headers?: Record<string, string>; body?: unknown; timeoutMs?: number } = {},
): Promise<Attempt> {
  const started = performance.now();
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  try {
    const res = await fetch(target.url + path, {
      method,
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      signal: AbortSignal.timeout(opts.timeoutMs ?? 15_000),
    });
    const text = await res.text();
    const contentType = res.headers.get('content-type') ?? '';
    let body: unknown = text;
    if (contentType.includes('json') && text) {
      try {
        body = JSON.parse(text);
      } catch {
        /* keep the text */
      }
    }
    return {
      status: res.status,
      replica: target.name,
      body,
      headers: res.headers,
      contentType,
      text,
      ms: performance.now() - started,
    };
  } catch (e) {
    const name = (e as { name?: string }).name;
    return {
      status: name === 'TimeoutError' || name === 'AbortError' ? 'timeout' : 'network',
      replica: target.name,
      ms: performance.now() - started,
    };
  }
}

/** Statuses a client should retry (with the same idempotency key). */
export const retryable = (s: Attempt['status']) =>
  s === 'network' || s === 'timeout' || s === 503 || s === 502 || s === 504 || s === 429;

/** Runs `worker(i)` for i in [0, n) with at most `concurrency` in flight. */
export async function pool<T>(n: number, concurrency: number, worker: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, n) }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await worker(i);
      }
    }),
  );
  return out;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
