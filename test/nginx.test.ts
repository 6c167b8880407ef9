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
import { api, startInstance, startTestApp, type TestContext, type TestInstance } from './helpers/app';
import { freePort, repoRoot } from './helpers/processes';

const NGINX = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx', '/usr/bin/nginx'].find((p) => existsSync(p));
const SKIP = NGINX ? false : 'nginx is not installed (apt-get install -y nginx-light; .ci/run installs it) — the load-balancer test cannot run';

const deploy = (file: string) => readFileSync(path.join(repoRoot, 'deploy', file), 'utf8');

function replace(text: string, from: string, to: string): string {
  assert.equal(text.split(from).length - 1, 1, `deploy config should contain "${from}" exactly once`);
  return text.replace(from, to);
}

/** Requests each replica served on a route pattern, from its own metrics registry. */
async function served(instance: TestInstance, route: string): Promise<number> {
  const { values } = await instance.app.metrics.httpDuration.get();
  return values.filter((v) => v.metricName?.endsWith('_count') && v.labels.route === route).reduce((n, v) => n + v.value, 0);
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
    writeFileSync(path.join(dir, 'nginx.conf'), replace(deploy('nginx.conf'), 'listen 8080;', `listen 127.0.0.1:${port};`));
    let upstreams = deploy('nginx-upstreams.conf');
    upstreams = replace(upstreams, 'api1:8080', new URL(t.url).host);
    upstreams = replace(upstreams, 'api2:8080', new URL(second.url).host);
    writeFileSync(path.join(dir, 'nginx-upstreams.conf'), upstreams);

    // A file, not a pipe: node's pipes are sockets, and nginx cannot open() /dev/stdout on a socket.
    const outFile = path.join(dir, 'nginx.out');
    const fd = openSync(outFile, 'a');
    nginx = spawn(NGINX!, ['-p', `${dir}/`, '-c', path.join(dir, 'nginx.conf'), '-e', 'stderr', '-g', 'daemon off;'], { stdio: ['ignore', fd, fd] });
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
    assert.deepEqual(seqs, Array.from({ length: 12 }, (_, i) => i + 2));
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
    assert.match(minted.headers.get('x-request-id') ?? '', /^[0-9a-f]{32}$/, 'nginx mints the id when the client sent none');
    assert.equal((await api(lb, 'GET', '/metrics')).status, 404);
  });

  test('a request body of several MiB (a large batch) is not refused by the proxy', async () => {
    const big = 'x'.repeat(60 * 1024);
    const messages = Array.from({ length: 40 }, (_, i) => ({ body: { i, big } }));
    const r = await api(lb, 'POST', '/v1/threads/lb-batch/messages/batch', { key: sk, user: 'u1', body: { messages } });
    assert.notEqual(r.status, 413, 'nginx client_max_body_size is below the API limit');
    assert.ok(r.status < 500, r.text);
  });
});
