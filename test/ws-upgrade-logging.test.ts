import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api } from './helpers/app';
import { startLoggedInstance, waitFor, type LoggedInstance } from './helpers/logged-instance';
import { sample } from './helpers/metrics';

/** Opens a WebSocket; resolves with the handshake's status and X-Request-Id (and the socket when it opened). */
function upgrade(
  url: string,
  headers: Record<string, string>,
): Promise<{ status: number; requestId: string | undefined; body?: any; ws?: WebSocket }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false });
    ws.once('upgrade', (res) => {
      const requestId = res.headers['x-request-id'] as string | undefined;
      ws.once('open', () => resolve({ status: 101, requestId, ws }));
    });
    ws.once('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          requestId: res.headers['x-request-id'] as string | undefined,
          body: JSON.parse(text),
        }),
      );
    });
    ws.once('error', reject);
  });
}

describe('WebSocket upgrades in the request log and the HTTP metrics', () => {
  let s: LoggedInstance;
  let creds: ProjectCredentials;
  let capped: ProjectCredentials;
  let wsUrl: string;
  const open: WebSocket[] = [];
  before(async () => {
    s = await startLoggedInstance({ LOG_LEVEL: 'info', REALTIME_MAX_CONNECTIONS_PER_KEY: '1' });
    creds = await s.app.projects.createProject({ name: 'ws-logged' });
    capped = await s.app.projects.createProject({ name: 'ws-capped' });
    wsUrl = `${s.url.replace(/^http/, 'ws')}/v1/ws`;
  });
  after(async () => {
    for (const ws of open) ws.terminate();
    await s.stop();
  });

  const requestLines = (id: string) => s.lines().filter((l) => l.msg === 'request' && l.request_id === id);
  const lineOf = async (id: string) => {
    const [line] = await waitFor(() => (requestLines(id).length ? requestLines(id) : undefined), `line of ${id}`);
    assert.equal(requestLines(id).length, 1, `exactly one line for ${id}`);
    return line;
  };
  const scrape = async () => {
    const r = await fetch(`${s.url}/metrics`);
    assert.equal(r.status, 200);
    return r.text();
  };
  const count = (text: string, status: string, route = '/v1/ws') =>
    sample(text, 'progressdb_http_request_duration_seconds_count', { method: 'GET', route, status }) ?? 0;

  test('an accepted upgrade is one request line (101, route, project, duration) and one observation', async () => {
    const before = await scrape();
    const ok = await upgrade(wsUrl, { authorization: `Bearer ${creds.keys.secret}`, 'x-request-id': 'ws-log-0001' });
    assert.equal(ok.status, 101);
    open.push(ok.ws!);
    assert.equal(ok.requestId, 'ws-log-0001', 'the 101 carries the request id');
    const line = await lineOf('ws-log-0001');
    assert.equal(line.method, 'GET');
    assert.equal(line.route, '/v1/ws');
    assert.equal(line.status, 101);
    assert.equal(line.project_id, creds.project_id);
    assert.equal(typeof line.duration_ms, 'number');
    assert.equal(line.level, 30);
    assert.equal(line.aborted, undefined);
    assert.equal(count(await scrape(), '101') - count(before, '101'), 1);

    // Without a client id, the server mints one, and the log line and the response agree.
    const minted = await upgrade(wsUrl, { authorization: `Bearer ${capped.keys.secret}` });
    assert.equal(minted.status, 101);
    open.push(minted.ws!);
    assert.match(minted.requestId ?? '', /^[0-9a-f-]{36}$/);
    assert.equal((await lineOf(minted.requestId!)).route, '/v1/ws');
  });

  test('refused upgrades are logged and counted with their status, without keys or tokens', async () => {
    const before = await scrape();
    const secretToken = 'rt-not-a-real-token-4b7e19';
    const badKey = await upgrade(wsUrl, {
      authorization: 'Bearer sk_not_a_real_key_91c2',
      'x-request-id': 'ws-log-0002',
    });
    assert.equal(badKey.status, 401);
    assert.equal(badKey.requestId, 'ws-log-0002');
    assert.equal(badKey.body.request_id, 'ws-log-0002', 'the problem names the logged request id');
    const badToken = await upgrade(`${wsUrl}?token=${secretToken}`, { 'x-request-id': 'ws-log-0003' });
    assert.equal(badToken.status, 401);
    // The per-key live-connection cap (1): the capped project's key already holds a socket.
    const overCap = await upgrade(wsUrl, {
      authorization: `Bearer ${capped.keys.secret}`,
      'x-request-id': 'ws-log-0004',
    });
    assert.equal(overCap.status, 429);
    const elsewhere = await upgrade(wsUrl.replace('/v1/ws', '/v1/not-a-socket'), { 'x-request-id': 'ws-log-0005' });
    assert.equal(elsewhere.status, 404);

    const unauth = await lineOf('ws-log-0002');
    assert.deepEqual(
      [unauth.route, unauth.status, unauth.method, unauth.project_id],
      ['/v1/ws', 401, 'GET', undefined],
    );
    assert.equal(typeof unauth.duration_ms, 'number');
    const tokenLine = await lineOf('ws-log-0003');
    assert.deepEqual([tokenLine.route, tokenLine.status], ['/v1/ws', 401]);
    const limited = await lineOf('ws-log-0004');
    assert.deepEqual([limited.route, limited.status, limited.project_id], ['/v1/ws', 429, capped.project_id]);
    const unmatched = await lineOf('ws-log-0005');
    assert.deepEqual([unmatched.route, unmatched.status], ['unmatched', 404]);

    const after = await scrape();
    assert.equal(count(after, '401') - count(before, '401'), 2);
    assert.equal(count(after, '429') - count(before, '429'), 1);
    assert.equal(count(after, '404', 'unmatched') - count(before, '404', 'unmatched'), 1);
    assert.equal(
      (sample(after, 'progressdb_rate_limit_refusals_total', { class: 'read' }) ?? 0) -
        (sample(before, 'progressdb_rate_limit_refusals_total', { class: 'read' }) ?? 0),
      1,
      'the connection-cap refusal counts as a refusal of the upgrade (read) class',
    );
    assert.ok(!after.includes('not-a-socket'), 'no raw path in any label');

    const everything = s.raw.join('');
    for (const secret of [
      secretToken,
      'sk_not_a_real_key_91c2',
      creds.keys.secret,
      capped.keys.secret,
      creds.signing_secret,
      'token=',
    ])
      assert.ok(!everything.includes(secret), `log output contains ${secret.slice(0, 12)}…`);
  });

  test('a plain GET /v1/ws (no upgrade) is still an ordinary 426 request', async () => {
    const r = await api(s.url, 'GET', '/v1/ws', { key: creds.keys.secret, headers: { 'x-request-id': 'ws-log-0006' } });
    assert.equal(r.status, 426);
    const line = await lineOf('ws-log-0006');
    assert.deepEqual([line.route, line.status], ['/v1/ws', 426]);
  });
});
