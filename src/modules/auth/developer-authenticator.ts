import type { Request, Response } from 'express';
import { forbidden, unauthorized } from '../../lib/errors';
import { bearerToken } from '../../lib/http/credentials';
import type { DeveloperPrincipal } from '../../lib/http/route';
import type { DevelopersService } from '../developers/developers-service';
import { setSessionCookies } from './session-cookies';
import { CSRF_HEADER, SESSION_COOKIE, safeEqual, type SessionClaims, type SessionTokens } from './session-tokens';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The session token and where it came from: Authorization: Bearer (scripts) or the cookie (console). */
export function sessionFrom(req: Request): { token: string; viaCookie: boolean } | null {
  const token = bearerToken(req.get('authorization'));
  if (token) return { token, viaCookie: false };
  const cookie = (req.cookies as Record<string, unknown> | undefined)?.[SESSION_COOKIE];
  return typeof cookie === 'string' && cookie ? { token: cookie, viaCookie: true } : null;
}

function ownOrigin(req: Request, publicUrl: string | undefined): string[] {
  const origins = [`${req.protocol}://${req.get('host') ?? ''}`];
  if (publicUrl) origins.push(new URL(publicUrl).origin);
  return origins;
}

/**
 * A browser sends the cookie on any request to us, including ones another site triggers, so a
 * cookie-authenticated change must prove it came from the console: the request's Origin (when
 * sent) is ours, and X-CSRF-Token repeats the token bound into the session JWT. Bearer tokens
 * are never sent by the browser on its own and need neither.
 */
function assertSameSiteIntent(req: Request, claims: SessionClaims, publicUrl: string | undefined) {
  const origin = req.get('origin');
  if (origin && !ownOrigin(req, publicUrl).includes(origin))
    throw forbidden('Cross-site request refused (Origin does not match this server).');
  const given = req.get(CSRF_HEADER) ?? '';
  if (!given || !safeEqual(given, claims.csrf))
    throw forbidden('Missing or wrong X-CSRF-Token header: send the value of the pdb_csrf cookie.');
}

// The verified session behind each principal this authenticator returned (for POST /auth/token).
const sessionOfPrincipal = new WeakMap<DeveloperPrincipal, SessionClaims>();
export const sessionOf = (principal: DeveloperPrincipal) => sessionOfPrincipal.get(principal);

/** The route factory's 'developer' mode: a valid token of a live session of an existing developer. */
export function createDeveloperAuthenticator(deps: {
  sessions: SessionTokens;
  developers: Pick<DevelopersService, 'getBySession'>;
  publicUrl?: string;
}) {
  return async (req: Request, res: Response): Promise<DeveloperPrincipal> => {
    const found = sessionFrom(req);
    if (!found)
      throw unauthorized('Sign in to the console (GET /auth/google), or send "Authorization: Bearer <session token>".');
    if (!found.viaCookie && /^(sk|pk|ak)_/.test(found.token)) {
      throw unauthorized(
        'This route needs a console session, not an API key: sign in to the console, or use POST /auth/token for a session token.',
      );
    }
    const claims = deps.sessions.verify(found.token);
    if (found.viaCookie && !SAFE_METHODS.has(req.method)) assertSameSiteIntent(req, claims, deps.publicUrl);
    const developer = await deps.developers.getBySession(claims.sub, claims.jti);
    if (!developer) throw unauthorized('This session has ended (signed out); sign in again.');
    if (found.viaCookie && deps.sessions.shouldRefresh(claims)) {
      setSessionCookies(
        req,
        res,
        deps.sessions.issue(developer.id, { sid: claims.jti, csrf: claims.csrf, auth_time: claims.auth_time }),
      );
    }
    const principal: DeveloperPrincipal = { type: 'developer', developerId: developer.id };
    sessionOfPrincipal.set(principal, claims);
    return principal;
  };
}
