import type { IncomingMessage } from 'node:http';

/** Express's compiled TRUST_PROXY setting (`app.get('trust proxy fn')`): is this hop a trusted proxy? */
export type TrustProxy = (addr: string, hop: number) => boolean;

/**
 * The client address of any request — an express request or a raw WebSocket upgrade — exactly
 * as express's `req.ip` computes it: walk X-Forwarded-For from the nearest hop while the hop
 * is a trusted proxy; the first untrusted address is the client.
 */
export function createClientIp(trust: TrustProxy) {
  return (req: IncomingMessage): string | undefined => {
    const socketAddr = req.socket.remoteAddress;
    if (socketAddr === undefined) return undefined;
    const header = req.headers['x-forwarded-for'];
    // No forwarding header: the one hop is the client (what the walk below answers, without its arrays).
    if (header === undefined) return socketAddr;
    const forwarded = (Array.isArray(header) ? header.join(',') : (header ?? ''))
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)
      .reverse();
    const hops = [socketAddr, ...forwarded];
    for (let i = 0; i < hops.length - 1; i++) if (!trust(hops[i], i)) return hops[i];
    return hops[hops.length - 1];
  };
}

export type ClientIp = ReturnType<typeof createClientIp>;
