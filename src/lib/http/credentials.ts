import type { IncomingHttpHeaders } from 'node:http';
import { badRequest } from '../errors';

/** The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), else null. */
export function bearerToken(authorization: string | undefined): string | null {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
  return m ? m[1] : null;
}

const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);

/**
 * The API key of a request, from any transport's headers: `Authorization: Bearer <key>`, a bare
 * `Authorization: <key>`, or `X-API-Key: <key>`. Both headers naming different keys is refused
 * (400): silently picking one would hide a client bug, or a proxy injecting its own key.
 */
export function apiKeyFrom(headers: IncomingHttpHeaders): string | undefined {
  const auth = first(headers.authorization);
  const fromAuth = auth ? (bearerToken(auth) ?? auth).trim() : undefined;
  const fromHeader = first(headers['x-api-key'])?.trim() || undefined;
  if (fromAuth !== undefined && fromHeader !== undefined && fromAuth !== fromHeader)
    throw badRequest('Authorization and X-API-Key name different keys; send one key, in one of them.');
  return fromAuth ?? fromHeader;
}
