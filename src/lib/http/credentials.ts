import type { IncomingHttpHeaders } from 'node:http';

/** The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), else null. */
export function bearerToken(authorization: string | undefined): string | null {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
  return m ? m[1] : null;
}

const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);

/**
 * The API key of a request, from any transport's headers: `Authorization: Bearer <key>`, a bare
 * `Authorization: <key>`, or `X-API-Key: <key>`.
 */
export function apiKeyFrom(headers: IncomingHttpHeaders): string | undefined {
  const auth = first(headers.authorization);
  if (auth) return bearerToken(auth) ?? auth;
  return first(headers['x-api-key']);
}
