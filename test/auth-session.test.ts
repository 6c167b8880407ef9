import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import jwt from 'jsonwebtoken';
import { api, startTestApp, type TestContext } from './helpers/app';
import { cookieHeader, setCookies, signInThroughProvider, startOAuthProvider } from './helpers/oauth-provider';

const SECRET = 'test-session-secret-0123456789-abcdefghijkl';

describe('console sessions (JWT)', () => {
  let provider: Awaited<ReturnType<typeof startOAuthProvider>>;
  let t: TestContext;
  let cookies: Record<string, string>;
  let developerId: string;
  let sessionId: string;
  const sign = (claims: Record<string, unknown>, opts: jwt.SignOptions = {}, secret = SECRET) =>
    jwt.sign({ csrf: 'c', auth_time: Math.floor(Date.now() / 1000), ...claims }, secret, {
      algorithm: 'HS256',
      issuer: 'progressdb',
      audience: 'progressdb-console',
      subject: developerId,
      jwtid: sessionId,
      ...('exp' in claims ? {} : { expiresIn: 600 }),
      ...opts,
    });
  const me = (token: string) => api(t.url, 'GET', '/v1/me', { headers: { authorization: `Bearer ${token}` } });

  before(async () => {
    provider = await startOAuthProvider();
    t = await startTestApp({ ...provider.env, SESSION_SECRET: SECRET, SESSION_TTL_SECONDS: '600' });
    provider.signInAs({ sub: 'g-session', email: 'grace@example.com', name: 'Grace Hopper' });
    cookies = (await signInThroughProvider(t.url)).cookies;
    ({ sub: developerId, jti: sessionId } = jwt.decode(cookies.pdb_session, { json: true }) as {
      sub: string;
      jti: string;
    });
  });
  after(async () => {
    await t.stop();
    await provider.stop();
  });

  test('the session cookie is an HS256 JWT with issuer, audience and a short expiry, also accepted as a Bearer token', async () => {
    const decoded = jwt.decode(cookies.pdb_session, { complete: true })!;
    const payload = decoded.payload as jwt.JwtPayload;
    assert.equal(decoded.header.alg, 'HS256');
    assert.deepEqual([payload.iss, payload.aud], ['progressdb', 'progressdb-console']);
    assert.equal(payload.exp! - payload.iat!, 600);
    const r = await me(cookies.pdb_session);
    assert.equal(r.status, 200);
    assert.equal(r.body.email, 'grace@example.com');
  });

  test('tampered, alg none, expired, wrong audience, wrong issuer or foreign-key tokens get 401', async () => {
    const good = sign({});
    assert.equal((await me(good)).status, 200, 'the forging helper makes valid tokens');
    const [h, p, s] = good.split('.');
    const flipped = s[0] === 'A' ? 'B' + s.slice(1) : 'A' + s.slice(1);
    const elevated = Buffer.from(
      JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), sub: 'dev_someoneelse' }),
    ).toString('base64url');
    const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${p}.`;
    const cases: Record<string, string> = {
      'tampered signature': `${h}.${p}.${flipped}`,
      'tampered payload': `${h}.${elevated}.${s}`,
      'alg none': none,
      expired: sign({}, { expiresIn: -60 }),
      'wrong audience': sign({}, { audience: 'someone-else' }),
      'wrong issuer': sign({}, { issuer: 'evil' }),
      'another key': sign({}, {}, 'another-secret-another-secret-another-secret'),
      HS512: sign({}, { algorithm: 'HS512' }),
      garbage: 'not.a.jwt',
    };
    for (const [name, token] of Object.entries(cases)) {
      const r = await me(token);
      assert.equal(r.status, 401, `${name}: ${r.text}`);
      assert.match(r.headers.get('content-type') ?? '', /application\/problem\+json/);
    }
    const viaCookie = await api(t.url, 'GET', '/v1/me', { headers: { cookie: `pdb_session=${cases.expired}` } });
    assert.equal(viaCookie.status, 401);
    assert.match(viaCookie.body.detail, /expired/);
  });

  test('a token for a developer or session that does not exist gets 401; an API key is refused with a hint', async () => {
    assert.equal((await me(sign({}, { subject: 'dev_nobody' }))).status, 401);
    assert.equal((await me(sign({}, { jwtid: 'ses_forged' }))).status, 401);
    const noJti = jwt.sign({ csrf: 'c', auth_time: Math.floor(Date.now() / 1000) }, SECRET, {
      algorithm: 'HS256',
      issuer: 'progressdb',
      audience: 'progressdb-console',
      subject: developerId,
      expiresIn: 600,
    });
    assert.equal((await me(noJti)).status, 401);
    const sk = (await t.project()).keys.secret;
    const r = await me(sk);
    assert.equal(r.status, 401);
    assert.match(r.body.detail, /console session, not an API key/);
  });

  test('cookie-authenticated changes need the CSRF token and a same-origin Origin; Bearer calls do not', async () => {
    const cookie = cookieHeader(cookies);
    const create = (headers: Record<string, string>) =>
      api(t.url, 'POST', '/v1/projects', { body: { name: 'csrf probe' }, headers });
    assert.equal((await create({ cookie })).status, 403, 'no token');
    assert.equal((await create({ cookie, 'x-csrf-token': 'wrong' })).status, 403, 'wrong token');
    assert.equal(
      (await create({ cookie, 'x-csrf-token': cookies.pdb_csrf, origin: 'https://evil.example' })).status,
      403,
      'cross-site origin',
    );
    assert.equal((await create({ cookie, 'x-csrf-token': cookies.pdb_csrf, origin: t.url })).status, 201);
    assert.equal(
      (await create({ cookie, 'x-csrf-token': cookies.pdb_csrf })).status,
      201,
      'no Origin (same-origin navigation) is fine',
    );
    assert.equal(
      (await create({ authorization: `Bearer ${cookies.pdb_session}` })).status,
      201,
      'Bearer needs no CSRF token',
    );
    assert.equal((await api(t.url, 'GET', '/v1/projects', { headers: { cookie } })).status, 200, 'reads need none');
    const { rows } = await t.db.raw(
      `select count(*)::int as n from projects where owner_id = ? and name = 'csrf probe'`,
      [developerId],
    );
    assert.equal(rows[0].n, 3);
  });

  test('a session past half its life is re-issued on use (sliding), a fresh one is not', async () => {
    const now = Math.floor(Date.now() / 1000);
    const old = sign({ csrf: 'keep-me', iat: now - 400, auth_time: now - 400, exp: now + 200 });
    const r = await fetch(`${t.url}/v1/me`, { headers: { cookie: `pdb_session=${old}` } });
    assert.equal(r.status, 200);
    const renewed = setCookies(r);
    assert.ok(renewed.pdb_session && renewed.pdb_session !== old);
    const claims = jwt.verify(renewed.pdb_session, SECRET, { algorithms: ['HS256'] }) as jwt.JwtPayload;
    assert.ok(claims.exp! - now >= 590, 'extended to a full TTL');
    assert.equal(claims.csrf, 'keep-me', 'the CSRF token stays the same across refreshes');
    assert.equal(claims.auth_time, now - 400);

    const fresh = await fetch(`${t.url}/v1/me`, { headers: { cookie: `pdb_session=${sign({})}` } });
    assert.equal(setCookies(fresh).pdb_session, undefined);

    const tooOld = sign({ iat: now - 400, auth_time: now - 8 * 86400, exp: now + 200 });
    const capped = await fetch(`${t.url}/v1/me`, { headers: { cookie: `pdb_session=${tooOld}` } });
    assert.equal(capped.status, 200);
    assert.equal(setCookies(capped).pdb_session, undefined, 'no refresh beyond the maximum session age');
  });

  test('POST /auth/token gives scripts a Bearer token; POST /auth/logout ends the session everywhere and clears the cookies', async () => {
    const token = await api(t.url, 'POST', '/auth/token', {
      headers: { cookie: cookieHeader(cookies), 'x-csrf-token': cookies.pdb_csrf },
    });
    assert.equal(token.status, 200, token.text);
    assert.equal((await me(token.body.token)).body.id, developerId);
    const other = (await signInThroughProvider(t.url)).cookies; // the same developer in another browser
    const crossSite = await fetch(`${t.url}/auth/logout`, {
      method: 'POST',
      headers: { cookie: cookieHeader(cookies), origin: 'https://evil.example' },
    });
    assert.equal(crossSite.status, 403);
    assert.equal((await me(cookies.pdb_session)).status, 200, 'a refused sign-out ends nothing');

    const out = await fetch(`${t.url}/auth/logout`, { method: 'POST', headers: { cookie: cookieHeader(cookies) } });
    assert.equal(out.status, 204);
    const cleared = out.headers.getSetCookie();
    assert.ok(
      cleared.some((c) => /^pdb_session=;.*Expires=Thu, 01 Jan 1970/i.test(c)),
      cleared.join('\n'),
    );
    assert.ok(cleared.some((c) => /^pdb_csrf=;/.test(c)));
    // A copy of the token (kept by a script, or stolen) stops working at once, as does the session's script token.
    assert.equal((await me(cookies.pdb_session)).status, 401);
    assert.match((await me(cookies.pdb_session)).body.detail, /session has ended/);
    assert.equal((await me(token.body.token)).status, 401);
    assert.equal((await me(other.pdb_session)).status, 200, 'other sessions are unaffected');
    assert.equal(
      (await fetch(`${t.url}/auth/logout`, { method: 'POST' })).status,
      204,
      'signing out without a session is harmless',
    );
  });
});
