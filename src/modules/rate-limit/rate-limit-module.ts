import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { Knex } from 'knex';
import type { Config } from '../../config';
import { rateLimited, unprocessable } from '../../lib/errors';
import type { Guard, Principal, RateClass } from '../../lib/http/route';
import type { Logger } from '../../lib/logger';
import { fromSettings, type ProjectSettings } from '../projects/project-settings';
import type { ClientIp } from '../../lib/http/client-ip';
import { createRateLimitStore } from './rate-limit-store';
import { createRateLimiter, type Decision, type Policy } from './rate-limiter';

type RateLimitConfig = Pick<
  Config,
  | 'RATE_LIMIT_ENABLED'
  | 'RATE_LIMIT_WINDOW_SECONDS'
  | 'RATE_LIMIT_READ'
  | 'RATE_LIMIT_WRITE'
  | 'RATE_LIMIT_AUTH'
  | 'RATE_LIMIT_IP'
  | 'RATE_LIMIT_AUTH_FAILURES'
  | 'RATE_LIMIT_MAX_READ'
  | 'RATE_LIMIT_MAX_WRITE'
  | 'RATE_LIMIT_MAX_AUTH'
  | 'RATE_LIMIT_KEY_FACTOR'
>;

/**
 * The operator's ceiling on a project's own limit of one class, scaled to the project's window:
 * `ceiling` units per RATE_LIMIT_WINDOW_SECONDS is `ceiling × window / default window` per window.
 */
export function ceilingFor(
  config: Pick<
    Config,
    'RATE_LIMIT_WINDOW_SECONDS' | 'RATE_LIMIT_MAX_READ' | 'RATE_LIMIT_MAX_WRITE' | 'RATE_LIMIT_MAX_AUTH'
  >,
  cls: RateClass,
  windowSeconds: number,
): number {
  const perDefault = {
    read: config.RATE_LIMIT_MAX_READ,
    write: config.RATE_LIMIT_MAX_WRITE,
    auth: config.RATE_LIMIT_MAX_AUTH,
  }[cls];
  return Math.max(1, Math.floor((perDefault * windowSeconds) / config.RATE_LIMIT_WINDOW_SECONDS));
}

/** Refuses (422) project rate limits above the operator's ceilings, saying the ceiling. */
export function assertWithinCeilings(
  config: Parameters<typeof ceilingFor>[0],
  settings: ProjectSettings | undefined,
): void {
  for (const cls of ['read', 'write', 'auth'] as const) {
    const own = settings?.rate_limits?.[cls];
    if (!own) continue;
    const max = ceilingFor(config, cls, own.window_seconds);
    if (own.limit > max)
      throw unprocessable(
        `rate_limits.${cls}: ${own.limit} per ${own.window_seconds} s is above this server's ceiling of ${max} per ${own.window_seconds} s (${ceilingFor(config, cls, config.RATE_LIMIT_WINDOW_SECONDS)} per ${config.RATE_LIMIT_WINDOW_SECONDS} s, set by the operator).`,
        [{ path: `settings.rate_limits.${cls}.limit`, message: `at most ${max}` }],
      );
  }
}

/** Units a request spends: a batch costs one per message (POST …/messages/batch). */
const weightOf = (req: Request) => {
  const messages = (req.body as { messages?: unknown } | undefined)?.messages;
  return Array.isArray(messages) && req.path.endsWith('/messages/batch') ? Math.max(1, messages.length) : 1;
};

/** IETF draft-ietf-httpapi-ratelimit-headers syntax: `"write";q=600;w=60` and `"write";r=12;t=7`. */
export function setRateLimitHeaders(res: Response, policy: Policy, d: Decision) {
  res.setHeader('RateLimit-Policy', `"${policy.name}";q=${policy.limit};w=${Math.ceil(policy.windowMs / 1000)}`);
  res.setHeader('RateLimit', `"${policy.name}";r=${d.remaining};t=${d.resetSeconds}`);
}

const classOf = (method: string, declared: RateClass | undefined): RateClass =>
  declared ?? (method === 'get' || method === 'GET' || method === 'HEAD' ? 'read' : 'write');

/** Set once a request has been counted, so a route behind perIp() is not counted twice. */
const COUNTED = 'rateLimitCounted';

/** Probes are never limited: a load balancer must always be able to ask. */
const UNLIMITED_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

const settingsOf = fromSettings((s) => s);

/**
 * Per project + key + end user + action class for API keys (limits from the project's
 * `rate_limits`, else the service defaults); per client IP for anonymous callers; per
 * developer for console sessions.
 */
export function createRateLimitModule(deps: { db: Knex; logger: Logger; config: RateLimitConfig; clientIp: ClientIp }) {
  const { config } = deps;
  const limiter = createRateLimiter({ db: deps.db, store: createRateLimitStore(), logger: deps.logger });
  const windowMs = config.RATE_LIMIT_WINDOW_SECONDS * 1000;
  const defaults: Record<RateClass, number> = {
    read: config.RATE_LIMIT_READ,
    write: config.RATE_LIMIT_WRITE,
    auth: config.RATE_LIMIT_AUTH,
  };

  function policyFor(cls: RateClass, settings?: ProjectSettings): Policy {
    const own = settings?.rate_limits?.[cls];
    // A project's own limit is clamped to the ceiling also when enforced (stored before a lowered ceiling).
    return own
      ? {
          name: cls,
          limit: Math.min(own.limit, ceilingFor(config, cls, own.window_seconds)),
          windowMs: own.window_seconds * 1000,
        }
      : { name: cls, limit: defaults[cls], windowMs };
  }

  async function enforce(res: Response | null, projectId: string, bucket: string, policy: Policy, units = 1) {
    if (res) res.locals[COUNTED] = true;
    // A batch weighs one unit per message, but at most a whole window: one bigger than the
    // limit still passes once the window is empty, instead of never.
    const weight = Math.min(units, policy.limit);
    let d = await limiter.consume(projectId, bucket, policy);
    for (let i = 1; i < weight && d.allowed; i++) d = await limiter.consume(projectId, bucket, policy);
    if (res) setRateLimitHeaders(res, policy, d);
    if (!d.allowed) {
      throw rateLimited(
        `The "${policy.name}" limit of ${policy.limit} requests per ${Math.ceil(policy.windowMs / 1000)} s is used up; retry after ${d.retryAfterSeconds} s.`,
        d.retryAfterSeconds,
      );
    }
  }

  const ipPolicy = (cls: RateClass): Policy => ({ name: cls, limit: config.RATE_LIMIT_IP, windowMs });
  const clientIp = (req: Request) => deps.clientIp(req) ?? 'unknown';

  async function limit(res: Response | null, principal: Principal, cls: RateClass, ip: string, units = 1) {
    if (principal.type === 'api') {
      const policy = policyFor(cls, settingsOf(principal.settings));
      if (principal.userId !== null) {
        // A key acting as many users: every user's requests also count against the key's total.
        const total = { ...policy, limit: policy.limit * config.RATE_LIMIT_KEY_FACTOR };
        await enforce(null, principal.projectId, `${cls}:${principal.keyId}:*`, total, units);
      }
      await enforce(res, principal.projectId, `${cls}:${principal.keyId}:${principal.userId ?? ''}`, policy, units);
    } else if (principal.type === 'developer') {
      await enforce(res, '', `dev:${cls}:${principal.developerId}`, policyFor(cls));
    } else {
      await enforce(res, '', `ip:${cls}:${ip}`, ipPolicy(cls));
    }
  }

  // Not async: with nothing to limit it returns no promise, so the route factory does not wait for one.
  const guard: Guard = (req, res, spec, principal: Principal) => {
    if (!config.RATE_LIMIT_ENABLED || UNLIMITED_PATHS.has(spec.path) || res.locals[COUNTED]) return;
    return limit(res, principal, classOf(spec.method, spec.rateClass), clientIp(req), weightOf(req));
  };

  return {
    guard,
    /** Per-client-IP limit for routes outside the route factory (sign-in under /auth). */
    perIp(cls: RateClass): RequestHandler {
      return (req: Request, res: Response, next: NextFunction) => {
        if (!config.RATE_LIMIT_ENABLED) return next();
        enforce(res, '', `ip:${cls}:${clientIp(req)}`, ipPolicy(cls)).then(() => next(), next);
      };
    },
    /**
     * The same limit for callers outside the route factory (e.g. a WebSocket upgrade, which has
     * no response to carry headers): resolves when admitted, throws rateLimited() when not.
     */
    async admit(principal: Principal, cls: RateClass, ip: string, units = 1): Promise<void> {
      if (config.RATE_LIMIT_ENABLED) await limit(null, principal, cls, ip, units);
    },
    /**
     * Counts one failed authentication (unknown key, bad signature, bad or expired token) against
     * the client IP's `auth` bucket; once RATE_LIMIT_AUTH_FAILURES are used up in the window, the
     * failure is answered 429 with Retry-After instead of 401. A refused bucket is answered from
     * memory, so a guessing client costs no database round trip per attempt.
     */
    async authFailed(ip: string | undefined): Promise<void> {
      if (!config.RATE_LIMIT_ENABLED) return;
      const policy: Policy = { name: 'auth', limit: config.RATE_LIMIT_AUTH_FAILURES, windowMs };
      const d = await limiter.consume('', `authfail:${ip ?? 'unknown'}`, policy);
      if (!d.allowed)
        throw rateLimited(
          `Too many failed authentications from this address (${policy.limit} per ${config.RATE_LIMIT_WINDOW_SECONDS} s); retry after ${d.retryAfterSeconds} s.`,
          d.retryAfterSeconds,
        );
    },
    invalidate: (projectId?: string) => limiter.invalidate(projectId),
    close: () => limiter.close(),
  };
}

export type RateLimitModule = ReturnType<typeof createRateLimitModule>;
