import { OAuth2Server } from 'oauth2-mock-server';

export interface ProviderUser {
  sub: string;
  email?: string;
  name?: string;
  picture?: string;
}

/**
 * A real OAuth 2.0 / OIDC server on loopback (oauth2-mock-server). It approves every
 * authorization request at once; `signInAs` chooses who the next sign-in is, and
 * `failNextAuthorization` makes the next authorization redirect carry an error instead of a code.
 */
export async function startOAuthProvider() {
  const server = new OAuth2Server();
  await server.issuer.keys.generate('RS256');
  await server.start(0, '127.0.0.1');
  const issuer = server.issuer.url!;
  let user: ProviderUser = { sub: 'google-sub-default', email: 'default@example.com', name: 'Default Dev' };
  let nextError: { error: string; description: string } | null = null;
  let userinfoCalls = 0;

  server.service.on('beforeUserinfo', (response: { body: unknown; statusCode: number }) => {
    userinfoCalls++;
    response.body = { ...user, email_verified: true };
  });
  server.service.on('beforeAuthorizeRedirect', (redirect: { url: URL }) => {
    if (!nextError) return;
    redirect.url.searchParams.delete('code');
    redirect.url.searchParams.set('error', nextError.error);
    redirect.url.searchParams.set('error_description', nextError.description);
    nextError = null;
  });

  return {
    issuer,
    /** Overrides for startTestApp(env): the three endpoints and a client. */
    env: {
      GOOGLE_CLIENT_ID: 'progressdb-test-client',
      GOOGLE_CLIENT_SECRET: 'progressdb-test-secret',
      GOOGLE_AUTHORIZATION_URL: `${issuer}/authorize`,
      GOOGLE_TOKEN_URL: `${issuer}/token`,
      GOOGLE_USERINFO_URL: `${issuer}/userinfo`,
    },
    signInAs(u: ProviderUser) {
      user = u;
    },
    failNextAuthorization(error: string, description: string) {
      nextError = { error, description };
    },
    get userinfoCalls() {
      return userinfoCalls;
    },
    stop: () => server.stop(),
  };
}

/** name=value pairs from a response's Set-Cookie headers (an empty value means cleared). */
export function setCookies(res: Response): Record<string, string> {
  const out: Record<string, string> = {};
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const i = pair.indexOf('=');
    out[pair.slice(0, i).trim()] = decodeURIComponent(pair.slice(i + 1).trim());
  }
  return out;
}

export const cookieHeader = (cookies: Record<string, string>) =>
  Object.entries(cookies)
    .filter(([, v]) => v !== '')
    .map(([k, v]) => `${k}=${encodeURIComponent(v)}`)
    .join('; ');

/**
 * The whole redirect round trip a browser makes, with fetch: /auth/google → the provider's
 * /authorize → /auth/google/callback. Returns every response so tests can tamper with any step.
 */
export async function signInThroughProvider(
  appUrl: string,
  opts: { tamperState?: (state: string) => string | null } = {},
) {
  const start = await fetch(`${appUrl}/auth/google`, { redirect: 'manual' });
  const stateCookies = setCookies(start);
  const authorizeUrl = new URL(start.headers.get('location')!);
  const approve = await fetch(authorizeUrl, { redirect: 'manual' });
  const callbackUrl = new URL(approve.headers.get('location')!);
  if (opts.tamperState) {
    const s = opts.tamperState(callbackUrl.searchParams.get('state') ?? '');
    if (s === null) callbackUrl.searchParams.delete('state');
    else callbackUrl.searchParams.set('state', s);
  }
  const callback = await fetch(callbackUrl, { redirect: 'manual', headers: { cookie: cookieHeader(stateCookies) } });
  const cookies = setCookies(callback);
  return {
    start,
    authorizeUrl,
    approve,
    callbackUrl,
    callback,
    cookies,
    location: callback.headers.get('location') ?? '',
  };
}
