import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import express from 'express';
import { ConfigError, loadConfig } from '../src/config';
import { errorMiddleware } from '../src/lib/http/problem';
import { createLogger } from '../src/lib/logger';
import { createMetrics, createMetricsRouter } from '../src/lib/metrics';
import { api, startInstance, startTestApp, type TestContext } from './helpers/app';
import { startOAuthProvider } from './helpers/oauth-provider';

describe('small hardening items', () => {
  let t: TestContext;
  let provider: Awaited<ReturnType<typeof startOAuthProvider>>;
  before(async () => {
    provider = await startOAuthProvider();
    t = await startTestApp(provider.env);
  });
  after(async () => {
    await t.stop();
    await provider.stop();
  });

  test('Authorization and X-API-Key naming different keys is a 400, not the first one silently', async () => {
    const a = await t.project('a');
    const b = await t.project('b');
    const both = await api(t.url, 'GET', '/v1/threads', {
      key: a.keys.secret,
      headers: { 'x-api-key': b.keys.secret },
    });
    assert.equal(both.status, 400, both.text);
    assert.match(both.headers.get('content-type') ?? '', /application\/problem\+json/);
    assert.match(both.body.detail, /different keys/);
    const same = await api(t.url, 'GET', '/v1/threads', {
      key: a.keys.secret,
      headers: { 'x-api-key': a.keys.secret },
    });
    assert.equal(same.status, 200, 'the same key in both headers is fine');
  });

  test('GET /v1/ws without an upgrade is a 426 problem, declared in the OpenAPI document', async () => {
    const r = await api(t.url, 'GET', '/v1/ws');
    assert.equal(r.status, 426, r.text);
    assert.match(r.headers.get('content-type') ?? '', /application\/problem\+json/);
    assert.equal(r.headers.get('upgrade'), 'websocket');
    assert.equal(r.body.type, 'https://progressdb.dev/problems/upgrade-required');
    const doc = (await api(t.url, 'GET', '/openapi.json')).body;
    assert.ok(doc.paths['/v1/ws']?.get?.responses?.['426'], 'GET /v1/ws 426 is in the OpenAPI document');
  });

  test('TRUST_PROXY takes true/false, hop counts and CIDR lists as express does; nonsense is a ConfigError', () => {
    assert.equal(loadConfig({ TRUST_PROXY: 'true' }).TRUST_PROXY, true);
    assert.equal(loadConfig({ TRUST_PROXY: 'FALSE' }).TRUST_PROXY, false);
    assert.equal(loadConfig({ TRUST_PROXY: '2' }).TRUST_PROXY, 2);
    assert.deepEqual(loadConfig({ TRUST_PROXY: 'loopback, 10.0.0.0/8,172.18.0.5,fd00::/8' }).TRUST_PROXY, [
      'loopback',
      '10.0.0.0/8',
      '172.18.0.5',
      'fd00::/8',
    ]);
    assert.deepEqual(loadConfig({ TRUST_PROXY: '10.0.0.0/255.0.0.0' }).TRUST_PROXY, ['10.0.0.0/255.0.0.0']);
    assert.deepEqual(loadConfig({}).TRUST_PROXY, ['loopback']);
    for (const bad of ['yes-please', '10.0.0.0/99', '300.1.1.1', ',']) {
      assert.throws(
        () => loadConfig({ TRUST_PROXY: bad }),
        (e: unknown) => e instanceof ConfigError && /TRUST_PROXY/.test(e.message),
        bad,
      );
    }
  });

  test('the app starts with every TRUST_PROXY form, and the forms decide the client address', async () => {
    for (const [value, expectedIp] of [
      ['true', '198.51.100.1'],
      ['1', '198.51.100.2'],
      ['127.0.0.1/8,10.0.0.0/8', '198.51.100.2'],
      ['false', '127.0.0.1'],
    ] as const) {
      const inst = await startInstance(t.databaseUrl, { TRUST_PROXY: value, RATE_LIMIT_IP: '1' });
      try {
        // The per-IP limit (1) counts per client address: two different forwarded chains tell which hop was used.
        const r = await fetch(`${inst.url}/v1/ws`, { headers: { 'x-forwarded-for': '198.51.100.1, 198.51.100.2' } });
        assert.equal(r.status, 426, `${value}: ${await r.text()}`);
        const again = await fetch(`${inst.url}/v1/ws`, {
          headers: { 'x-forwarded-for': '198.51.100.1, 198.51.100.2' },
        });
        assert.equal(again.status, 429, `${value}: the second request from the same client is limited`);
        const ip = String(
          (await t.db('rate_limit_leases').where('bucket', `ip:read:${expectedIp}`).first('bucket'))?.bucket ?? '',
        );
        assert.equal(ip, `ip:read:${expectedIp}`, `${value}: counted as ${expectedIp}`);
        await t.db('rate_limit_leases').where('bucket', 'like', 'ip:%').delete();
      } finally {
        await inst.close();
      }
    }
  });

  test('without METRICS_TOKEN, /metrics answers loopback clients only in development', async () => {
    const local = await fetch(`${t.url}/metrics`);
    assert.equal(local.status, 200);
    const forwarded = await fetch(`${t.url}/metrics`, { headers: { 'x-forwarded-for': '203.0.113.9' } });
    assert.equal(forwarded.status, 403, 'a client behind the trusted loopback proxy is not loopback');
    assert.match(forwarded.headers.get('content-type') ?? '', /application\/problem\+json/);
  });

  test('in production, /metrics needs METRICS_TOKEN: refused without one configured, open with the token', async () => {
    const serve = async (token: string | undefined) => {
      const app = express();
      app.use(createMetricsRouter(createMetrics(), token, { production: true }));
      app.use(errorMiddleware(createLogger('silent')));
      const server = app.listen(0, '127.0.0.1');
      await new Promise<void>((r) => server.once('listening', () => r()));
      return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
    };
    const open = await serve(undefined);
    try {
      const r = await fetch(`${open.url}/metrics`);
      assert.equal(r.status, 403, 'no token configured in production: refused even on loopback');
      assert.match(((await r.json()) as { detail: string }).detail, /METRICS_TOKEN/);
    } finally {
      open.server.close();
    }
    const token = 'a-metrics-token-of-32-characters';
    const guarded = await serve(token);
    try {
      assert.equal((await fetch(`${guarded.url}/metrics`)).status, 401);
      const ok = await fetch(`${guarded.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(ok.status, 200);
    } finally {
      guarded.server.close();
    }
  });

  test('the sign-in page never shows text from the URL: only a fixed code reaches the console', async () => {
    const evil = 'Your account is locked. Call +1-555-0100 to unlock it';
    const cb = await fetch(
      `${t.url}/auth/google/callback?error=access_denied&error_description=${encodeURIComponent(evil)}`,
      { redirect: 'manual' },
    );
    assert.equal(cb.status, 303);
    const loc = new URL(cb.headers.get('location') ?? '', t.url);
    assert.equal(loc.searchParams.get('signin_error'), 'access_denied');
    assert.doesNotMatch(decodeURIComponent(loc.search), /locked|555/, 'the description is not carried');
    const forged = await fetch(`${t.url}/auth/google/callback?error=${encodeURIComponent(evil)}`, {
      redirect: 'manual',
    });
    assert.doesNotMatch(decodeURIComponent(forged.headers.get('location') ?? ''), /locked|555/);
    const script = await (await fetch(`${t.url}/console/assets/console.js`)).text();
    assert.doesNotMatch(script, /signin_detail/, 'the page does not read free text from its URL');
    assert.match(script, /SIGNIN_MESSAGES\[err\]/);
  });
});
