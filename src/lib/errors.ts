/**
 * Domain errors. They carry no HTTP status: the error middleware maps each kind to one.
 */
export type ErrorKind =
  | 'bad_request'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'conflict'
  | 'unprocessable'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'not_acceptable'
  | 'rate_limited'
  | 'upgrade_required'
  | 'gone'
  | 'precondition_failed'
  | 'unavailable'
  | 'integrity';

export interface FieldError {
  path: string;
  message: string;
}

export class AppError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    readonly extra: {
      errors?: FieldError[];
      retryAfterSeconds?: number;
      type?: string;
      /** Extension members of the problem document (RFC 9457 §3.2). */
      fields?: Record<string, unknown>;
    } = {},
  ) {
    super(message);
    this.name = 'AppError';
  }
}

export const badRequest = (detail: string, errors?: FieldError[]) => new AppError('bad_request', detail, { errors });
export const unauthorized = (detail: string) => new AppError('unauthorized', detail);
export const forbidden = (detail: string) => new AppError('forbidden', detail);
export const notFound = (what: string) => new AppError('not_found', `${what} was not found`);
export const conflict = (detail: string) => new AppError('conflict', detail);
export const unprocessable = (detail: string, errors?: FieldError[]) =>
  new AppError('unprocessable', detail, { errors });
export const unavailable = (detail: string, retryAfterSeconds = 1) =>
  new AppError('unavailable', detail, { retryAfterSeconds });
export const rateLimited = (detail: string, retryAfterSeconds: number) =>
  new AppError('rate_limited', detail, { retryAfterSeconds, type: 'quota-exceeded' });

/** Stored data failed its integrity check (an altered or moved ciphertext): never returned. */
export const integrityFailure = (detail: string) => new AppError('integrity', detail);

/** Events below a thread's retention horizon were requested: they no longer exist. */
export const purgedBelowHorizon = (threadId: string, purgedThroughSeq: number) =>
  new AppError(
    'gone',
    `Events of thread "${threadId}" up to seq ${purgedThroughSeq} were removed by retention; the retained log starts at seq ${purgedThroughSeq + 1}. Reload the thread's state (GET …/messages) and resume with after_seq=${purgedThroughSeq}.`,
    { type: 'purged', fields: { purged_through_seq: purgedThroughSeq, first_retained_seq: purgedThroughSeq + 1 } },
  );

/** A conditional request (If-Match) named a state the resource is no longer in. */
export const preconditionFailed = (detail: string, fields?: Record<string, unknown>) =>
  new AppError('precondition_failed', detail, { fields });

export const isAppError = (e: unknown): e is AppError => e instanceof AppError;
