import type { Knex } from 'knex';
import type { Logger } from '../../lib/logger';
import type { PgListener } from '../../lib/pg-listener';

/** Typing, presence and read marks cross replicas here: NOTIFY only, never stored. */
export const EPHEMERAL_CHANNEL = 'progressdb_ephemeral';
const NOTIFY_MAX_BYTES = 7_900;

export type EphemeralMessage =
  | { kind: 'typing'; projectId: string; threadId: string; userId: string; state: 'start' | 'stop' }
  | { kind: 'presence'; projectId: string; threadId: string; userId: string; state: 'online' | 'offline' }
  | { kind: 'read'; projectId: string; threadId: string; userId: string; seq: number };

type Wire = {
  r: string;
  k: 'typing' | 'presence' | 'read' | 'sync';
  e?: Array<[string, string, string, string | number]>;
};

const threadKey = (p: string, t: string) => `${p}\u0000${t}`;
const userKey = (p: string, t: string, u: string) => `${p}\u0000${t}\u0000${u}`;

/**
 * Presence per (thread, user) across replicas. Each replica counts its own connections and
 * announces online on the first, offline when the last has been gone for the grace period,
 * and re-announces what it holds every heartbeat (and when another replica asks with 'sync'),
 * so a replica that starts or missed notifications converges. Entries of a replica that died
 * without saying offline expire after three heartbeats.
 */
export function createEphemeral(deps: {
  db: Knex;
  listener: PgListener;
  logger: Logger;
  replicaId: string;
  graceMs: number;
  heartbeatMs: number;
  deliver: (m: EphemeralMessage) => void;
}) {
  const { db, replicaId, logger } = deps;
  const local = new Map<
    string,
    { projectId: string; threadId: string; userId: string; count: number; timer: NodeJS.Timeout | null }
  >();
  /** thread → user → replica → expires at (ms). */
  const known = new Map<string, Map<string, Map<string, number>>>();
  const ttl = () => deps.heartbeatMs * 3;
  let heartbeat: NodeJS.Timeout | null = null;
  let closed = false;

  async function publish(k: Wire['k'], entries: Array<[string, string, string, string | number]> = []) {
    const payloads: string[] = [];
    let batch: Wire['e'] = [];
    let size = 64;
    for (const e of entries) {
      const n = Buffer.byteLength(JSON.stringify(e)) + 1;
      if (size + n > NOTIFY_MAX_BYTES && batch.length > 0) {
        payloads.push(JSON.stringify({ r: replicaId, k, e: batch }));
        batch = [];
        size = 64;
      }
      batch.push(e);
      size += n;
    }
    if (batch.length > 0 || k === 'sync') payloads.push(JSON.stringify({ r: replicaId, k, e: batch }));
    try {
      for (const p of payloads) await db.raw('select pg_notify(?, ?)', [EPHEMERAL_CHANNEL, p]);
    } catch (err) {
      // Ephemeral by design: a lost typing indicator is fine; presence heals on the next heartbeat.
      logger.debug({ err: (err as Error).message }, 'ephemeral notify failed');
    }
  }

  const isOnline = (p: string, t: string, u: string) => {
    const replicas = known.get(threadKey(p, t))?.get(u);
    return !!replicas && replicas.size > 0;
  };

  function setPresence(replica: string, p: string, t: string, u: string, online: boolean) {
    const tk = threadKey(p, t);
    const was = isOnline(p, t, u);
    if (online) {
      let users = known.get(tk);
      if (!users) known.set(tk, (users = new Map()));
      let replicas = users.get(u);
      if (!replicas) users.set(u, (replicas = new Map()));
      replicas.set(replica, Date.now() + ttl());
    } else {
      const users = known.get(tk);
      users?.get(u)?.delete(replica);
      if (users?.get(u)?.size === 0) users.delete(u);
      if (users?.size === 0) known.delete(tk);
    }
    const now = isOnline(p, t, u);
    if (now !== was)
      deps.deliver({ kind: 'presence', projectId: p, threadId: t, userId: u, state: now ? 'online' : 'offline' });
  }

  function onNotify(payload: string) {
    let w: Wire;
    try {
      w = JSON.parse(payload) as Wire;
    } catch {
      return;
    }
    if (w.k === 'sync') {
      if (w.r !== replicaId) void announceAll();
      return;
    }
    for (const e of w.e ?? []) {
      if (!Array.isArray(e) || e.length < 4) continue;
      const [p, t, u, v] = e;
      if (w.k === 'presence') setPresence(w.r, p, t, u, v === 'online');
      else if (w.k === 'typing')
        deps.deliver({ kind: 'typing', projectId: p, threadId: t, userId: u, state: v === 'stop' ? 'stop' : 'start' });
      else if (w.k === 'read') deps.deliver({ kind: 'read', projectId: p, threadId: t, userId: u, seq: Number(v) });
    }
  }

  const announceAll = () =>
    publish(
      'presence',
      [...local.values()].map((l) => [l.projectId, l.threadId, l.userId, 'online']),
    );

  function sweep() {
    const now = Date.now();
    for (const [tk, users] of known) {
      for (const [u, replicas] of users) {
        for (const [r, expires] of replicas) {
          if (expires < now) {
            const [p, t] = tk.split('\u0000');
            setPresence(r, p, t, u, false);
          }
        }
      }
    }
  }

  return {
    async start() {
      await deps.listener.listen(EPHEMERAL_CHANNEL, onNotify);
      // After a start or a lost LISTEN connection, ask the others to re-announce and announce ours.
      deps.listener.on('connected', () => void publish('sync').then(announceAll));
      if (deps.listener.connected) void publish('sync');
      heartbeat = setInterval(() => {
        sweep();
        void announceAll();
      }, deps.heartbeatMs);
      heartbeat.unref();
    },

    /** A connection of this user subscribed to the thread. */
    join(projectId: string, threadId: string, userId: string) {
      const k = userKey(projectId, threadId, userId);
      const entry = local.get(k);
      if (entry) {
        entry.count++;
        if (entry.timer) clearTimeout(entry.timer);
        entry.timer = null;
        return;
      }
      local.set(k, { projectId, threadId, userId, count: 1, timer: null });
      void publish('presence', [[projectId, threadId, userId, 'online']]);
    },

    /** A connection left the thread; offline goes out only if none is back within the grace period. */
    leave(projectId: string, threadId: string, userId: string) {
      const k = userKey(projectId, threadId, userId);
      const entry = local.get(k);
      if (!entry || --entry.count > 0 || closed) return;
      entry.timer = setTimeout(() => {
        if (local.get(k) !== entry || entry.count > 0) return;
        local.delete(k);
        void publish('presence', [[projectId, threadId, userId, 'offline']]);
      }, deps.graceMs);
      entry.timer.unref();
    },

    typing(projectId: string, threadId: string, userId: string, state: 'start' | 'stop') {
      return publish('typing', [[projectId, threadId, userId, state]]);
    },

    read(projectId: string, threadId: string, userId: string, seq: number) {
      return publish('read', [[projectId, threadId, userId, seq]]);
    },

    /** Users online in a thread, on any replica. */
    online(projectId: string, threadId: string): string[] {
      return [...(known.get(threadKey(projectId, threadId))?.keys() ?? [])].sort();
    },

    /** Says offline for everything this replica holds (shutdown: no grace, no waiting for expiry). */
    async close() {
      closed = true;
      if (heartbeat) clearInterval(heartbeat);
      const entries = [...local.values()];
      for (const e of entries) if (e.timer) clearTimeout(e.timer);
      local.clear();
      await publish(
        'presence',
        entries.map((l) => [l.projectId, l.threadId, l.userId, 'offline']),
      );
    },
  };
}

export type Ephemeral = ReturnType<typeof createEphemeral>;
