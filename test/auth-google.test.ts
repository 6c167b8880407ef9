import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { api, startInstance, startTestApp, type TestContext } from './helpers/app';
import { cookieHeader, setCookies, signInThroughProvider, startOAuthProvider } from './helpers/oauth-provider';

describe('sign in with Google (against a real local OAuth 2.0 server)', () => {
  let provider: Awaited<ReturnType<typeof startOAuthProvider>>;
  let t: TestContext;
  before(async () => {
    provider = await startOAuthProvider();
    t = await startTestApp(provider.env);
  });
  after(async () => {
    await t.stop();
    await provider.stop();
  });

  test('a full redirect round trip creates the developer and signs them in; a later sign-in finds the same developer', async () => {
    provider.signInAs({
      sub: 'g-1001',
      email: 'ada@example.com',
      name: 'Ada Lovelace',
      picture: 'https://example.com/ada.png',
    });
    const first = await signInThroughProvider(t.url);

    assert.equal(first.start.status, 302);
    assert.equal(first.authorizeUrl.origin + first.authorizeUrl.pathname, `${provider.issuer}/authorize`);
    assert.equal(first.authorizeUrl.searchParams.get('client_id'), provider.env.GOOGLE_CLIENT_ID);
    assert.equal(first.authorizeUrl.searchParams.get('redirect_uri'), `${t.url}/auth/google/callback`);
    assert.equal(first.authorizeUrl.searchParams.get('code_challenge_method'), 'S256');
    assert.ok((first.authorizeUrl.searchParams.get('state') ?? '').length >= 32, 'a random state is sent');
    assert.match(first.start.headers.getSetCookie().join('\n'), /pdb_oauth_state=.*HttpOnly.*SameSite=Lax/i);

    assert.equal(first.callback.status, 303);
    assert.equal(first.location, '/console');
    const sessionCookie = first.callback.headers.getSetCookie().find((c) => c.startsWith('pdb_session='))!;
    assert.match(sessionCookie, /HttpOnly/i);
    assert.match(sessionCookie, /SameSite=Lax/i);
    assert.doesNotMatch(sessionCookie, /Secure/i, 'plain-HTTP loopback: not Secure');
    assert.ok(first.cookies.pdb_csrf, 'the CSRF companion cookie is set');

    const me = await api(t.url, 'GET', '/v1/me', { headers: { cookie: cookieHeader(first.cookies) } });
    assert.equal(me.status, 200, me.text);
    assert.deepEqual(
      [me.body.email, me.body.name, me.body.avatar_url],
      ['ada@example.com', 'Ada Lovelace', 'https://example.com/ada.png'],
    );
    const rows = await t.db('developers').select('*').where({ google_sub: 'g-1001' });
    assert.equal(rows.length, 1);
    assert.equal(rows[0].id, me.body.id);

    provider.signInAs({ sub: 'g-1001', email: 'ada@example.com', name: 'Ada King' });
    const second = await signInThroughProvider(t.url);
    assert.equal(second.callback.status, 303);
    const me2 = await api(t.url, 'GET', '/v1/me', { headers: { cookie: cookieHeader(second.cookies) } });
    assert.equal(me2.body.id, me.body.id, 'same developer');
    assert.equal(me2.body.name, 'Ada King', 'profile refreshed');
    assert.equal(me2.body.avatar_url, 'https://example.com/ada.png', 'absent fields are kept');
    assert.equal((await t.db('developers').where({ google_sub: 'g-1001' }).count('* as n'))[0].n, 1);
  });

  test('refuses a callback whose state is wrong, missing, or from another browser', async () => {
    provider.signInAs({ sub: 'g-2002', email: 'mallory@example.com', name: 'Mallory' });
    const calls = provider.userinfoCalls;
    for (const tamper of [(s: string) => s.slice(0, -2) + 'xx', () => null, () => 'not-the-state']) {
      const r = await signInThroughProvider(t.url, { tamperState: tamper });
      assert.equal(r.callback.status, 303);
      assert.match(r.location, /^\/console\?signin_error=state_mismatch/);
      assert.equal(r.cookies.pdb_session, undefined, 'no session is set');
    }
    // A callback carrying a genuine code and state, but without the browser's state cookie
    // (an attacker's link opened in the victim's browser) is refused too.
    const start = await fetch(`${t.url}/auth/google`, { redirect: 'manual' });
    const approve = await fetch(start.headers.get('location')!, { redirect: 'manual' });
    const callback = await fetch(approve.headers.get('location')!, { redirect: 'manual' });
    assert.match(callback.headers.get('location') ?? '', /signin_error=state_mismatch/);
    assert.equal(setCookies(callback).pdb_session, undefined);
    assert.equal(provider.userinfoCalls, calls, 'no token exchange happened');
    assert.equal((await t.db('developers').where({ google_sub: 'g-2002' }).count('* as n'))[0].n, 0);
  });

  test('an error from the provider is shown in the console, not a 500', async () => {
    provider.failNextAuthorization('server_error', 'The provider is having a bad day');
    const r = await signInThroughProvider(t.url);
    assert.equal(r.callback.status, 303);
    const loc = new URL(r.location, t.url);
    assert.equal(loc.pathname, '/console');
    assert.equal(loc.searchParams.get('signin_error'), 'provider_error');
    assert.equal(loc.searchParams.get('signin_detail'), null, "the provider's text is not passed to the page");
    assert.equal(r.cookies.pdb_session, undefined);

    provider.failNextAuthorization('access_denied', 'The user said no');
    const denied = await signInThroughProvider(t.url);
    assert.equal(new URL(denied.location, t.url).searchParams.get('signin_error'), 'access_denied');

    const page = await fetch(new URL(r.location, t.url));
    assert.equal(page.status, 200);
    assert.match(await page.text(), /Sign in to ProgressDB/);
  });

  test('a token endpoint that fails is reported as a sign-in error, not a 500', async () => {
    const broken = await startInstance(t.databaseUrl, {
      ...provider.env,
      GOOGLE_TOKEN_URL: 'http://127.0.0.1:9/token',
    });
    try {
      const r = await signInThroughProvider(broken.url);
      assert.equal(r.callback.status, 303);
      assert.equal(new URL(r.location, broken.url).searchParams.get('signin_error'), 'provider_unreachable');
    } finally {
      await broken.close();
    }
  });

  test('behind a TLS-terminating proxy the redirect URI is https and the cookies are Secure', async () => {
    provider.signInAs({ sub: 'g-3003', email: 'tls@example.com', name: 'Behind Proxy' });
    const forwarded = { 'x-forwarded-proto': 'https' };
    const start = await fetch(`${t.url}/auth/google`, { redirect: 'manual', headers: forwarded });
    const redirectUri = new URL(start.headers.get('location')!).searchParams.get('redirect_uri')!;
    assert.equal(redirectUri, `${t.url.replace('http:', 'https:')}/auth/google/callback`);
    assert.match(start.headers.getSetCookie().join('\n'), /pdb_oauth_state=.*Secure/i);
    const approve = await fetch(start.headers.get('location')!, { redirect: 'manual' });
    // The proxy would forward the provider's https redirect to us as plain HTTP.
    const callbackUrl = new URL(approve.headers.get('location')!);
    callbackUrl.protocol = 'http:';
    const callback = await fetch(callbackUrl, {
      redirect: 'manual',
      headers: { ...forwarded, cookie: cookieHeader(setCookies(start)) },
    });
    assert.equal(callback.status, 303);
    const session = callback.headers.getSetCookie().find((c) => c.startsWith('pdb_session='));
    assert.ok(session, callback.headers.get('location') ?? '');
    assert.match(session, /;\s*Secure/i);
  });

  test('without SESSION_SECRET outside tests, replicas share one generated signing key through the database', async () => {
    const r1 = await startInstance(t.databaseUrl, { ...provider.env, NODE_ENV: 'development' });
    const r2 = await startInstance(t.databaseUrl, { ...provider.env, NODE_ENV: 'development' });
    try {
      provider.signInAs({ sub: 'g-4004', email: 'replicas@example.com', name: 'Two Replicas' });
      const { cookies } = await signInThroughProvider(r1.url);
      const onOther = await api(r2.url, 'GET', '/v1/me', { headers: { cookie: cookieHeader(cookies) } });
      assert.equal(onOther.status, 200, onOther.text);
      assert.equal(onOther.body.email, 'replicas@example.com');
      const { rows } = await t.db.raw(`select count(*)::int as n from server_secrets where name = 'session_secret'`);
      assert.equal(rows[0].n, 1);
      // The test-mode instance signs with its own per-process key and does not accept it.
      assert.equal((await api(t.url, 'GET', '/v1/me', { headers: { cookie: cookieHeader(cookies) } })).status, 401);
    } finally {
      await r1.close();
      await r2.close();
    }
  });

  test('without Google configured, the console says so and /auth/google explains instead of failing', async () => {
    const plain = await startInstance(t.databaseUrl, {});
    try {
      const providers = await api(plain.url, 'GET', '/auth/providers');
      assert.deepEqual(providers.body.google.configured, false);
      const r = await fetch(`${plain.url}/auth/google`, { redirect: 'manual' });
      assert.equal(r.status, 303);
      assert.match(r.headers.get('location') ?? '', /signin_error=not_configured/);
      const me = await api(plain.url, 'GET', '/v1/me');
      assert.equal(me.status, 401);
      assert.equal(me.headers.get('content-type'), 'application/problem+json; charset=utf-8');
    } finally {
      await plain.close();
    }
    assert.equal((await api(t.url, 'GET', '/auth/providers')).body.google.configured, true);
  });
});
