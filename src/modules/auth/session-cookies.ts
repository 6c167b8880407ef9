import type { Request, Response } from 'express';
import { CSRF_COOKIE, SESSION_COOKIE, type SessionTokens } from './session-tokens';

// Secure whenever the request arrived over TLS (directly or via a trusted proxy).
const base = (req: Request) => ({ sameSite: 'lax' as const, secure: req.secure, path: '/' });

/** Sets the session cookie (HttpOnly) and its CSRF companion (readable by the console's script). */
export function setSessionCookies(req: Request, res: Response, session: ReturnType<SessionTokens['issue']>) {
  res.cookie(SESSION_COOKIE, session.token, { ...base(req), httpOnly: true, expires: session.expiresAt });
  res.cookie(CSRF_COOKIE, session.csrf, { ...base(req), httpOnly: false, expires: session.expiresAt });
}

export function clearSessionCookies(req: Request, res: Response) {
  res.clearCookie(SESSION_COOKIE, { ...base(req), httpOnly: true });
  res.clearCookie(CSRF_COOKIE, { ...base(req), httpOnly: false });
}
