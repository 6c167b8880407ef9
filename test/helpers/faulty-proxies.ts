/**
 * Loopback proxies that fail the way networks do, for client tests: an HTTP proxy that lets a
 * request through and then loses its response, and a TCP proxy whose connections can go
 * silent (no FIN, no RST) so only a heartbeat can tell they are dead.
 */
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';

export interface DroppingProxy {
  url: string;
  /** Requests seen, in order: "METHOD path idempotency-key". */
  seen: string[];
  /** The next request matching `match` is forwarded, but its client connection is cut before the answer. */
  dropNextResponse(match: (method: string, path: string) => boolean): void;
  /** The next `count` matching requests are answered 503 with Retry-After (not forwarded). */
  refuseNext(match: (method: string, path: string) => boolean, count: number, retryAfterSeconds: number): void;
  close(): Promise<void>;
}

export async function startDroppingProxy(upstream: string): Promise<DroppingProxy> {
  const target = new URL(upstream);
  const seen: string[] = [];
  let drop: ((m: string, p: string) => boolean) | null = null;
  let refuse: { match: (m: string, p: string) => boolean; left: number; retryAfter: number } | null = null;
  const server = http.createServer((req, res) => {
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    seen.push(`${method} ${path} ${req.headers['idempotency-key'] ?? ''}`);
    if (refuse && refuse.left > 0 && refuse.match(method, path)) {
      refuse.left--;
      res.writeHead(503, { 'content-type': 'application/problem+json', 'retry-after': String(refuse.retryAfter) });
      res.end(JSON.stringify({ type: 'about:blank', title: 'Unavailable', status: 503, detail: 'proxy says wait' }));
      return;
    }
    const dropThis = drop !== null && drop(method, path);
    if (dropThis) drop = null;
    const upstreamReq = http.request(
      { host: target.hostname, port: target.port, method, path, headers: { ...req.headers, host: target.host } },
      (up) => {
        if (dropThis) {
          // The server has answered (so it committed); the client never hears it.
          up.resume();
          up.on('end', () => req.socket.destroy());
          return;
        }
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstreamReq.on('error', () => res.destroy());
    req.pipe(upstreamReq);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    dropNextResponse: (match) => (drop = match),
    refuseNext: (match, count, retryAfter) => (refuse = { match, left: count, retryAfter }),
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

export interface SilenceableProxy {
  url: string;
  /** Open client connections right now. */
  readonly connections: number;
  /** Every open connection stops carrying bytes, both ways, without being closed. */
  silence(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(upstream: string): Promise<SilenceableProxy> {
  const target = new URL(upstream);
  const pairs = new Set<{ client: net.Socket; server: net.Socket; silent: boolean }>();
  const server = net.createServer((client) => {
    const up = net.connect(Number(target.port), target.hostname);
    const pair = { client, server: up, silent: false };
    pairs.add(pair);
    client.on('data', (d) => pair.silent || up.write(d));
    up.on('data', (d) => pair.silent || client.write(d));
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      up.destroy();
    };
    client.on('close', end);
    up.on('close', end);
    client.on('error', end);
    up.on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get connections() {
      return pairs.size;
    },
    silence() {
      for (const p of pairs) p.silent = true;
    },
    close() {
      for (const p of pairs) {
        p.client.destroy();
        p.server.destroy();
      }
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
