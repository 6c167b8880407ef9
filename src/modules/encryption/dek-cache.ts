/**
 * Unwrapped data keys of this replica: a TTL (so a destroyed or rotated-away key does not
 * live forever in memory) and a size bound (least recently used out first).
 */
export function createDekCache<V>(opts: { ttlMs: number; max: number }) {
  const entries = new Map<string, { value: V; expires: number }>();
  return {
    get(key: string): V | undefined {
      const e = entries.get(key);
      if (!e) return undefined;
      if (e.expires <= Date.now()) {
        entries.delete(key);
        return undefined;
      }
      entries.delete(key);
      entries.set(key, e);
      return e.value;
    },
    set(key: string, value: V) {
      if (opts.max <= 0 || opts.ttlMs <= 0) return;
      entries.delete(key);
      entries.set(key, { value, expires: Date.now() + opts.ttlMs });
      while (entries.size > opts.max) entries.delete(entries.keys().next().value!);
    },
    deletePrefix(prefix: string) {
      for (const k of [...entries.keys()]) if (k.startsWith(prefix)) entries.delete(k);
    },
    clear: () => entries.clear(),
    get size() {
      return entries.size;
    },
  };
}
