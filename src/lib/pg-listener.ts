import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import pg from 'pg';
import type { Logger } from './logger';

export type NotificationHandler = (payload: string) => void;

/** This connection's own probe channel: a NOTIFY it sends itself must come back on it. */
const PROBE_CHANNEL = 'progressdb_listener_probe';

/**
 * The replica's one LISTEN connection, shared by every feature (live tail, key revocation,
 * presence …). Reconnects with exponential backoff and jitter; after a reconnect it emits
 * 'reconnected' so subscribers can re-read whatever they may have missed while it was down.
 *
 * A connection can die without a word (a proxy or NAT that stops forwarding, a half-open TCP
 * connection): no error, no 'end', just no more notifications. Every `probeIntervalMs` the
 * listener NOTIFYs itself on its own connection; a probe that has not come back within
 * `probeTimeoutMs` counts the connection dead: it is destroyed and replaced, like any drop.
 */
export function createPgListener(deps: {
  url: string;
  logger: Logger;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  probeIntervalMs?: number;
  probeTimeoutMs?: number;
}) {
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
  const probeInterval = deps.probeIntervalMs ?? 10_000;
  const probeTimeout = deps.probeTimeoutMs ?? 5_000;
  const probeId = randomBytes(6).toString('hex');
  let probeSeq = 0;
  let probeTimer: NodeJS.Timeout | null = null;
  let probeDeadline: NodeJS.Timeout | null = null;
  let probeAwaited: string | null = null;
  let reconnects = 0;

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
      if (n.channel === PROBE_CHANNEL) {
        if (client === c && n.payload === probeAwaited) probeAnswered();
        return;
      }
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
      await c.query(`LISTEN ${quote(PROBE_CHANNEL)}`);
      for (const channel of handlers.keys()) await c.query(`LISTEN ${quote(channel)}`);
      if (closed) {
        await c.end().catch(() => undefined);
        return;
      }
      client = c;
      connected = true;
      attempt = 0;
      deps.logger.info('LISTEN connection up');
      scheduleProbe();
      if (everConnected) {
        reconnects++;
        events.emit('reconnected');
      }
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
    stopProbe();
    events.emit('disconnected');
    c.end().catch(() => undefined);
    scheduleReconnect();
  }

  function stopProbe() {
    if (probeTimer) clearTimeout(probeTimer);
    if (probeDeadline) clearTimeout(probeDeadline);
    probeTimer = probeDeadline = null;
    probeAwaited = null;
  }

  function scheduleProbe() {
    stopProbe();
    if (closed || probeInterval <= 0) return;
    probeTimer = setTimeout(probe, probeInterval);
    probeTimer.unref();
  }

  function probe() {
    probeTimer = null;
    const c = client;
    if (!c) return;
    const payload = `${probeId}:${++probeSeq}`;
    probeAwaited = payload;
    probeDeadline = setTimeout(() => {
      if (client !== c) return;
      deps.logger.warn({ timeout_ms: probeTimeout }, 'LISTEN connection silent (probe not answered); reconnecting');
      // end() would wait on a socket that no longer carries anything.
      (c as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
      drop(c);
    }, probeTimeout);
    probeDeadline.unref();
    // The answer is the notification itself, not the query's reply: it proves delivery works.
    c.query(`NOTIFY ${quote(PROBE_CHANNEL)}, '${payload}'`).catch(() => undefined);
  }

  function probeAnswered() {
    if (probeDeadline) clearTimeout(probeDeadline);
    probeDeadline = null;
    probeAwaited = null;
    scheduleProbe();
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

    /** Connections replaced after a drop or a failed probe, since start. */
    get reconnects() {
      return reconnects;
    },

    start: () => connect(),

    async close() {
      closed = true;
      stopProbe();
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
