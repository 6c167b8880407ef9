import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { api, startTestApp, type TestContext } from './helpers/app';
import { freePort, repoRoot } from './helpers/processes';

describe('Ctrl-C on `npm start` drains like SIGTERM', () => {
  let t: TestContext;
  let sk: string;
  before(async () => {
    t = await startTestApp();
    sk = (await t.project()).keys.secret;
  });
  after(() => t.stop());

  test('SIGINT to the whole process group (what a terminal sends) under load: in-flight requests complete, exit 0', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    // A process group of its own, like a terminal's foreground job: npm, its shell, tsx, node.
    const child = spawn('npm', ['start'], {
      cwd: repoRoot,
      detached: true,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '',
        NODE_ENV: 'test',
        DATABASE_URL: t.databaseUrl,
        HOST: '127.0.0.1',
        PORT: String(port),
        LOG_LEVEL: 'info',
        SEED_DEV_PROJECT: 'false',
        INGEST_MAX_WAIT_MS: '30',
        SHUTDOWN_TIMEOUT_MS: '30000',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('exit', (code, signal) => resolve({ code, signal })),
    );
    try {
      const deadline = Date.now() + 60_000;
      for (;;) {
        const ok = await fetch(`${url}/readyz`).then(
          (r) => r.status === 200,
          () => false,
        );
        if (ok) break;
        assert.ok(Date.now() < deadline, `npm start did not become ready:\n${out}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      const acked: string[] = [];
      const failures: string[] = [];
      const unanswered: string[] = [];
      let signalled = false;
      const worker = async (w: number) => {
        for (let i = 0; ; i++) {
          const id = `w${w}-${i}`;
          let r;
          try {
            r = await api(url, 'POST', '/v1/threads/ctrl-c/messages', {
              key: sk,
              user: `u${w}`,
              body: { id, body: { i } },
            });
          } catch (e) {
            // A refused connection, or a keep-alive connection closed while idle (the server never
            // read the request), is fine; a request cut mid-flight (processed, unanswered) is not.
            if (!signalled) failures.push(`before Ctrl-C: ${String(e)}`);
            unanswered.push(id);
            return;
          }
          if (r.status === 201) acked.push(id);
          else if (r.status === 503) return;
          else failures.push(`${id}: ${r.status} ${r.text}`);
          if (acked.length === 80 && !signalled) {
            signalled = true;
            process.kill(-child.pid!, 'SIGINT');
          }
        }
      };
      await Promise.all(Array.from({ length: 10 }, (_, w) => worker(w)));
      const exit = await exited;
      assert.deepEqual(exit, { code: 0, signal: null }, out);
      assert.deepEqual(failures, [], `requests cut by Ctrl-C:\n${failures.join('\n')}\n${out}`);
      assert.match(out, /in-flight requests finished/);
      const stored = await t.db('messages').whereIn('id', acked).count({ n: '*' });
      assert.equal(Number(stored[0].n), acked.length, 'every acknowledged message is committed');
      const cut = await t.db('messages').whereIn('id', unanswered).pluck('id');
      assert.deepEqual(cut, [], 'a request without an answer was never processed');
    } finally {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  });
});
