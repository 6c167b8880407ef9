import type { ApiPrincipal } from '../../lib/http/route';

/** Registers a live connection under its key; `close` ends it if the key is revoked. Returns the unregister function. */
export type TrackConnection = (principal: ApiPrincipal, close: () => void) => () => void;
