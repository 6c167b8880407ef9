const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** A random id (base62; getRandomValues works in every browser context, randomUUID only in secure ones). */
export function randomId(prefix: string, length = 20): string {
  const bytes = new Uint8Array(length);
  globalThis.crypto.getRandomValues(bytes);
  let out = '';
  // 248 = 4 × 62: rejecting above it keeps every character equally likely.
  for (let i = 0; i < bytes.length; i++) {
    let b = bytes[i];
    while (b >= 248) b = globalThis.crypto.getRandomValues(new Uint8Array(1))[0];
    out += ALPHABET[b % 62];
  }
  return `${prefix}_${out}`;
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

export interface BackoffOptions {
  /** First retry's delay before jitter (ms). */
  minDelayMs: number;
  /** Upper bound of any delay (ms). */
  maxDelayMs: number;
}

/** Exponential backoff with full jitter: a random delay in [base/2, base], base = min × 2^attempt. */
export function backoffDelay(attempt: number, o: BackoffOptions): number {
  const base = Math.min(o.maxDelayMs, o.minDelayMs * 2 ** attempt);
  return base / 2 + Math.random() * (base / 2);
}

/** A tiny typed event emitter (no Node `events` in browsers). */
export class Emitter<Events extends Record<string, unknown>> {
  private listeners = new Map<keyof Events, Set<(payload: never) => void>>();

  on<K extends keyof Events>(type: K, listener: (payload: Events[K]) => void): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => this.off(type, listener);
  }

  off<K extends keyof Events>(type: K, listener: (payload: Events[K]) => void): void {
    this.listeners.get(type)?.delete(listener);
  }

  /** Whether anyone listens for `type`. */
  protected has(type: keyof Events): boolean {
    return (this.listeners.get(type)?.size ?? 0) > 0;
  }

  protected emit<K extends keyof Events>(type: K, payload: Events[K]): void {
    for (const l of [...(this.listeners.get(type) ?? [])]) (l as (payload: Events[K]) => void)(payload);
  }
}
