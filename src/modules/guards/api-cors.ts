import cors from 'cors';
import type { Request, RequestHandler, Response } from 'express';

const EXPOSED_HEADERS = ['RateLimit', 'RateLimit-Policy', 'Retry-After', 'X-Request-Id', 'Location', 'ETag'];

/**
 * CORS for the /v1 API. A preflight carries no key, so it cannot know which project (and
 * which allowed_origins) the real request is for; it approves any origin, which grants
 * nothing by itself. The real request carries the key and is refused by originGuard before
 * its handler runs when the origin is not allowed for that key. No credentials mode: the API
 * authenticates with headers, so cookies are never sent cross-origin on its behalf.
 */
export function apiCors(): RequestHandler {
  const preflight = cors({
    origin: true,
    credentials: false,
    methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
    allowedHeaders: [
      'Authorization',
      'X-API-Key',
      'X-User-ID',
      'X-User-Signature',
      'X-User-Token',
      'Content-Type',
      'Idempotency-Key',
      'Last-Event-ID',
      'X-Request-Id',
    ],
    exposedHeaders: EXPOSED_HEADERS,
    maxAge: 600,
  });
  return (req, res, next) => {
    if (req.method === 'OPTIONS') return preflight(req, res, next);
    apiCorsHeaders(req, res);
    next();
  };
}

const EXPOSED = EXPOSED_HEADERS.join(',');

/**
 * The headers cors() would set on an actual (non-preflight) /v1 request, without the options
 * object, closures and header list cors() builds per request.
 */
export function apiCorsHeaders(req: Request, res: Response) {
  const origin = req.headers.origin;
  if (origin) res.setHeader('Access-Control-Allow-Origin', origin);
  // res.vary's parsing and merging only matter when a Vary is already set.
  if (res.getHeader('Vary') === undefined) res.setHeader('Vary', 'Origin');
  else res.vary('Origin');
  res.setHeader('Access-Control-Expose-Headers', EXPOSED);
}
