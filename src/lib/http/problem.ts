import { randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { ErrorRequestHandler, Response } from 'express';
import { z } from '../zod';
import { AppError, type ErrorKind, type FieldError } from '../errors';
import { isConnectionError, pgCode } from '../db';
import type { Logger } from '../logger';

const KINDS: Record<ErrorKind, { status: number; slug: string; title: string }> = {
  bad_request: { status: 400, slug: 'bad-request', title: 'Bad request' },
  unauthorized: { status: 401, slug: 'unauthorized', title: 'Unauthorized' },
  forbidden: { status: 403, slug: 'forbidden', title: 'Forbidden' },
  not_found: { status: 404, slug: 'not-found', title: 'Not found' },
  conflict: { status: 409, slug: 'conflict', title: 'Conflict' },
  unprocessable: { status: 422, slug: 'unprocessable', title: 'Unprocessable content' },
  payload_too_large: { status: 413, slug: 'payload-too-large', title: 'Payload too large' },
  unsupported_media_type: { status: 415, slug: 'unsupported-media-type', title: 'Unsupported media type' },
  not_acceptable: { status: 406, slug: 'not-acceptable', title: 'Not acceptable' },
  rate_limited: { status: 429, slug: 'quota-exceeded', title: 'Too many requests' },
  upgrade_required: { status: 426, slug: 'upgrade-required', title: 'Upgrade required' },
  gone: { status: 410, slug: 'gone', title: 'Gone' },
  precondition_failed: { status: 412, slug: 'precondition-failed', title: 'Precondition failed' },
  unavailable: { status: 503, slug: 'unavailable', title: 'Service unavailable' },
  integrity: { status: 500, slug: 'integrity-check-failed', title: 'Stored data failed its integrity check' },
};

export const PROBLEM_BASE = 'https://progressdb.dev/problems/';

export const problemSchema = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    request_id: z.string(),
    errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
    purged_through_seq: z
      .number()
      .int()
      .optional()
      .openapi({ description: 'type …/purged: events up to this seq were removed by retention' }),
    first_retained_seq: z.number().int().optional(),
  })
  .openapi('Problem');

export function zodFieldErrors(error: z.ZodError, prefix = ''): FieldError[] {
  return error.issues.map((i) => ({
    path: [prefix, ...i.path.map(String)].filter(Boolean).join('.') || '(root)',
    message: i.message,
  }));
}

/** The one error → HTTP status mapping, for every transport. */
export const statusOf = (kind: ErrorKind): number => KINDS[kind].status;

/** The RFC 9457 body of a domain error. */
export function problemBody(error: AppError, requestId: string) {
  const info = KINDS[error.kind];
  return {
    type: PROBLEM_BASE + (error.extra.type ?? info.slug),
    title: info.title,
    status: info.status,
    detail: error.message,
    request_id: requestId,
    ...(error.extra.errors ? { errors: error.extra.errors } : {}),
    ...error.extra.fields,
  };
}

export function sendProblem(res: Response, error: AppError): void {
  if (error.extra.retryAfterSeconds !== undefined)
    res.setHeader('Retry-After', String(Math.max(1, Math.ceil(error.extra.retryAfterSeconds))));
  res
    .status(statusOf(error.kind))
    .type('application/problem+json')
    .send(JSON.stringify(problemBody(error, String(res.locals.requestId ?? ''))));
}

/**
 * Answers on a raw socket, for requests express never sees (malformed HTTP, WebSocket
 * upgrades): the same problem+json as REST, then the connection is closed. Returns the status.
 */
export function endSocketWithProblem(
  socket: Duplex,
  error: AppError | { status: number; title: string; slug: string; detail: string },
  requestId: string = randomUUID(),
): number {
  const body = JSON.stringify(
    error instanceof AppError
      ? problemBody(error, requestId)
      : {
          type: PROBLEM_BASE + error.slug,
          title: error.title,
          status: error.status,
          detail: error.detail,
          request_id: requestId,
        },
  );
  const status = error instanceof AppError ? statusOf(error.kind) : error.status;
  const reason = error instanceof AppError ? KINDS[error.kind].title : error.title;
  const retry =
    error instanceof AppError && error.extra.retryAfterSeconds !== undefined
      ? `Retry-After: ${Math.max(1, Math.ceil(error.extra.retryAfterSeconds))}\r\n`
      : '';
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/problem+json\r\n${retry}` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nX-Request-Id: ${requestId}\r\nConnection: close\r\n\r\n${body}`,
  );
  return status;
}

interface BodyParserError {
  type?: string;
  status?: number;
  expose?: boolean;
}

/** Maps anything thrown to problem+json: domain errors by kind, parser errors by type, the rest 500. */
export function errorMiddleware(logger: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const parser = err as BodyParserError;
    let problem: AppError;
    if (err instanceof AppError) problem = err;
    else if (parser.type === 'entity.parse.failed')
      problem = new AppError('bad_request', 'The request body is not valid JSON.');
    else if (parser.type === 'entity.too.large')
      problem = new AppError('payload_too_large', 'The request body is larger than this server accepts.');
    else if (parser.type === 'encoding.unsupported' || parser.type === 'charset.unsupported')
      problem = new AppError(
        'unsupported_media_type',
        'The request body encoding or charset is not supported; send UTF-8.',
      );
    else if (parser.type === 'request.aborted')
      problem = new AppError('bad_request', 'The request was aborted by the client.');
    else if (parser.status && parser.status >= 400 && parser.status < 500 && parser.expose)
      problem = new AppError('bad_request', 'The request could not be read.');
    else if (err instanceof URIError)
      problem = new AppError('bad_request', 'The request URL is not correctly encoded.');
    else if (/^22/.test(pgCode(err) ?? '')) {
      // A value PostgreSQL cannot store (a data exception): the input's fault, never a 500.
      logger.warn({ err: (err as Error).message, request_id: res.locals.requestId }, 'database refused a value');
      problem = new AppError(
        'bad_request',
        'A value in the request cannot be stored; check strings and numbers for unusual content.',
      );
    } else if (isConnectionError(err)) {
      logger.warn({ err, request_id: res.locals.requestId }, 'database unavailable');
      problem = new AppError('unavailable', 'The database is not reachable right now; retry shortly.', {
        retryAfterSeconds: 1,
      });
    } else {
      logger.error({ err, request_id: res.locals.requestId, method: req.method, url: req.path }, 'unhandled error');
      res.status(500);
      const info = { type: PROBLEM_BASE + 'internal', title: 'Internal server error', status: 500 };
      res.type('application/problem+json').send(
        JSON.stringify({
          ...info,
          detail: 'An unexpected error occurred; it has been logged.',
          request_id: String(res.locals.requestId ?? ''),
        }),
      );
      return;
    }
    sendProblem(res, problem);
  };
}
