/**
 * deploy/nginx.conf in front of two in-process replicas, the way docker-compose.yml runs it:
 * only the replicas' addresses and the listen port are substituted.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import WebSocket from 'ws';
import { api, startInstance, startTestApp, type TestContext, type TestInstance } from './helpers/app';
import { freePort, repoRoot } from './helpers/processes';

const NGINX = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx', '/usr/bin/nginx'].find((p) =>
  existsSync(p),
);
const SKIP = NGINX
  ? false
  : 'nginx is not installed (apt-get install -y nginx-light; .ci/run installs it) — the load-balancer test cannot run';

const deploy = (file: string) => readFileSync(path.join(repoRoot, 'deploy', file), 'utf8');

function replace(text: string, from: string, to: string): string {
  assert.equal(text.split(from).length - 1, 1, `deploy config should contain "${from}" exactly once`);
  return text.replace(from, to);
}

/** Requests each replica served on a route pattern, from its own metrics registry. */
async function served(instance: TestInstance, route: string): Promise<number> {
  const { values } = await instance.app.metrics.httpDuration.get();
  return values
    .filter((v) => v.metricName?.endsWith('_count') && v.labels.route === route)
    .reduce((n, v) => n + v.value, 0);
}

describe('nginx load balancer (deploy/nginx.conf)', { skip: SKIP }, () => {
  let t: TestContext;
  let second: TestInstance;
  let sk: string;
  let dir: string;
  let nginx: ChildProcess;
  let output = () => '';
  let lb: string;

  before(async () => {
    t = await startTestApp();
    second = await startInstance(t.databaseUrl);
    sk = (await t.project()).keys.secret;

    dir = mkdtempSync(path.join(tmpdir(), 'pdb-nginx-'));
    chmodSync(dir, 0o755); // nginx workers drop root privileges and must reach the temp dirs
    const port = await freePort();
    lb = `http://127.0.0.1:${port}`;
    writeFileSync(
      path.join(dir, 'nginx.conf'),
      replace(deploy('nginx.conf'), 'listen 8080;', `listen 127.0.0.1:${port};`),
    );
    let upstreams = deploy('nginx-upstreams.conf');
    upstreams = replace(upstreams, 'api1:8080', new URL(t.url).host);
    upstreams = replace(upstreams, 'api2:8080', new URL(second.url).host);
    writeFileSync(path.join(dir, 'nginx-upstreams.conf'), upstreams);

    // A file, not a pipe: node's pipes are sockets, and nginx cannot open() /dev/stdout on a socket.
    const outFile = path.join(dir, 'nginx.out');
    const fd = openSync(outFile, 'a');
    nginx = spawn(NGINX!, ['-p', `${dir}/`, '-c', path.join(dir, 'nginx.conf'), '-e', 'stderr', '-g', 'daemon off;'], {
      stdio: ['ignore', fd, fd],
    });
    closeSync(fd);
    output = () => readFileSync(outFile, 'utf8');
    for (let i = 0; ; i++) {
      if (nginx.exitCode !== null) throw new Error(`nginx exited ${nginx.exitCode}:\n${output()}`);
      try {
        if ((await fetch(`${lb}/healthz`)).status === 200) break;
      } catch {
        /* not listening yet */
      }
      if (i > 100) throw new Error(`nginx did not come up:\n${output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  after(async () => {
    if (nginx && nginx.exitCode === null) {
      const exited = new Promise((r) => nginx.once('exit', r));
      nginx.kill('SIGQUIT');
      await exited;
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
    await second?.close();
    await t?.stop();
  });

  test('appends and reads go round robin to both replicas, with gapless seqs', async () => {
    const created = await api(lb, 'POST', '/v1/threads', { key: sk, body: { id: 'lb', type: 'channel' } });
    assert.equal(created.status, 201, created.text);
    const seqs: number[] = [];
    for (let i = 0; i < 12; i++) {
      const r = await api(lb, 'POST', '/v1/threads/lb/messages', { key: sk, user: 'u1', body: { body: { i } } });
      assert.equal(r.status, 201, r.text);
      seqs.push(r.body.seq);
    }
    assert.deepEqual(
      seqs,
      Array.from({ length: 12 }, (_, i) => i + 2),
    );
    for (let i = 0; i < 6; i++) {
      const r = await api(lb, 'GET', '/v1/threads/lb/messages?limit=100', { key: sk });
      assert.equal(r.status, 200);
      assert.equal(r.body.data.length, 12);
    }
    const route = '/v1/threads/:thread_id/messages';
    const [a, b] = [await served(t, route), await served(second, route)];
    assert.equal(a + b, 18);
    assert.ok(a > 0 && b > 0, `both replicas served (${a} and ${b})`);
  });

  test('passes the request id through and keeps /metrics off the public side', async () => {
    const mine = await api(lb, 'GET', '/healthz', { headers: { 'x-request-id': 'lb-req-42' } });
    assert.equal(mine.headers.get('x-request-id'), 'lb-req-42');
    const minted = await api(lb, 'GET', '/healthz');
    assert.match(
      minted.headers.get('x-request-id') ?? '',
      /^[0-9a-f]{32}$/,
      'nginx mints the id when the client sent none',
    );
    assert.equal((await api(lb, 'GET', '/metrics')).status, 404);
  });

  test('a request body of several MiB (a large batch) is not refused by the proxy', async () => {
    const big = 'x'.repeat(60 * 1024);
    const messages = Array.from({ length: 40 }, (_, i) => ({ body: { i, big } }));
    const r = await api(lb, 'POST', '/v1/threads/lb-batch/messages/batch', { key: sk, user: 'u1', body: { messages } });
    assert.notEqual(r.status, 413, 'nginx client_max_body_size is below the API limit');
    assert.ok(r.status < 500, r.text);
  });

  test('an SSE tail through nginx replays, says ready, then delivers live events as they commit', async () => {
    await api(lb, 'POST', '/v1/threads', { key: sk, body: { id: 'lb-tail', type: 'channel' } });
    await api(lb, 'POST', '/v1/threads/lb-tail/messages', { key: sk, user: 'u1', body: { body: 'before' } });
    const ac = new AbortController();
    const res = await fetch(`${lb}/v1/threads/lb-tail/tail?after_seq=0`, {
      headers: { authorization: `Bearer ${sk}`, accept: 'text/event-stream' },
      signal: ac.signal,
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
    const events: EventSourceMessage[] = [];
    let wake: (() => void) | null = null;
    const parser = createParser({ onEvent: (e) => (events.push(e), wake?.()) });
    const reader = res.body!.getReader();
    void (async () => {
      for (;;) {
        const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
        if (done) return;
        parser.feed(Buffer.from(value!).toString('utf8'));
      }
    })();
    const until = async (pred: () => boolean, what: string) => {
      const deadline = Date.now() + 10_000;
      while (!pred()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(events)}`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 200);
        });
      }
    };
    try {
      await until(() => events.some((e) => e.event === 'ready'), 'ready');
      const replayed = events.filter((e) => e.event === undefined || e.event === 'message').map((e) => Number(e.id));
      assert.deepEqual(replayed, [1, 2]);
      // Posted through nginx too: it may land on either replica; NOTIFY reaches both.
      for (let i = 0; i < 3; i++)
        assert.equal(
          (await api(lb, 'POST', '/v1/threads/lb-tail/messages', { key: sk, user: 'u1', body: { body: { live: i } } }))
            .status,
          201,
        );
      await until(() => events.filter((e) => e.id === '5').length === 1, 'live seq 5');
      const live = events.filter((e) => e.event === undefined || e.event === 'message').map((e) => Number(e.id));
      assert.deepEqual(live, [1, 2, 3, 4, 5]);
      assert.equal(JSON.parse(events.find((e) => e.id === '5')!.data).type, 'message.created');
    } finally {
      ac.abort();
    }
  });

  test('a WebSocket through nginx upgrades, subscribes and receives live events', async () => {
    await api(lb, 'POST', '/v1/threads', { key: sk, body: { id: 'lb-ws', type: 'channel' } });
    const ws = new WebSocket(`${lb.replace('http', 'ws')}/v1/ws`, {
      headers: { authorization: `Bearer ${sk}`, 'x-user-id': 'u1' },
    });
    const frames: Array<Record<string, any>> = [];
    let wake: (() => void) | null = null;
    ws.on('message', (d) => (frames.push(JSON.parse(d.toString())), wake?.()));
    const until = async (pred: () => boolean, what: string) => {
      const deadline = Date.now() + 10_000;
      while (!pred()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(frames)}`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 200);
        });
      }
    };
    try {
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
        ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
      });
      ws.send(JSON.stringify({ type: 'subscribe', thread_id: 'lb-ws', after_seq: 0 }));
      await until(() => frames.some((f) => f.type === 'ready'), 'ready');
      for (let i = 0; i < 2; i++)
        assert.equal(
          (await api(lb, 'POST', '/v1/threads/lb-ws/messages', { key: sk, user: 'u1', body: { body: { i } } })).status,
          201,
        );
      await until(() => frames.some((f) => f.type === 'event' && f.event.seq === 3), 'live seq 3');
      const seqs = frames.filter((f) => f.type === 'event').map((f) => f.event.seq);
      assert.deepEqual(seqs, [1, 2, 3]);
    } finally {
      ws.close();
    }
  });
});
