import type { ApiPrincipal } from '../../lib/http/route';

/** A live connection (a WebSocket, an SSE stream) that a revocation of its key ends. */
export interface LiveConnection {
  revoke(): void;
}

/**
 * Live connections by key: counted against the live-connection caps and ended when their key is
 * revoked. A connection registers itself (no closure per connection); `delete` is idempotent.
 */
export interface ConnectionTracker {
  add(principal: ApiPrincipal, conn: LiveConnection): void;
  delete(principal: ApiPrincipal, conn: LiveConnection): void;
}

/** Registers a live connection under its key; `close` ends it if the key is revoked. Returns the unregister function. */
export type TrackConnection = (principal: ApiPrincipal, close: () => void) => () => void;
