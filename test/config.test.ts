import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, test } from 'node:test';
import { ConfigError, loadConfig } from '../src/config';

/** The ConfigError message for `env`, failing the test if the environment was accepted. */
function configError(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${String(e)}`);
    return e.message;
  }
  assert.fail(`expected ${JSON.stringify(env)} to be refused`);
}

describe('configuration from the environment', () => {
  test('defaults apply when nothing is set', () => {
    const c = loadConfig({});
    assert.equal(c.PORT, 8080);
    assert.equal(c.HOST, '127.0.0.1');
    assert.equal(c.DATABASE_URL, undefined);
    assert.equal(c.MAX_MESSAGE_BYTES, 64 * 1024);
    assert.ok(Object.isFrozen(c));
  });

  test('values are parsed into their types; empty strings count as unset', () => {
    const c = loadConfig({
      PORT: '3000',
      DATABASE_URL: 'postgresql://u:p@db:5432/x',
      MAX_JSON_DEPTH: '16',
      SEED_DEV_PROJECT: 'no',
      HOST: '',
    });
    assert.equal(c.PORT, 3000);
    assert.equal(c.DATABASE_URL, 'postgresql://u:p@db:5432/x');
    assert.equal(c.MAX_JSON_DEPTH, 16);
    assert.equal(c.SEED_DEV_PROJECT, false);
    assert.equal(c.HOST, '127.0.0.1');
  });

  test('overrides win over the environment', () => {
    assert.equal(loadConfig({ PORT: '1' }, { PORT: '2' }).PORT, 2);
  });

  test('a bad value gives a clear message naming the variable', () => {
    const cases: Array<[Record<string, string>, string, RegExp]> = [
      [{ PORT: 'abc' }, 'PORT', /number/i],
      [{ PORT: '70000' }, 'PORT', /65535/],
      [{ DATABASE_URL: 'mysql://x' }, 'DATABASE_URL', /postgres:\/\/ or postgresql:\/\//],
      [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL', /info/],
      [{ MAX_REQUEST_BYTES: '10' }, 'MAX_REQUEST_BYTES', /1024/],
      [{ SEED_DEV_PROJECT: 'maybe' }, 'SEED_DEV_PROJECT', /true/],
      [{ SESSION_SECRET: 'short' }, 'SESSION_SECRET', /at least 32 characters/],
      [{ PUBLIC_URL: 'not a url' }, 'PUBLIC_URL', /url/i],
    ];
    for (const [env, name, hint] of cases) {
      const message = configError(env);
      assert.match(message, new RegExp(`^  ${name}: `, 'm'), `${JSON.stringify(env)} → ${message}`);
      assert.match(message, hint, `${JSON.stringify(env)} → ${message}`);
      assert.ok(!message.includes('undefined'), message);
    }
  });

  test('the message shows the rejected value, except for secrets and the database URL', () => {
    assert.match(configError({ PORT: 'abc' }), /PORT: .*\(got "abc"\)/);
    const secret = configError({ SESSION_SECRET: 'hunter2-short' });
    assert.ok(!secret.includes('hunter2'), secret);
    const url = configError({ DATABASE_URL: 'mysql://root:pa55word@db/x' });
    assert.ok(!url.includes('pa55word'), url);
  });

  test('every bad variable is listed at once', () => {
    const message = configError({ PORT: 'abc', DATABASE_URL: 'mysql://x', LOG_LEVEL: 'loud' });
    for (const name of ['PORT', 'DATABASE_URL', 'LOG_LEVEL']) assert.match(message, new RegExp(`^  ${name}: `, 'm'));
    assert.match(message, /^Invalid configuration:/);
  });

  test('the server refuses to start on a bad value, naming it, with exit code 2', async () => {
    const root = path.resolve(__dirname, '..');
    const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
        cwd: root,
        env: { PATH: process.env.PATH, HOME: process.env.HOME, PORT: 'abc', DATABASE_URL: 'mysql://x' },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let err = '';
      child.stderr.on('data', (d) => (err += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.on('error', reject);
      child.on('close', (c) => {
        clearTimeout(timer);
        resolve({ code: c, stderr: err });
      });
    });
    assert.equal(code, 2, stderr);
    assert.match(stderr, /^ {2}PORT: /m);
    assert.match(stderr, /^ {2}DATABASE_URL: must be a postgres/m);
    assert.ok(!/\n\s+at /.test(stderr), 'no stack trace');
  });
});
