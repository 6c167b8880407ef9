import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { seedDevProject } from '../src/modules/projects/dev-project';
import { api, startTestApp, type TestContext } from './helpers/app';
import { openWs } from './realtime-clients';

/** A GET over plain HTTP with any Host header (fetch does not let a caller set Host). */
function plainGet(url: string, host: string): Promise<{ status: number; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { host } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on('error', reject);
  });
}

describe('works out of the box in a browser', () => {
  let ctx: TestContext;
  let dirs: string[] = [];
  const dataDir = () => {
    const d = mkdtempSync(path.join(tmpdir(), 'pdb-dev-'));
    dirs.push(d);
    return d;
  };

  before(async () => {
    ctx = await startTestApp();
  });
  after(async () => {
    await ctx?.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    dirs = [];
  });

  /** GET /v1/threads with the publishable key as a signed user, from a page at `origin`. */
  async function fromPage(creds: ProjectCredentials, origin: string) {
    const sig = await api(ctx.url, 'POST', '/v1/_sign', { key: creds.keys.secret, body: { user_id: 'dev' } });
    return api(ctx.url, 'GET', '/v1/threads', {
      key: creds.keys.publishable,
      user: 'dev',
      signature: sig.body.signature,
      headers: { origin },
    });
  }

  test('the dev project’s publishable key accepts pages on localhost at any port, and nothing else', async () => {
    const creds = await seedDevProject(ctx.app.projects, dataDir(), { production: false });
    assert.ok(creds);
    for (const origin of [
      'http://localhost:5173',
      'http://localhost:3000',
      'http://127.0.0.1:8080',
      'http://localhost',
    ]) {
      const r = await fromPage(creds, origin);
      assert.equal(r.status, 200, `${origin}: ${r.text}`);
    }
    for (const origin of [
      'https://localhost:5173',
      'http://localhost.evil.example:5173',
      'http://evil.example:5173',
      'null',
    ]) {
      const r = await fromPage(creds, origin);
      assert.equal(r.status, 403, `${origin} must be refused: ${r.text}`);
    }

    // The WebSocket upgrade applies the same origin rule.
    const sig = await api(ctx.url, 'POST', '/v1/_sign', { key: creds.keys.secret, body: { user_id: 'dev' } });
    const headers = {
      authorization: `Bearer ${creds.keys.publishable}`,
      'x-user-id': 'dev',
      'x-user-signature': sig.body.signature,
    };
    const ws = await openWs(`${ctx.url.replace(/^http/, 'ws')}/v1/ws`, { ...headers, origin: 'http://localhost:5173' });
    ws.close();
    await assert.rejects(
      openWs(`${ctx.url.replace(/^http/, 'ws')}/v1/ws`, { ...headers, origin: 'http://evil.example:5173' }),
      (e: { status?: number }) => e.status === 403,
    );
  });

  test('in production the dev project allows no browser origin', async () => {
    const creds = await seedDevProject(ctx.app.projects, dataDir(), { production: true });
    assert.ok(creds);
    const r = await fromPage(creds, 'http://localhost:5173');
    assert.equal(r.status, 403, r.text);
  });

  test('a port wildcard is a project setting like any origin: stored, enforced for its host only', async () => {
    const creds = await ctx.app.projects.createProject({
      name: 'wildcard',
      settings: { allowed_origins: ['http://chat.lan:*', 'https://app.example.com'] },
    });
    assert.equal((await fromPage(creds, 'http://chat.lan:8081')).status, 200);
    assert.equal((await fromPage(creds, 'https://app.example.com')).status, 200);
    assert.equal((await fromPage(creds, 'https://app.example.com:8443')).status, 403, 'no wildcard, no other port');
    assert.equal((await fromPage(creds, 'https://chat.lan:8081')).status, 403, 'the scheme is part of the rule');
  });

  test('/docs is served over plain HTTP on any host without upgrade-insecure-requests or HSTS', async () => {
    for (const p of ['/docs', '/docs/init.js', '/docs/assets/swagger-ui.css']) {
      const r = await plainGet(ctx.url + p, 'chat.lan:8080');
      assert.equal(r.status, 200, p);
      const csp = String(r.headers['content-security-policy'] ?? '');
      assert.match(csp, /default-src 'self'/, `${p} keeps a CSP`);
      assert.doesNotMatch(csp, /upgrade-insecure-requests/, p);
      assert.equal(r.headers['strict-transport-security'], undefined, p);
    }
    // The rest of the service keeps helmet's defaults.
    const api = await plainGet(ctx.url + '/healthz', 'chat.lan:8080');
    assert.match(String(api.headers['content-security-policy']), /upgrade-insecure-requests/);
    assert.ok(api.headers['strict-transport-security']);
  });
});
