import { randomBytes } from 'node:crypto';
import type { Request } from 'express';
import { Strategy as GoogleStrategy, type Profile } from 'passport-google-oauth20';
import type { Config } from '../../config';
import type { SignInProfile } from '../developers/developers-service';
import { safeEqual, type SessionTokens } from './session-tokens';

export const OAUTH_STATE_COOKIE = 'pdb_oauth_state';
const STATE_COOKIE_PATH = '/auth/google';

export type GoogleConfig = Pick<
  Config,
  | 'GOOGLE_CLIENT_ID'
  | 'GOOGLE_CLIENT_SECRET'
  | 'GOOGLE_CALLBACK_URL'
  | 'GOOGLE_AUTHORIZATION_URL'
  | 'GOOGLE_TOKEN_URL'
  | 'GOOGLE_USERINFO_URL'
  | 'PUBLIC_URL'
>;

export const googleConfigured = (c: GoogleConfig) => Boolean(c.GOOGLE_CLIENT_ID && c.GOOGLE_CLIENT_SECRET);

type StoreCallback = (err: Error | null, state?: string) => void;
type VerifyCallback = (err: Error | null, ok: string | false, info?: { message: string; code: string }) => void;

/**
 * passport-oauth2's state store, without server-side sessions: the state nonce and the PKCE
 * verifier travel in a signed, HttpOnly, SameSite=Lax cookie scoped to /auth/google, which the
 * browser sends back on the provider's top-level redirect to the callback. The callback
 * accepts only the state this browser was given; the cookie is single-use.
 */
export class CookieStateStore {
  constructor(private readonly sessions: SessionTokens) {}

  // Arity 5 tells passport-oauth2 that this store keeps the PKCE verifier.
  store(req: Request, verifier: string, _state: unknown, _meta: unknown, callback: StoreCallback): void {
    const nonce = randomBytes(24).toString('base64url');
    req.res!.cookie(OAUTH_STATE_COOKIE, this.sessions.signState({ nonce, verifier }), {
      httpOnly: true,
      sameSite: 'lax',
      secure: req.secure,
      path: STATE_COOKIE_PATH,
      maxAge: 600_000,
    });
    callback(null, nonce);
  }

  verify(req: Request, providedState: unknown, callback: VerifyCallback): void {
    const cookie = (req.cookies as Record<string, unknown> | undefined)?.[OAUTH_STATE_COOKIE];
    req.res!.clearCookie(OAUTH_STATE_COOKIE, {
      httpOnly: true,
      sameSite: 'lax',
      secure: req.secure,
      path: STATE_COOKIE_PATH,
    });
    const stored = typeof cookie === 'string' ? this.sessions.verifyState(cookie) : null;
    if (!stored || typeof providedState !== 'string' || !safeEqual(stored.nonce, providedState)) {
      callback(null, false, {
        message: 'The sign-in request could not be verified (state mismatch or expired). Start again.',
        code: 'state_mismatch',
      });
      return;
    }
    callback(null, stored.verifier);
  }
}

/**
 * The redirect URI sent to the provider: GOOGLE_CALLBACK_URL, else PUBLIC_URL's, else this
 * request's own origin (express's req.protocol honours TRUST_PROXY, so a TLS proxy gives https).
 */
export function callbackUrlFor(config: GoogleConfig, req: Request): string {
  if (config.GOOGLE_CALLBACK_URL) return config.GOOGLE_CALLBACK_URL;
  return new URL(
    '/auth/google/callback',
    config.PUBLIC_URL ?? `${req.protocol}://${req.get('host') ?? 'localhost'}`,
  ).toString();
}

/** Google by default; any OAuth 2.0 / OIDC provider when the three URLs are configured. */
export function createGoogleStrategy(config: GoogleConfig, sessions: SessionTokens) {
  return new GoogleStrategy(
    {
      clientID: config.GOOGLE_CLIENT_ID!,
      clientSecret: config.GOOGLE_CLIENT_SECRET!,
      // Given per request (callbackUrlFor) to both legs, which must agree.
      authorizationURL: config.GOOGLE_AUTHORIZATION_URL,
      tokenURL: config.GOOGLE_TOKEN_URL,
      userProfileURL: config.GOOGLE_USERINFO_URL,
      scope: ['openid', 'email', 'profile'],
      // passport-oauth2 options missing from the Google typings.
      ...({ store: new CookieStateStore(sessions), pkce: true, state: true } as object),
    },
    (
      _accessToken: string,
      _refreshToken: string,
      profile: Profile,
      done: (err: Error | null, user?: SignInProfile | false) => void,
    ) => {
      if (!profile.id) return done(null, false);
      done(null, {
        sub: String(profile.id),
        email: profile.emails?.[0]?.value ?? null,
        name: profile.displayName ?? null,
        avatarUrl: profile.photos?.[0]?.value ?? null,
      });
    },
  );
}
