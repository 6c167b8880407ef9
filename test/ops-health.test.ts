import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createApp } from '../src/app';
import { loadConfig } from '../src/config';
import { createDb } from '../src/lib/db';
import { createLogger } from '../src/lib/logger';
import { api, startInstance, startTestApp, type TestContext } from './helpers/app';

describe('health and readiness', () => {
  let t: TestContext;
  before(async () => {
    t = await startTestApp();
  });
  after(() => t.stop());

  test('/healthz answers while the process is alive', async () => {
    const r = await api(t.url, 'GET', '/healthz');
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { status: 'ok' });
  });

  test('/readyz is 200 with database reachable, migrations current and LISTEN connected', async () => {
    const r = await api(t.url, 'GET', '/readyz');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.status, 'ready');
    assert.equal(r.body.checks.database, true);
    assert.equal(r.body.checks.migrations, true);
    assert.equal(r.body.checks.listen, true);
  });

  test('/readyz is 503 while the LISTEN connection is down; /healthz stays 200', async () => {
    const other = await startInstance(t.databaseUrl);
    try {
      assert.equal((await api(other.url, 'GET', '/readyz')).status, 200);
      await other.app.listener.close();
      const r = await api(other.url, 'GET', '/readyz');
      assert.equal(r.status, 503);
      assert.equal(r.body.status, 'not_ready');
      assert.equal(r.body.checks.listen, false);
      assert.equal(r.body.checks.database, true);
      assert.equal((await api(other.url, 'GET', '/healthz')).status, 200);
    } finally {
      await other.close();
    }
  });

  test('/readyz is 503 when the database is unreachable', async () => {
    // The pool points at a closed port; LISTEN uses the real database so only one check fails.
    const config = loadConfig({}, { NODE_ENV: 'test', DATABASE_URL: t.databaseUrl, LOG_LEVEL: 'silent' });
    const db = createDb('postgres://postgres@127.0.0.1:1/nowhere', 2);
    const app = createApp({ config, db, logger: createLogger('silent'), databaseUrl: t.databaseUrl });
    await app.start();
    const server = app.app.listen(0, '127.0.0.1');
    await new Promise<void>((r) => server.once('listening', () => r()));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const r = await api(url, 'GET', '/readyz');
      assert.equal(r.status, 503);
      assert.equal(r.body.checks.database, false);
      assert.equal(r.body.checks.listen, true);
      assert.equal((await api(url, 'GET', '/healthz')).status, 200);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await app.close();
      await db.destroy();
    }
  });
});
