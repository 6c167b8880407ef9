import { Router, type NextFunction, type Request, type Response } from 'express';
import { Passport } from 'passport';
import { z } from '../../lib/zod';
import { forbidden } from '../../lib/errors';
import type { RouteFactory } from '../../lib/http/route';
import type { Logger } from '../../lib/logger';
import type { DevelopersService, SignInProfile } from '../developers/developers-service';
import { callbackUrlFor, createGoogleStrategy, googleConfigured, type GoogleConfig } from './google-strategy';
import { clearSessionCookies, setSessionCookies } from './session-cookies';
import { sessionFrom, sessionOf } from './developer-authenticator';
import type { SessionClaims, SessionTokens } from './session-tokens';

/** The sign-in failures the console has a message for (console.js, SIGNIN_MESSAGES). */
const SIGNIN_CODES = new Set([
  'not_configured',
  'access_denied',
  'signin_failed',
  'provider_error',
  'token_error',
  'provider_unreachable',
  'state_mismatch',
]);

interface FailureInfo {
  message?: string;
  code?: string;
}

/** passport-oauth2's errors carry the provider's `error` code; anything else is a transport failure. */
function describeError(err: unknown): { code: string; detail: string } {
  const e = err as { name?: string; code?: string; message?: string };
  if (e?.name === 'AuthorizationError')
    return {
      code: 'provider_error',
      detail: `The sign-in provider returned an error (${e.code ?? 'unknown'}): ${e.message || 'no description'}`,
    };
  if (e?.name === 'TokenError')
    return {
      code: 'token_error',
      detail: `The sign-in provider refused the authorization code (${e.code ?? 'unknown'}). Start again.`,
    };
  return {
    code: 'provider_unreachable',
    detail: 'Could not complete sign-in with the provider (token or profile request failed). Try again.',
  };
}

/**
 * GET /auth/google → provider → GET /auth/google/callback; POST /auth/logout; POST /auth/token;
 * GET /auth/providers. Sign-in failures never surface as 5xx: they return to the console with
 * a message it shows.
 */
export function createAuthRouter(deps: {
  routes: RouteFactory;
  config: GoogleConfig;
  sessions: SessionTokens;
  developers: Pick<DevelopersService, 'signIn' | 'startSession' | 'endSession'>;
  logger: Logger;
}) {
  const { sessions, logger } = deps;
  const router = Router();
  const enabled = googleConfigured(deps.config);
  const passport = new Passport();
  if (enabled) passport.use('google', createGoogleStrategy(deps.config, sessions));

  // Only a fixed code travels to the page, which shows its own text for it: the provider's
  // error_description (and anything else in the callback URL) is attacker-written text, and a
  // link that made the sign-in page display it would be a phishing vector on our origin.
  const backToConsole = (res: Response, code: string, detail: string) => {
    logger.info({ code, detail: detail.slice(0, 300) }, 'sign-in returned to the console with an error');
    const known = SIGNIN_CODES.has(code) ? code : 'signin_failed';
    res.redirect(303, `/console?${new URLSearchParams({ signin_error: known })}`);
  };
  const notConfigured = (res: Response) =>
    backToConsole(
      res,
      'not_configured',
      'Google sign-in is not configured on this server (GOOGLE_CLIENT_ID / GOOGLE_CLIENT_SECRET).',
    );

  router.get('/auth/google', (req: Request, res: Response, next: NextFunction) => {
    if (!enabled) return notConfigured(res);
    passport.authenticate('google', { session: false, callbackURL: callbackUrlFor(deps.config, req) } as object)(
      req,
      res,
      next,
    );
  });

  router.get('/auth/google/callback', (req: Request, res: Response, next: NextFunction) => {
    if (!enabled) return notConfigured(res);
    const done = async (err: unknown, profile: SignInProfile | false | undefined, info: FailureInfo | undefined) => {
      try {
        if (err) {
          const { code, detail } = describeError(err);
          logger.warn({ code, error: (err as Error).name }, 'sign-in failed');
          return backToConsole(res, code, detail);
        }
        if (!profile) {
          const code = info?.code ?? (req.query.error ? 'access_denied' : 'signin_failed');
          const detail =
            code === 'access_denied'
              ? `Sign-in was cancelled at the provider${info?.message ? `: ${info.message}` : '.'}`
              : (info?.message ?? 'Sign-in failed.');
          return backToConsole(res, code, detail);
        }
        const { developer, created } = await deps.developers.signIn(profile);
        logger.info({ developer_id: developer.id, created }, 'developer signed in');
        const sid = await deps.developers.startSession(developer.id, sessions.sessionEnd());
        setSessionCookies(req, res, sessions.issue(developer.id, { sid }));
        res.redirect(303, '/console');
      } catch (e) {
        next(e);
      }
    };
    passport.authenticate('google', { session: false, callbackURL: callbackUrlFor(deps.config, req) } as object, done)(
      req,
      res,
      next,
    );
  });

  // Ends the session on every replica (its tokens stop working) and clears the cookies. Refused
  // cross-site so a page elsewhere cannot sign a developer out.
  router.post('/auth/logout', async (req: Request, res: Response, next: NextFunction) => {
    try {
      const found = sessionFrom(req);
      const origin = req.get('origin');
      if (found?.viaCookie && origin && origin !== `${req.protocol}://${req.get('host') ?? ''}`) {
        return next(forbidden('Cross-site request refused (Origin does not match this server).'));
      }
      let claims: SessionClaims | null = null;
      try {
        claims = found ? sessions.verify(found.token) : null;
      } catch {
        // An expired or invalid token has nothing left to end.
      }
      if (claims) await deps.developers.endSession(claims.sub, claims.jti);
      clearSessionCookies(req, res);
      res.status(204).end();
    } catch (e) {
      next(e);
    }
  });

  deps.routes.route(
    router,
    {
      method: 'get',
      path: '/auth/providers',
      operationId: 'listAuthProviders',
      summary: 'Which sign-in providers this server has configured',
      tags: ['Console'],
      auth: 'none',
      responses: {
        200: {
          description: 'Providers',
          schema: z.object({ google: z.object({ configured: z.boolean(), url: z.string() }) }),
        },
      },
    },
    async () => ({ body: { google: { configured: enabled, url: '/auth/google' } } }),
  );

  deps.routes.route(
    router,
    {
      method: 'post',
      path: '/auth/token',
      operationId: 'createSessionToken',
      summary: 'A fresh session token for scripts (send as Authorization: Bearer)',
      description: 'Also how a script refreshes its token before it expires.',
      tags: ['Console'],
      auth: 'developer',
      responses: {
        200: {
          description: 'A session JWT',
          schema: z
            .object({ token: z.string(), token_type: z.literal('Bearer'), expires_at: z.string() })
            .openapi('SessionToken'),
        },
      },
    },
    async ({ principal }) => {
      // Same session (signing out ends it too), fresh expiry.
      const current = sessionOf(principal)!;
      const s = sessions.issue(principal.developerId, {
        sid: current.jti,
        csrf: current.csrf,
        auth_time: current.auth_time,
      });
      return {
        body: { token: s.token, token_type: 'Bearer' as const, expires_at: s.expiresAt.toISOString() },
        headers: { 'Cache-Control': 'no-store' },
      };
    },
  );

  return router;
}
