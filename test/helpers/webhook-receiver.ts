import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Received {
  headers: IncomingHttpHeaders;
  body: string;
  json: any;
  at: number;
  path: string;
}

export interface Answer {
  status: number;
  headers?: Record<string, string>;
  /** Wait this long before answering (timeouts). */
  delayMs?: number;
  body?: string;
}

/**
 * A real HTTP receiver on loopback. Every request is recorded (also those it fails on
 * purpose); `answer` decides the response per request. Default: 204.
 */
export async function startReceiver(port = 0, opts: { keepAliveTimeoutMs?: number } = {}) {
  const received: Received[] = [];
  let answer: (r: Received, n: number) => Answer = () => ({ status: 204 });
  const waiters: Array<() => void> = [];
  let answered = 0;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      let json: unknown = null;
      try {
        json = JSON.parse(body);
      } catch {
        json = null;
      }
      const r: Received = { headers: req.headers, body, json, at: Date.now(), path: req.url ?? '' };
      received.push(r);
      waiters.splice(0).forEach((w) => w());
      const a = answer(r, received.length);
      const send = () => {
        answered++;
        if (res.destroyed) return;
        res.writeHead(a.status, a.headers);
        res.end(a.body ?? '');
      };
      if (a.delayMs) setTimeout(send, a.delayMs);
      else send();
    });
  });
  let connections = 0;
  server.on('connection', () => connections++);
  // Under 1 s Node's server advertises `Keep-Alive: timeout=0`, and Node's client agent then does
  // not reuse the connection: a connection per request unless a test asks for a longer timeout.
  server.keepAliveTimeout = opts.keepAliveTimeoutMs ?? 500;
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()));
  const actualPort = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${actualPort}`,
    port: actualPort,
    received,
    /** TCP connections accepted so far (keep-alive reuse shows as fewer connections than requests). */
    get connections() {
      return connections;
    },
    /** Requests received and not answered yet (in flight at the sender). */
    get inFlight() {
      return received.length - answered;
    },
    answer(fn: (r: Received, n: number) => Answer) {
      answer = fn;
    },
    /** Resolves once `predicate` holds over what was received (checked on every request). */
    async until(predicate: (all: Received[]) => boolean, timeoutMs = 15_000): Promise<Received[]> {
      const deadline = Date.now() + timeoutMs;
      while (!predicate(received)) {
        const left = deadline - Date.now();
        if (left <= 0)
          throw new Error(`receiver: condition not met within ${timeoutMs} ms (${received.length} received)`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(left, 200));
          waiters.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
      return received;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export type Receiver = Awaited<ReturnType<typeof startReceiver>>;
