import type { Request, Response } from 'express';
import type { Logger } from '../logger';
import type { Metrics } from '../metrics';
import type { Guard } from './route';

// Probes and scrapes arrive every few seconds from every load balancer and Prometheus;
// at info level they would drown the requests that matter.
const QUIET_ROUTES = new Set(['/healthz', '/readyz', '/metrics']);

/** The route pattern that served the request (`/v1/threads/:thread_id`), never the raw URL. */
export function routeLabel(req: Request, res: Response): string {
  const path = (req.route as { path?: unknown } | undefined)?.path;
  if (typeof path === 'string') return (req.baseUrl ?? '') + path;
  if (res.locals.route) return String(res.locals.route);
  return res.statusCode === 404 ? 'unmatched' : 'other';
}

/**
 * A guard that runs first on every declared route: it remembers who called (project) and
 * the route's rate-limit class for the request log and metrics.
 */
export const requestContextGuard: Guard = (req, res, spec, principal) => {
  if (principal.type === 'api') res.locals.projectId = principal.projectId;
  // The limiter's rule: a route's declared class, else reads for GET/HEAD and writes otherwise.
  res.locals.rateClass = spec.rateClass ?? (req.method === 'GET' || req.method === 'HEAD' ? 'read' : 'write');
};

interface RequestLine {
  request_id: string | undefined;
  project_id: string | undefined;
  method: string;
  route: string;
  status: number;
  duration_ms: number;
  aborted?: boolean;
}

/** The request's log line, its duration observation (unless a stream's) and its rate-limit refusal count. */
function record(
  deps: { logger: Logger; metrics: Metrics },
  line: RequestLine,
  seconds: number,
  observe: boolean,
  rateClass: string,
) {
  const { route, status } = line;
  if (observe) deps.metrics.httpDuration.observe({ method: line.method, route, status: String(status) }, seconds);
  if (status === 429) deps.metrics.rateLimitRefusals.inc({ class: rateClass });
  if (status >= 500) deps.logger.warn(line, 'request');
  else if (QUIET_ROUTES.has(route)) deps.logger.debug(line, 'request');
  else deps.logger.info(line, 'request');
}

const STARTED = Symbol('request started');
const LOGGED = Symbol('request logged');
type Timed = Response & { [STARTED]?: bigint; [LOGGED]?: boolean };

/**
 * One JSON line per request, when it ends: request id, project, route pattern, method,
 * status, duration. Never headers, query strings or bodies (they carry keys and user data).
 * Also feeds the request-duration histogram and the rate-limit refusal counter. One listener
 * function for every request (the response is `this`), so a request allocates no closure.
 * Returns what starts the clock and the listeners, called once per request when it arrives.
 */
export function requestLog(deps: { logger: Logger; metrics: Metrics }): (res: Response) => void {
  // 'finish' (the last byte handed to the OS) comes before the client can see the
  // response, so a scrape right after it counts it; 'close' alone catches aborted ones.
  function done(this: Timed) {
    logEnd(this);
  }
  function logEnd(res: Timed) {
    if (res[LOGGED]) return;
    res[LOGGED] = true;
    const req = res.req;
    const seconds = Number(process.hrtime.bigint() - res[STARTED]!) / 1e9;
    const stream = String(res.getHeader('content-type') ?? '').startsWith('text/event-stream');
    record(
      deps,
      {
        request_id: res.locals.requestId as string | undefined,
        project_id: res.locals.projectId as string | undefined,
        method: req.method,
        route: routeLabel(req, res),
        status: res.statusCode,
        duration_ms: Math.round(seconds * 1e6) / 1e3,
        ...(res.writableFinished ? {} : { aborted: true }),
      },
      seconds,
      !stream,
      res.statusCode === 429
        ? String(res.locals.rateClass ?? (req.originalUrl.startsWith('/auth') ? 'auth' : 'unknown'))
        : '',
    );
  }
  return (res) => {
    (res as Timed)[STARTED] = process.hrtime.bigint();
    // on, not once: `done` logs at most once anyway (LOGGED), and once() wraps it in a new
    // bound function per event per request.
    res.on('finish', done);
    res.on('close', done);
  };
}

/** What a WebSocket upgrade ended in: 101, or the status of the refusal written on the socket. */
export interface UpgradeOutcome {
  requestId: string;
  projectId?: string;
  method: string;
  /** The endpoint (`/v1/ws`), or `unmatched` for an upgrade to a path nobody serves. */
  route: string;
  status: number;
  /** process.hrtime.bigint() when the upgrade request arrived. */
  startedAt: bigint;
  /** The rate-limit class a 429 was refused from (`auth` for credentials, else the upgrade's `read`). */
  rateClass?: string;
  /** The client went away before it was answered. */
  aborted?: boolean;
}

/**
 * The request log and metrics of WebSocket upgrades, which express never sees: one line and one
 * duration observation per attempt (until the 101 or the refusal was written), as for a request.
 */
export function upgradeLog(deps: { logger: Logger; metrics: Metrics }) {
  return (u: UpgradeOutcome) => {
    const seconds = Number(process.hrtime.bigint() - u.startedAt) / 1e9;
    record(
      deps,
      {
        request_id: u.requestId,
        project_id: u.projectId,
        method: u.method,
        route: u.route,
        status: u.status,
        duration_ms: Math.round(seconds * 1e6) / 1e3,
        ...(u.aborted ? { aborted: true } : {}),
      },
      seconds,
      true,
      u.rateClass ?? 'unknown',
    );
  };
}

export type UpgradeLog = ReturnType<typeof upgradeLog>;
