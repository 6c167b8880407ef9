import { EventEmitter } from 'node:events';
import pg from 'pg';
import type { Logger } from './logger';

export type NotificationHandler = (payload: string) => void;

/**
 * The replica's one LISTEN connection, shared by every feature (live tail, key revocation,
 * presence …). Reconnects with exponential backoff and jitter; after a reconnect it emits
 * 'reconnected' so subscribers can re-read whatever they may have missed while it was down.
 */
export function createPgListener(deps: { url: string; logger: Logger; minBackoffMs?: number; maxBackoffMs?: number }) {
  const handlers = new Map<string, Set<NotificationHandler>>();
  const events = new EventEmitter();
  const minBackoff = deps.minBackoffMs ?? 100;
  const maxBackoff = deps.maxBackoffMs ?? 2_000;
  let client: pg.Client | null = null;
  let connected = false;
  let closed = false;
  let everConnected = false;
  let attempt = 0;
  let timer: NodeJS.Timeout | null = null;

  const quote = (channel: string) => `"${channel.replace(/"/g, '""')}"`;

  async function connect() {
    if (closed) return;
    const c = new pg.Client({ connectionString: deps.url, application_name: 'progressdb-listener', keepAlive: true });
    c.on('error', (err) => {
      deps.logger.warn({ err }, 'LISTEN connection error');
      drop(c);
    });
    c.on('end', () => drop(c));
    c.on('notification', (n) => {
      const set = handlers.get(n.channel);
      if (!set) return;
      for (const h of set) {
        try {
          h(n.payload ?? '');
        } catch (err) {
          deps.logger.error({ err, channel: n.channel }, 'notification handler failed');
        }
      }
    });
    try {
      await c.connect();
      for (const channel of handlers.keys()) await c.query(`LISTEN ${quote(channel)}`);
      if (closed) {
        await c.end().catch(() => undefined);
        return;
      }
      client = c;
      connected = true;
      attempt = 0;
      deps.logger.info('LISTEN connection up');
      if (everConnected) events.emit('reconnected');
      everConnected = true;
      events.emit('connected');
    } catch (err) {
      deps.logger.warn({ err: (err as Error).message }, 'LISTEN connection failed; retrying');
      c.removeAllListeners('end');
      await c.end().catch(() => undefined);
      scheduleReconnect();
    }
  }

  function drop(c: pg.Client) {
    if (client !== c) return;
    client = null;
    connected = false;
    events.emit('disconnected');
    c.end().catch(() => undefined);
    scheduleReconnect();
  }

  function scheduleReconnect() {
    if (closed || timer) return;
    const delay = Math.min(maxBackoff, minBackoff * 2 ** attempt++) * (0.5 + Math.random() / 2);
    timer = setTimeout(() => {
      timer = null;
      void connect();
    }, delay);
  }

  return {
    /** Subscribes to a channel; safe before or after start(). */
    async listen(channel: string, handler: NotificationHandler) {
      let set = handlers.get(channel);
      if (!set) {
        set = new Set();
        handlers.set(channel, set);
        if (client) await client.query(`LISTEN ${quote(channel)}`).catch(() => undefined);
      }
      set.add(handler);
    },

    /** 'connected' | 'disconnected' | 'reconnected' (after a drop: re-read what may be missed). */
    on(event: 'connected' | 'disconnected' | 'reconnected', fn: () => void) {
      events.on(event, fn);
    },

    get connected() {
      return connected;
    },

    start: () => connect(),

    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      const c = client;
      client = null;
      connected = false;
      if (c) {
        c.removeAllListeners('end');
        await c.end().catch(() => undefined);
      }
    },
  };
}

export type PgListener = ReturnType<typeof createPgListener>;
