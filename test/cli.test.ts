import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { api, startTestApp, type TestContext } from './helpers/app';

const root = path.resolve(__dirname, '..');
const sign = (secret: string, user: string) => createHmac('sha256', secret).update(user).digest('hex');

/** Runs the operator CLI as an operator would, against the test database. */
function cli(databaseUrl: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
      cwd: root,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, DATABASE_URL: databaseUrl, LOG_LEVEL: 'silent' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('operator CLI', () => {
  let t: TestContext;
  let created: {
    project_id: string;
    signing_secret: string;
    keys: { secret: string; publishable: string; admin: string };
  };

  before(async () => {
    t = await startTestApp();
  });
  after(() => t.stop());

  test('project create --json prints exactly {project_id, signing_secret, keys: {secret, publishable, admin}}', async () => {
    const r = await cli(t.databaseUrl, ['project', 'create', '--name', 'From the CLI', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim().split('\n').length, 1, 'one line of JSON and nothing else');
    created = JSON.parse(r.stdout);
    assert.deepEqual(Object.keys(created).sort(), ['keys', 'project_id', 'signing_secret']);
    assert.deepEqual(Object.keys(created.keys).sort(), ['admin', 'publishable', 'secret']);
    assert.match(created.project_id, /^prj_[0-9A-Za-z]{20}$/);
    assert.match(created.keys.secret, /^sk_[0-9A-Za-z]{49}$/);
    assert.match(created.keys.publishable, /^pk_[0-9A-Za-z]{49}$/);
    assert.match(created.keys.admin, /^ak_[0-9A-Za-z]{49}$/);
    const row = await t.db('projects').first('name').where({ id: created.project_id });
    assert.equal(row.name, 'From the CLI');
  });

  test('the keys printed by project create work against the API', async () => {
    const thread = await api(t.url, 'POST', '/v1/threads', {
      key: created.keys.secret,
      body: { id: 'cli-made', type: 'channel', policies: { read: 'public' } },
    });
    assert.equal(thread.status, 201, thread.text);
    const asUser = await api(t.url, 'GET', '/v1/threads/cli-made', {
      key: created.keys.publishable,
      user: 'op',
      signature: sign(created.signing_secret, 'op'),
    });
    assert.equal(asUser.status, 200, asUser.text);
    const signed = await api(t.url, 'POST', '/v1/_sign', { key: created.keys.secret, body: { user_id: 'op' } });
    assert.equal(signed.body.signature, sign(created.signing_secret, 'op'));
    assert.equal(
      (await api(t.url, 'GET', '/v1/threads', { key: created.keys.admin })).status,
      403,
      'the admin key is an admin key',
    );
  });

  test('key create --kind publishable --json prints {key_id, key}, and the key works', async () => {
    const r = await cli(t.databaseUrl, [
      'key',
      'create',
      '--project',
      created.project_id,
      '--kind',
      'publishable',
      '--name',
      'mobile',
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(Object.keys(out).sort(), ['key', 'key_id']);
    assert.match(out.key, /^pk_/);
    const read = await api(t.url, 'GET', '/v1/threads/cli-made', {
      key: out.key,
      user: 'op',
      signature: sign(created.signing_secret, 'op'),
    });
    assert.equal(read.status, 200);
  });

  test('key list shows every key of the project by prefix, never the key itself', async () => {
    const r = await cli(t.databaseUrl, ['key', 'list', '--project', created.project_id, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const keys = JSON.parse(r.stdout);
    assert.equal(keys.length, 4);
    assert.deepEqual(keys.map((k: any) => k.kind).sort(), ['admin', 'publishable', 'publishable', 'secret']);
    for (const k of keys) {
      assert.match(k.id, /^key_/);
      assert.equal(k.revoked_at, null);
      assert.ok(!('key_hash' in k));
    }
    for (const secret of Object.values(created.keys))
      assert.ok(!r.stdout.includes(secret), 'a full key is never listed');
    const text = await cli(t.databaseUrl, ['key', 'list', '--project', created.project_id]);
    assert.equal(text.code, 0);
    assert.equal(text.stdout.trim().split('\n').length, 4);
    assert.match(text.stdout, /publishable +pk_/);
  });

  test('key revoke makes the key answer 401', async () => {
    const made = JSON.parse(
      (await cli(t.databaseUrl, ['key', 'create', '--project', created.project_id, '--kind', 'secret', '--json']))
        .stdout,
    );
    assert.equal((await api(t.url, 'GET', '/v1/threads', { key: made.key })).status, 200);
    const r = await cli(t.databaseUrl, ['key', 'revoke', '--project', created.project_id, '--key-id', made.key_id]);
    assert.equal(r.code, 0, r.stderr);
    // Revocation reaches a running server within its key-cache bound (5 s by the spec).
    const deadline = Date.now() + 5_000;
    let status = 0;
    while (
      Date.now() < deadline &&
      (status = (await api(t.url, 'GET', '/v1/threads', { key: made.key })).status) !== 401
    )
      await new Promise((res) => setTimeout(res, 100));
    assert.equal(status, 401);
    const list = JSON.parse(
      (await cli(t.databaseUrl, ['key', 'list', '--project', created.project_id, '--json'])).stdout,
    );
    assert.ok(list.find((k: any) => k.id === made.key_id).revoked_at);
    assert.equal(
      (await api(t.url, 'GET', '/v1/threads', { key: created.keys.secret })).status,
      200,
      'other keys still work',
    );
  });

  test('refuses bad usage with a message and a non-zero exit', async () => {
    const cases: Array<[string[], number, RegExp]> = [
      [['frobnicate'], 2, /unknown command "frobnicate"/],
      [['project', 'create', '--json'], 2, /--name is required/],
      [
        ['key', 'create', '--project', created.project_id, '--kind', 'root'],
        2,
        /--kind must be secret, publishable or admin/,
      ],
      [['key', 'create', '--project', 'prj_doesnotexist00000000', '--kind', 'secret'], 1, /project was not found/],
      [['key', 'revoke', '--project', created.project_id, '--key-id', 'key_nope'], 1, /key was not found/],
      [['key', 'list', '--project', 'bad id!'], 2, /--project must be 1–128 characters/],
    ];
    for (const [args, code, message] of cases) {
      const r = await cli(t.databaseUrl, args);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(' '));
      assert.ok(!/\n\s+at /.test(r.stderr), `${args.join(' ')}: no stack trace for a usage error\n${r.stderr}`);
    }
  });

  test('a bad DATABASE_URL is reported by name', async () => {
    const r = await cli('mysql://x', ['key', 'list', '--project', created.project_id]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /DATABASE_URL/);
  });
});
