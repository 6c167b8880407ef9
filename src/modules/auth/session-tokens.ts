import { randomBytes, timingSafeEqual } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { unauthorized } from '../../lib/errors';

export const SESSION_COOKIE = 'pdb_session';
/** Readable by the console's script, which echoes it in X-CSRF-Token (double submit, bound to the session). */
export const CSRF_COOKIE = 'pdb_csrf';
export const CSRF_HEADER = 'x-csrf-token';

const ISSUER = 'progressdb';
const SESSION_AUDIENCE = 'progressdb-console';
const STATE_AUDIENCE = 'progressdb-oauth-state';
// Pinned: a token naming any other algorithm (none, RS256 with our secret as a "public key" …) is refused.
const ALGORITHM = 'HS256' as const;

export interface SessionClaims {
  sub: string;
  /** The developer_sessions row this token belongs to; signing out revokes it. */
  jti: string;
  csrf: string;
  /** When the developer signed in with the provider; sliding refresh never extends past a maximum age. */
  auth_time: number;
  iat: number;
  exp: number;
}

export interface OAuthStateClaims {
  nonce: string;
  verifier: string;
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

/**
 * Signs and checks the console's session JWTs and the short-lived OAuth state cookie. The
 * secret is resolved at start (see session-secret.ts), hence the getter.
 */
export function createSessionTokens(deps: { secret: () => string; ttlSeconds: number; maxAgeSeconds: number }) {
  const { ttlSeconds, maxAgeSeconds } = deps;

  function verifyJwt(token: string, audience: string): jwt.JwtPayload {
    try {
      const payload = jwt.verify(token, deps.secret(), {
        algorithms: [ALGORITHM],
        issuer: ISSUER,
        audience,
        clockTolerance: 5,
      });
      if (typeof payload === 'string') throw new Error('unexpected string payload');
      return payload;
    } catch (e) {
      if (e instanceof jwt.TokenExpiredError) throw unauthorized('The session has expired; sign in again.');
      throw unauthorized('The session token is not valid; sign in again.');
    }
  }

  return {
    ttlSeconds,
    /** When a session started now must end, however often it is refreshed. */
    sessionEnd: (authTime = nowSeconds()) => new Date((authTime + maxAgeSeconds) * 1000),

    /** A token for a session; a refresh carries the session's csrf and auth_time over. */
    issue(developerId: string, session: { sid: string; csrf?: string; auth_time?: number }) {
      const csrf = session.csrf ?? randomBytes(24).toString('base64url');
      const authTime = session.auth_time ?? nowSeconds();
      const token = jwt.sign({ csrf, auth_time: authTime }, deps.secret(), {
        algorithm: ALGORITHM,
        issuer: ISSUER,
        audience: SESSION_AUDIENCE,
        subject: developerId,
        jwtid: session.sid,
        expiresIn: Math.max(1, Math.min(ttlSeconds, authTime + maxAgeSeconds - nowSeconds())),
      });
      const { exp } = jwt.decode(token) as { exp: number };
      return { token, csrf, expiresAt: new Date(exp * 1000) };
    },

    verify(token: string): SessionClaims {
      const p = verifyJwt(token, SESSION_AUDIENCE);
      if (
        typeof p.sub !== 'string' ||
        typeof p.jti !== 'string' ||
        typeof p.csrf !== 'string' ||
        typeof p.auth_time !== 'number' ||
        typeof p.exp !== 'number' ||
        typeof p.iat !== 'number'
      ) {
        throw unauthorized('The session token is not valid; sign in again.');
      }
      return { sub: p.sub, jti: p.jti, csrf: p.csrf, auth_time: p.auth_time, iat: p.iat, exp: p.exp };
    },

    /** Past half its life, a session in use is re-issued, up to maxAgeSeconds after sign-in. */
    shouldRefresh(claims: SessionClaims): boolean {
      const now = nowSeconds();
      return claims.exp - now < ttlSeconds / 2 && now - claims.auth_time < maxAgeSeconds;
    },

    signState(state: OAuthStateClaims): string {
      return jwt.sign(state, deps.secret(), {
        algorithm: ALGORITHM,
        issuer: ISSUER,
        audience: STATE_AUDIENCE,
        expiresIn: 600,
      });
    },

    verifyState(token: string): OAuthStateClaims | null {
      try {
        const p = verifyJwt(token, STATE_AUDIENCE);
        return typeof p.nonce === 'string' && typeof p.verifier === 'string'
          ? { nonce: p.nonce, verifier: p.verifier }
          : null;
      } catch {
        return null;
      }
    },
  };
}

export type SessionTokens = ReturnType<typeof createSessionTokens>;

/** Constant-time string equality (lengths may differ). */
export function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  const same = x.length === y.length;
  return timingSafeEqual(same ? x : y, y) && same;
}
