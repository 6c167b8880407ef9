import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { api, startTestApp, type TestContext } from './helpers/app';
import { repoRoot } from './helpers/processes';

/** Runs a command line as an operator would, through npm; stdout must be nothing but the output. */
function npmCli(args: string[], env: Record<string, string>) {
  const child = spawn('npm', ['run', '-s', 'cli', '--', ...args], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.once('exit', (code) => resolve({ code, stdout, stderr })),
  );
}

describe('operator CLI: project list and project update', () => {
  let t: TestContext;
  let env: Record<string, string>;
  before(async () => {
    t = await startTestApp({ KEY_CACHE_TTL_MS: '60000' });
    env = { DATABASE_URL: t.databaseUrl };
  });
  after(() => t.stop());

  test('project update sets origins, IP allowlist, rate limits and retention; --json pipes cleanly; the API enforces them at once', async () => {
    const p = await t.project('cli settings');
    const ok = () => api(t.url, 'GET', '/v1/threads', { key: p.keys.secret, user: 'ann' });
    assert.equal((await ok()).status, 200);
    const r = await npmCli(
      [
        'project',
        'update',
        '--project',
        p.project_id,
        '--allowed-origin',
        'https://app.example.com',
        '--allowed-origin',
        'https://admin.example.com',
        '--ip-allow',
        '198.51.100.0/24',
        '--rate-limit',
        'write=600/60',
        '--rate-limit',
        'read=5000/60',
        '--retention-days',
        '30',
        '--json',
      ],
      env,
    );
    assert.equal(r.code, 0, r.stderr);
    const updated = JSON.parse(r.stdout);
    assert.deepEqual(updated.settings, {
      allowed_origins: ['https://app.example.com', 'https://admin.example.com'],
      ip_allowlist: ['198.51.100.0/24'],
      rate_limits: { write: { limit: 600, window_seconds: 60 }, read: { limit: 5000, window_seconds: 60 } },
      retention_days: 30,
    });
    // The CLI's change reaches the running server's key cache (60 s TTL) through NOTIFY.
    const deadline = Date.now() + 10_000;
    while ((await ok()).status !== 403) assert.ok(Date.now() < deadline, 'the IP allowlist was not applied');

    const cleared = await npmCli(
      ['project', 'update', '--project', p.project_id, '--clear', 'ip-allowlist', '--retention-days', 'none', '--json'],
      env,
    );
    assert.equal(cleared.code, 0, cleared.stderr);
    const s = JSON.parse(cleared.stdout).settings;
    assert.equal(s.ip_allowlist, undefined);
    assert.equal(s.retention_days, null);
    assert.deepEqual(s.allowed_origins, ['https://app.example.com', 'https://admin.example.com']);
    while ((await ok()).status !== 200) assert.ok(Date.now() < deadline + 10_000, 'the allowlist was not cleared');
  });

  test('project list --json prints every project as one JSON document', async () => {
    const a = await t.project('listed one');
    const b = await t.project('listed two');
    const r = await npmCli(['project', 'list', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    const list = JSON.parse(r.stdout) as Array<{ id: string; name: string; settings: object }>;
    const ids = list.map((p) => p.id);
    assert.ok(ids.includes(a.project_id) && ids.includes(b.project_id));
    assert.equal(list.find((p) => p.id === b.project_id)!.name, 'listed two');
    assert.ok(!JSON.stringify(list).includes('sk_'), 'no key material in the list');
  });

  test('bad settings are refused with the reason and exit 2, and nothing is stored', async () => {
    const p = await t.project('bad');
    for (const args of [
      ['--rate-limit', 'write=600'],
      ['--rate-limit', 'bulk=1/1'],
      ['--ip-allow', 'not-an-ip'],
      ['--retention-days', 'soon'],
      ['--clear', 'webhooks'],
    ]) {
      const r = await npmCli(['project', 'update', '--project', p.project_id, ...args], env);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, /^error: /);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
    const row = await t.db('projects').first('settings').where({ id: p.project_id });
    assert.deepEqual(row.settings, {});
  });
});
