import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { after, before, describe, test } from 'node:test';
import type { Knex } from 'knex';
import pg from 'pg';
import { createApp, type App } from '../src/app';
import { loadConfig } from '../src/config';
import { createDb } from '../src/lib/db';
import { createLogger } from '../src/lib/logger';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api } from './helpers/app';
import { createTestDatabase } from './helpers/db';
import { as, openSse, range, seqs } from './realtime-clients';

/** A TCP proxy to PostgreSQL that can go silent (bytes dropped, sockets left open) and refuse new connections. */
async function startBlackholeProxy(upstream: string) {
  const target = new URL(upstream);
  const pairs = new Set<{ client: net.Socket; up: net.Socket; silent: boolean }>();
  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) return client.destroy();
    const up = net.connect(Number(target.port), target.hostname);
    const pair = { client, up, silent: false };
    pairs.add(pair);
    client.on('data', (d) => pair.silent || up.write(d));
    up.on('data', (d) => pair.silent || client.write(d));
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      up.destroy();
    };
    for (const s of [client, up]) {
      s.on('close', end);
      s.on('error', end);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const u = new URL(upstream);
  u.host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: u.toString(),
    /** Like a NAT that forgot the connection: nothing arrives, nothing is closed. */
    silenceAndRefuse() {
      refusing = true;
      for (const p of pairs) p.silent = true;
    },
    accept() {
      refusing = false;
    },
    close() {
      for (const p of pairs) {
        p.client.destroy();
        p.up.destroy();
      }
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('LISTEN liveness: a silently dead LISTEN connection is noticed and replaced', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let proxy: Awaited<ReturnType<typeof startBlackholeProxy>>;
  let db: Knex;
  let app: App;
  let server: Server;
  let url: string;
  let p: ProjectCredentials;

  before(async () => {
    database = await createTestDatabase();
    proxy = await startBlackholeProxy(database.url);
    const config = loadConfig(
      {},
      {
        NODE_ENV: 'test',
        DATABASE_URL: database.url,
        LOG_LEVEL: process.env.LOG_LEVEL ?? 'silent',
        LISTEN_PROBE_INTERVAL_MS: '200',
        LISTEN_PROBE_TIMEOUT_MS: '1000',
      },
    );
    // The pool goes straight to PostgreSQL; only the LISTEN connection crosses the proxy.
    db = createDb(database.url, 10);
    app = createApp({ config, db, logger: createLogger(config.LOG_LEVEL), databaseUrl: proxy.url });
    await app.start();
    server = app.app.listen(0, '127.0.0.1');
    app.attach(server);
    await new Promise<void>((resolve) => server.once('listening', () => resolve()));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    p = await app.projects.createProject({ name: 'liveness' });
  });
  after(async () => {
    server.closeAllConnections();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    await app.close();
    await closed;
    await db.destroy();
    await proxy.close();
    await database.drop();
  });

  const post = (thread: string, i: number) =>
    api(url, 'POST', `/v1/threads/${thread}/messages`, { key: p.keys.secret, user: 'ann', body: { body: { i } } });
  const metric = async (name: string) => {
    const text = await (await fetch(`${url}/metrics`)).text();
    const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
    return m ? Number(m[1]) : undefined;
  };
  async function until(what: string, check: () => Promise<boolean>, timeoutMs = 20_000) {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  test('a connection that stops carrying bytes: /readyz and the gauge say so, then it reconnects and the tail has no gap', async () => {
    assert.equal(await metric('progressdb_listen_connected'), 1);
    assert.equal((await post('quiet', 1)).status, 201);
    const sse = await openSse(`${url}/v1/threads/quiet/tail?after_seq=0`, as(p.keys.secret, 'ann'));
    assert.equal(sse.status, 200);
    await sse.waitFor(() => sse.events().find((e) => e.data?.body?.i === 1), 'the first message');

    proxy.silenceAndRefuse();
    // Written while the listener hears nothing: these NOTIFYs are lost to it.
    for (let i = 2; i <= 4; i++) assert.equal((await post('quiet', i)).status, 201);
    await until(
      '/readyz to report the dead LISTEN connection',
      async () => (await fetch(`${url}/readyz`)).status === 503,
    );
    const ready = await (await fetch(`${url}/readyz`)).json();
    assert.equal(JSON.stringify(ready).includes('listen'), true, JSON.stringify(ready));
    assert.equal(await metric('progressdb_listen_connected'), 0);

    proxy.accept();
    await until('/readyz to recover', async () => (await fetch(`${url}/readyz`)).status === 200);
    assert.equal(await metric('progressdb_listen_connected'), 1);
    assert.ok((await metric('progressdb_listen_reconnects'))! >= 1);
    // Re-read after the reconnect: the messages written during the outage arrive, in order.
    const messages = () => sse.events().filter((e) => e.type === 'message.created');
    await sse.waitFor(() => (messages().length >= 4 ? true : undefined), 'the messages written during the outage');
    assert.deepEqual(
      messages().map((e) => e.data.body.i),
      [1, 2, 3, 4],
    );
    const all = sse.events();
    assert.deepEqual(seqs(all), range(all[0].seq, all[0].seq + all.length - 1), 'no gap, no duplicate');
    // Live again: a new message arrives through NOTIFY.
    assert.equal((await post('quiet', 5)).status, 201);
    await sse.waitFor(() => messages().find((e) => e.data.body.i === 5), 'a message after the reconnect');
    sse.close();
  });

  test('a LISTEN backend killed by pg_terminate_backend is replaced and the tail catches up', async () => {
    assert.equal((await post('killed', 1)).status, 201);
    const sse = await openSse(`${url}/v1/threads/killed/tail?after_seq=0`, as(p.keys.secret, 'ann'));
    const messages = () => sse.events().filter((e) => e.type === 'message.created');
    await sse.waitFor(() => messages()[0], 'the first message');
    const before = (await metric('progressdb_listen_reconnects')) ?? 0;
    const admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
    try {
      const { rowCount } = await admin.query(
        `select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'progressdb-listener' and datname = current_database()`,
      );
      assert.equal(rowCount, 1);
    } finally {
      await admin.end();
    }
    assert.equal((await post('killed', 2)).status, 201);
    await until('a new LISTEN connection', async () => ((await metric('progressdb_listen_reconnects')) ?? 0) > before);
    await sse.waitFor(() => (messages().length >= 2 ? true : undefined), 'the message written around the kill');
    assert.deepEqual(
      messages().map((e) => e.data.body.i),
      [1, 2],
    );
    sse.close();
  });

  test('/metrics reports the ingest queue depth', async () => {
    assert.equal(await metric('progressdb_ingest_queue_depth'), 0);
  });
});
