import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { createLogger } from '../src/lib/logger';
import { createMetrics } from '../src/lib/metrics';
import { attachQueryTelemetry } from '../src/lib/query-telemetry';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api } from './helpers/app';
import { startLoggedInstance, waitFor, type LogLine, type LoggedInstance } from './helpers/logged-instance';

describe('structured logs', () => {
  let s: LoggedInstance;
  let creds: ProjectCredentials;
  before(async () => {
    // Every statement counts as slow and every slow one is logged: the harshest setting for leaks.
    s = await startLoggedInstance({ LOG_LEVEL: 'debug', SLOW_QUERY_MS: '0', SLOW_QUERY_SAMPLE_RATE: '1' });
    creds = await s.app.projects.createProject({ name: 'logged' });
  });
  after(() => s.stop());

  test('writes one JSON line per request with request id, project, route pattern, status and duration', async () => {
    const r = await api(s.url, 'POST', '/v1/threads/log-thread-1/messages', {
      key: creds.keys.secret,
      user: 'alice',
      body: { id: 'm1', body: { text: 'hi' } },
      headers: { 'x-request-id': 'req-log-0001' },
    });
    assert.equal(r.status, 201);
    const missing = await api(s.url, 'GET', '/v1/threads/log-thread-1/messages/nope', {
      key: creds.keys.secret,
      headers: { 'x-request-id': 'req-log-0002' },
    });
    assert.equal(missing.status, 404);
    const bad = await api(s.url, 'GET', '/v1/threads/x/messages', {
      key: 'sk_not_a_real_key',
      headers: { 'x-request-id': 'req-log-0003' },
    });
    assert.equal(bad.status, 401);

    const find = (id: string) => s.lines().filter((l) => l.msg === 'request' && l.request_id === id);
    const [created] = await waitFor(
      () => (find('req-log-0001').length ? find('req-log-0001') : undefined),
      'request line',
    );
    assert.equal(find('req-log-0001').length, 1, 'exactly one line per request');
    assert.equal(created.project_id, creds.project_id);
    assert.equal(created.route, '/v1/threads/:thread_id/messages');
    assert.equal(created.method, 'POST');
    assert.equal(created.status, 201);
    assert.equal(typeof created.duration_ms, 'number');
    assert.equal(created.level, 30);

    const [notFound] = await waitFor(
      () => (find('req-log-0002').length ? find('req-log-0002') : undefined),
      '404 line',
    );
    assert.equal(notFound.route, '/v1/threads/:thread_id/messages/:message_id');
    assert.equal(notFound.status, 404);
    const [unauth] = await waitFor(() => (find('req-log-0003').length ? find('req-log-0003') : undefined), '401 line');
    assert.equal(unauth.status, 401);
    assert.equal(unauth.project_id, undefined);
  });

  test('never logs keys, signatures, user signatures or message bodies — not even in slow-query SQL', async () => {
    const marker = 'top-secret-body-8c1f0e';
    const signature = createHmac('sha256', creds.signing_secret).update('bob').digest('hex');
    const posted = await api(s.url, 'POST', '/v1/threads/log-thread-2/messages', {
      key: creds.keys.secret,
      user: 'bob',
      body: { body: { text: marker } },
    });
    assert.equal(posted.status, 201);
    const asBob = await api(s.url, 'GET', '/v1/threads/log-thread-2/messages', {
      key: creds.keys.publishable,
      user: 'bob',
      signature,
      headers: { origin: 'http://localhost:3000', 'x-request-id': 'req-log-0004' },
    });
    assert.ok(asBob.status < 500, asBob.text);
    await api(s.url, 'GET', '/v1/threads', {
      headers: { 'x-api-key': creds.keys.admin, cookie: 'pdb_session=session-cookie-9d2' },
    });
    await waitFor(() => s.lines().find((l) => l.request_id === 'req-log-0004'), 'request line');

    const everything = s.raw.join('');
    assert.match(everything, /"msg":"slow query"/, 'statements are being logged, so the check below means something');
    for (const secret of [
      marker,
      creds.keys.secret,
      creds.keys.publishable,
      creds.keys.admin,
      creds.signing_secret,
      signature,
      'session-cookie-9d2',
    ]) {
      assert.ok(!everything.includes(secret), `log output contains ${secret.slice(0, 12)}…`);
    }
  });

  test('the redact list masks credentials and bodies passed to the logger by mistake', async () => {
    const raw: string[] = [];
    const logger = createLogger('info', 'progressdb', { write: (x: string) => void raw.push(x) });
    logger.info(
      {
        body: { text: 'leak-1' },
        key: 'sk_leak_2',
        secret: 'leak-3',
        signing_secret: 'leak-4',
        req: {
          headers: {
            authorization: 'Bearer leak-5',
            cookie: 'leak-6',
            'x-api-key': 'leak-7',
            'x-user-signature': 'leak-8',
          },
        },
      },
      'oops',
    );
    const out = raw.join('');
    assert.match(out, /"msg":"oops"/);
    for (let i = 1; i <= 8; i++) assert.ok(!out.includes(`leak-${i}`), `leak-${i} was logged`);
    assert.match(out, /\[redacted\]/);
  });
});

describe('slow-query telemetry', () => {
  let s: LoggedInstance;
  before(async () => {
    // Background workers (webhook claims, the retention leader) share this pool: their statements would count as slow here too.
    s = await startLoggedInstance({
      LOG_LEVEL: 'info',
      SLOW_QUERY_MS: '60000',
      WEBHOOK_WORKER_ENABLED: 'false',
      RETENTION_ENABLED: 'false',
    });
  });
  after(() => s.stop());

  const capture = () => {
    const raw: string[] = [];
    const logger = createLogger('info', 'progressdb', { write: (x: string) => void raw.push(x) });
    const lines = () =>
      raw
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as LogLine);
    return { logger, lines };
  };

  test('logs statements over the threshold with duration and SQL, without bound values', async () => {
    const { logger, lines } = capture();
    const metrics = createMetrics({ defaultMetrics: false });
    const detach = attachQueryTelemetry(s.db, { logger, metrics, options: { slowMs: 40, sampleRate: 1 } });
    try {
      await s.db.raw('select pg_sleep(?), ?::text as marker', [0.08, 'bound-value-77']);
      await s.db.raw('select 1 as quick');
      const slow = lines().filter((l) => l.msg === 'slow query');
      assert.equal(slow.length, 1, JSON.stringify(lines()));
      assert.equal(slow[0].sql, 'select pg_sleep($1), $2::text as marker');
      assert.ok((slow[0].duration_ms as number) >= 40);
      assert.ok(!JSON.stringify(slow).includes('bound-value-77'));
      assert.equal((await metrics.slowQueries.get()).values[0].value, 1);
    } finally {
      detach();
    }
  });

  test('samples: at rate 0 slow statements are counted but not logged; failed statements are marked', async () => {
    const { logger, lines } = capture();
    const metrics = createMetrics({ defaultMetrics: false });
    let detach = attachQueryTelemetry(s.db, { logger, metrics, options: { slowMs: 0, sampleRate: 0 } });
    await s.db.raw('select 1');
    await s.db.raw('select 2');
    detach();
    assert.equal(lines().length, 0);
    assert.equal((await metrics.slowQueries.get()).values[0].value, 2);

    // A deterministic "random" source: every other slow statement is logged at rate 0.5.
    let n = 0;
    detach = attachQueryTelemetry(s.db, {
      logger,
      metrics,
      options: { slowMs: 0, sampleRate: 0.5, random: () => (n++ % 2 === 0 ? 0.25 : 0.75) },
    });
    for (let i = 0; i < 4; i++) await s.db.raw('select ?::int as i', [i]);
    await assert.rejects(s.db.raw('select * from no_such_table_zz'));
    detach();
    const logged = lines();
    assert.equal(logged.length, 3);
    assert.deepEqual(
      logged.map((l) => [l.sql, l.failed ?? false]),
      [
        ['select $1::int as i', false],
        ['select $1::int as i', false],
        ['select * from no_such_table_zz', true],
      ],
    );
    assert.equal(logged[2].code, '42P01');
  });

  test('the app logs nothing below its configured threshold', async () => {
    const before = s.lines().filter((l) => l.msg === 'slow query').length;
    const creds = await s.app.projects.createProject({ name: 'quiet' });
    assert.equal(
      (await api(s.url, 'POST', '/v1/threads/q/messages', { key: creds.keys.secret, user: 'a', body: { body: 1 } }))
        .status,
      201,
    );
    assert.equal(s.lines().filter((l) => l.msg === 'slow query').length, before);
    assert.ok(s.lines().some((l) => l.msg === 'request' && l.route === '/v1/threads/:thread_id/messages'));
  });
});
