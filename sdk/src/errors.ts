import type { Schemas } from './generated/openapi';

export type Problem = Schemas['Problem'];

/**
 * An error answer from the service (RFC 9457 problem+json), or a failure to get one.
 * `status` is 0 when no response arrived (network error, timeout, aborted connection).
 */
export class ProgressDBError extends Error {
  override readonly name: string = 'ProgressDBError';
  /** HTTP status; 0 when the request never got an answer. */
  readonly status: number;
  /** The problem type (a URI, or `about:blank`); `network_error` when there was no answer. */
  readonly type: string;
  readonly title: string;
  readonly detail: string;
  /** The server's X-Request-Id for this answer: quote it when reporting a problem. */
  readonly requestId: string | undefined;
  /** Field errors of a validation problem. */
  readonly errors: ReadonlyArray<{ path: string; message: string }>;
  /** Seconds the server asked us to wait (429, 503), from Retry-After. */
  readonly retryAfter: number | undefined;

  constructor(init: {
    status: number;
    type?: string;
    title?: string;
    detail: string;
    requestId?: string;
    errors?: ReadonlyArray<{ path: string; message: string }>;
    retryAfter?: number;
    cause?: unknown;
  }) {
    super(init.detail, init.cause === undefined ? undefined : { cause: init.cause });
    this.status = init.status;
    this.type = init.type ?? 'about:blank';
    this.title = init.title ?? init.detail;
    this.detail = init.detail;
    this.requestId = init.requestId;
    this.errors = init.errors ?? [];
    this.retryAfter = init.retryAfter;
  }
}

/** No answer arrived: the connection failed, was cut, or the attempt timed out. */
export class NetworkError extends ProgressDBError {
  override readonly name: string = 'NetworkError';
  constructor(detail: string, cause?: unknown) {
    super({ status: 0, type: 'network_error', title: 'Network error', detail, cause });
  }
}

/** A live tail or socket request refused by the server (an `error` frame, or a closed stream). */
export class RealtimeError extends ProgressDBError {
  override readonly name: string = 'RealtimeError';
  /** The frame's code: forbidden, not_found, rate_limited, unavailable, … */
  readonly code: string;
  constructor(code: string, detail: string, status = 0, retryAfter?: number) {
    super({ status, type: code, title: code, detail, retryAfter });
    this.code = code;
  }
}

/** Parses Retry-After (delta-seconds or an HTTP date) into seconds. */
export function parseRetryAfter(value: string | null): number | undefined {
  if (!value) return undefined;
  if (/^\d+(\.\d+)?$/.test(value.trim())) return Number(value);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, (at - Date.now()) / 1000);
}

export async function errorFromResponse(res: Response): Promise<ProgressDBError> {
  const text = await res.text().catch(() => '');
  let problem: Partial<Problem> = {};
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === 'object') problem = parsed;
  } catch {
    /* not JSON: keep the text as the detail */
  }
  return new ProgressDBError({
    status: res.status,
    type: problem.type,
    title: problem.title,
    detail: problem.detail ?? (text.slice(0, 500) || `HTTP ${res.status}`),
    requestId: problem.request_id ?? res.headers.get('x-request-id') ?? undefined,
    errors: problem.errors,
    retryAfter: parseRetryAfter(res.headers.get('retry-after')),
  });
}
