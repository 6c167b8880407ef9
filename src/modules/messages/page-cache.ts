import { Counter, Gauge, type Registry } from 'prom-client';

/**
 * What a cached page was built from: the thread's `last_seq` and `purged_through_seq`. Every
 * change to what a page shows (message, edit, delete, reaction, membership, policy, key
 * destruction via `keys.destroyed`) appends to the log and so moves `last_seq`; retention moves
 * `purged_through_seq`. A page is served from memory only when both still match the thread row
 * read in the same request (the row that authorized it).
 */
export interface ThreadVersion {
  last_seq: number | string;
  purged_through_seq: number | string;
}

export const versionOf = (t: ThreadVersion) => `${Number(t.last_seq)}/${Number(t.purged_through_seq ?? 0)}`;

interface Entry {
  version: string;
  bytes: Buffer;
  size: number;
  /** When set (opened, i.e. decrypted, pages), the entry is not served after this time. */
  expiresAt?: number;
}

/** Bookkeeping per entry (key, Map slot, object), counted against the budget with the bytes. */
const OVERHEAD = 128;

/**
 * Per-replica cache of serialised page bodies (the exact JSON bytes sent), bounded by a byte
 * budget, least recently used first out. It never answers with a page whose version differs
 * from the caller's: a mismatching entry is dropped on sight.
 */
export function createPageCache(opts: { maxBytes: number; registry?: Registry; now?: () => number }) {
  const now = opts.now ?? Date.now;
  const entries = new Map<string, Entry>();
  let bytes = 0;
  const registers = opts.registry ? [opts.registry] : [];
  const hits = new Counter({
    name: 'progressdb_page_cache_hits_total',
    help: 'Message pages answered from the per-replica page cache.',
    registers,
  });
  const misses = new Counter({
    name: 'progressdb_page_cache_misses_total',
    help: 'Cacheable message pages read from PostgreSQL (absent, or the thread moved on).',
    registers,
  });
  const evictions = new Counter({
    name: 'progressdb_page_cache_evictions_total',
    help: 'Pages dropped from the page cache to stay within PAGE_CACHE_BYTES.',
    registers,
  });
  new Gauge({
    name: 'progressdb_page_cache_bytes',
    help: 'Bytes held by the page cache (bodies plus bookkeeping), at most PAGE_CACHE_BYTES.',
    registers,
    collect() {
      this.set(bytes);
    },
  });
  const stats = { hits: 0, misses: 0, evictions: 0 };

  function drop(key: string, e: Entry) {
    entries.delete(key);
    bytes -= e.size;
  }

  return {
    get enabled() {
      return opts.maxBytes > 0;
    },

    /** The stored bytes when they were built from exactly this thread version. */
    get(key: string, version: string): Buffer | undefined {
      const e = entries.get(key);
      if (e && e.version === version && (e.expiresAt === undefined || now() < e.expiresAt)) {
        // Most recently used moves to the end of the Map's order.
        entries.delete(key);
        entries.set(key, e);
        stats.hits++;
        hits.inc();
        return e.bytes;
      }
      if (e) drop(key, e);
      stats.misses++;
      misses.inc();
      return undefined;
    },

    /** Stores a page; `ttlMs` bounds how long it may be served even while its version holds. */
    set(key: string, version: string, body: Buffer, ttlMs?: number) {
      if (ttlMs !== undefined && ttlMs <= 0) return;
      const size = body.length + key.length * 2 + OVERHEAD;
      // One page may take at most a quarter of the budget, so a huge page cannot flush the rest.
      if (size > opts.maxBytes / 4) return;
      const old = entries.get(key);
      if (old) drop(key, old);
      entries.set(key, { version, bytes: body, size, ...(ttlMs !== undefined ? { expiresAt: now() + ttlMs } : {}) });
      bytes += size;
      for (const [k, e] of entries) {
        if (bytes <= opts.maxBytes) break;
        drop(k, e);
        stats.evictions++;
        evictions.inc();
      }
    },

    stats: () => ({ ...stats, bytes, entries: entries.size }),
  };
}

export type PageCache = ReturnType<typeof createPageCache>;
