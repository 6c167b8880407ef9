import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { api, startTestApp, type TestContext } from './helpers/app';
import { repoRoot, runCli } from './helpers/processes';
import { seedThread } from './helpers/seed-log';

const DAY = 86_400_000;
const NDJSON = 'application/x-ndjson';
const lines = (text: string) =>
  text
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, any>);
/** An export without its header (which names the project and the time of export). */
const body = (text: string) => lines(text).filter((l) => l.kind !== 'export');

describe('export and import (NDJSON), resumable and idempotent', () => {
  let t: TestContext;
  let a: ProjectCredentials;
  let dir: string;
  const call = (key: string, method: string, p: string, b?: unknown, user?: string) =>
    api(t.url, method, p, { key, user, body: b });
  const exportOf = async (key: string, query = '') => {
    const r = await fetch(`${t.url}/v1/admin/export${query}`, { headers: { authorization: `Bearer ${key}` } });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /application\/x-ndjson/);
    return r.text();
  };
  const importInto = (key: string, text: string) =>
    api(t.url, 'POST', '/v1/admin/import', { key, raw: text, contentType: NDJSON });

  /** Everything the API shows about a project's threads, for comparison. */
  async function apiView(key: string, threadIds: string[]) {
    const out: Record<string, unknown> = {};
    for (const id of threadIds) {
      const thread = await call(key, 'GET', `/v1/threads/${id}`);
      if (thread.status === 404) {
        out[id] = 'deleted';
        continue;
      }
      const members = (await call(key, 'GET', `/v1/threads/${id}/members`)).body;
      const messages = (await call(key, 'GET', `/v1/threads/${id}/messages?limit=200&include_deleted=true`)).body;
      const versions: Record<string, unknown> = {};
      for (const m of messages.data)
        versions[m.id] = (await call(key, 'GET', `/v1/threads/${id}/messages/${m.id}/versions`)).body;
      const h = thread.body.purged_through_seq;
      const events = (await call(key, 'GET', `/v1/threads/${id}/events?after_seq=${h}&limit=1000`)).body;
      out[id] = { thread: thread.body, members, messages, versions, events };
    }
    return out;
  }

  before(async () => {
    t = await startTestApp({ RETENTION_ENABLED: 'false' });
    dir = mkdtempSync(path.join(tmpdir(), 'pdb-export-'));
    a = await t.project('source');
    const sk = a.keys.secret;
    // A history with every kind of event: members in and out, policy and title changes,
    // messages edited, deleted, reacted to (and un-reacted), a dm, a deleted thread.
    await call(sk, 'POST', '/v1/threads', { id: 'general', type: 'group', title: 'General', members: ['bob'] }, 'ann');
    await call(sk, 'POST', '/v1/threads', { id: 'dm-ann-bob', type: 'dm', members: ['bob'] }, 'ann');
    await call(sk, 'POST', '/v1/threads', { id: 'news', type: 'channel', attributes: { topic: 'x' } }, 'ann');
    await call(sk, 'POST', '/v1/threads', { id: 'doomed', type: 'group' }, 'ann');
    for (let i = 0; i < 5; i++) {
      await call(sk, 'POST', '/v1/threads/general/messages', { id: `g${i}`, body: { text: `hello ${i}` } }, 'ann');
      await call(sk, 'POST', '/v1/threads/dm-ann-bob/messages', { body: { text: `psst ${i}` } }, 'bob');
    }
    await call(sk, 'PATCH', '/v1/threads/general/messages/g1', { body: { text: 'edited' } }, 'ann');
    await call(sk, 'PATCH', '/v1/threads/general/messages/g1', { body: { text: 'edited twice' } }, 'ann');
    await call(sk, 'DELETE', '/v1/threads/general/messages/g2', undefined, 'ann');
    await call(sk, 'PUT', '/v1/threads/general/messages/g0/reactions/heart', undefined, 'bob');
    await call(sk, 'PUT', '/v1/threads/general/messages/g0/reactions/heart', undefined, 'ann');
    await call(sk, 'PUT', '/v1/threads/general/messages/g3/reactions/up', undefined, 'bob');
    await call(sk, 'DELETE', '/v1/threads/general/messages/g3/reactions/up', undefined, 'bob');
    await call(sk, 'PUT', '/v1/threads/general/members/cid', { role: 'admin' });
    await call(sk, 'DELETE', '/v1/threads/general/members/cid');
    await call(sk, 'PATCH', '/v1/threads/general', { title: 'General chat', policies: { read: 'public' } }, 'ann');
    await call(sk, 'POST', '/v1/threads/news/messages', { body: 'plain text' }, 'ann');
    await call(sk, 'POST', '/v1/threads/doomed/messages', { body: 'bye' }, 'ann');
    assert.equal((await call(sk, 'DELETE', '/v1/threads/doomed', undefined, 'ann')).status, 204);
    // A thread that lost its prefix to retention exports from its horizon.
    await seedThread(t.db, {
      projectId: a.project_id,
      threadId: 'archive',
      messages: 30,
      start: new Date(Date.now() - 40 * DAY),
      stepMs: DAY,
    });
    await t
      .db('projects')
      .where({ id: a.project_id })
      .update({ settings: JSON.stringify({ retention_days: 30 }) });
    const purged = await call(a.keys.admin, 'POST', '/v1/admin/retention/run', {});
    assert.equal(purged.body.threads[0].thread_id, 'archive');
  });
  after(async () => {
    rmSync(dir, { recursive: true, force: true });
    await t.stop();
  });

  const threadIds = ['archive', 'dm-ann-bob', 'doomed', 'general', 'news'];

  test('export lists every thread and its retained events; import into a fresh project shows the same through the API', async () => {
    const text = await exportOf(a.keys.admin);
    const all = lines(text);
    assert.equal(all[0].kind, 'export');
    assert.equal(all[0].format, 'progressdb.export.v1');
    const threads = all.filter((l) => l.kind === 'thread');
    assert.deepEqual(
      threads.map((l) => l.id),
      threadIds,
    );
    const end = all[all.length - 1];
    assert.deepEqual(end, { kind: 'end', threads: 5, events: all.filter((l) => l.kind === 'event').length });
    const archive = threads[0];
    assert.ok(archive.purged_through_seq > 0);
    const archiveEvents = all.filter((l) => l.kind === 'event' && l.thread_id === 'archive');
    assert.equal(archiveEvents[0].seq, archive.purged_through_seq + 1, 'a purged thread exports from its horizon');

    const b = await t.project('restored');
    const r = await importInto(b.keys.admin, text);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body, { threads: 5, events_imported: end.events, events_skipped: 0, complete: true });

    assert.deepEqual(await apiView(b.keys.secret, threadIds), await apiView(a.keys.secret, threadIds));
    // Deleted threads too: the export of the copy is the export of the original.
    assert.deepEqual(body(await exportOf(b.keys.admin)), body(text));
    // The dm pair came along: creating the same dm again in the copy finds the imported one.
    const dm = await call(b.keys.secret, 'POST', '/v1/threads', { type: 'dm', members: ['bob'] }, 'ann');
    assert.equal(dm.status, 200, dm.text);
    assert.equal(dm.body.id, 'dm-ann-bob');

    // Importing the same file again writes nothing.
    const again = await importInto(b.keys.admin, text);
    assert.deepEqual(again.body, { threads: 5, events_imported: 0, events_skipped: end.events, complete: true });
    assert.deepEqual(body(await exportOf(b.keys.admin)), body(text));
  });

  test('an export resumes at a thread and seq', async () => {
    const full = body(await exportOf(a.keys.admin));
    const resumed = body(await exportOf(a.keys.admin, '?after_thread=general&after_seq=7'));
    const at = full.findIndex((l) => l.kind === 'thread' && l.id === 'general');
    assert.deepEqual(resumed[0], full[at], 'it starts with the thread line again');
    const rest = full.slice(at + 1).filter((l) => !(l.kind === 'event' && l.thread_id === 'general' && l.seq <= 7));
    assert.deepEqual(resumed.slice(1, -1), rest.slice(0, -1));
    assert.equal(resumed[1].seq, 8);
    const bad = await call(a.keys.admin, 'GET', '/v1/admin/export?after_seq=3');
    assert.equal(bad.status, 400);
  });

  test('bad import input is a 4xx that says what to fix, and changes nothing', async () => {
    const c = await t.project('strict');
    const thread = JSON.stringify({
      kind: 'thread',
      id: 'x',
      type: 'group',
      created_at: '2020-01-01T00:00:00.000000Z',
      last_seq: 2,
    });
    const ev = (seq: number, extra: Record<string, unknown> = {}) =>
      JSON.stringify({
        kind: 'event',
        thread_id: 'x',
        seq,
        type: 'message.created',
        message_id: `m${seq}`,
        actor: 'ann',
        data: { id: `m${seq}`, author: 'ann', body: 'hi', version: 1 },
        created_at: '2020-01-01T00:00:01.000000Z',
        ...extra,
      });
    const cases: Array<[string, number, RegExp]> = [
      ['{not json', 400, /Line 1 is not valid JSON/],
      [`${thread}\n${ev(1, { seq: 'one' })}`, 400, /line 2\.seq/],
      [`${ev(1)}`, 400, /must follow that thread's line/],
      [`${thread}\n${ev(2)}`, 422, /continues at seq 1, but the next event is seq 2/],
      [`${thread}\n${ev(1, { created_at: 'yesterday' })}`, 400, /RFC 3339/],
      [`${thread}\n${ev(1, { data: { body: 'no author' }, actor: null })}`, 422, /needs data\.author/],
    ];
    for (const [text, status, message] of cases) {
      const r = await importInto(c.keys.admin, text);
      assert.equal(r.status, status, `${text}: ${r.text}`);
      assert.match(r.body.detail, message);
    }
    const wrongType = await api(t.url, 'POST', '/v1/admin/import', { key: c.keys.admin, body: { kind: 'export' } });
    assert.equal(wrongType.status, 415);
    assert.equal(Number((await t.db('threads').where({ project_id: c.project_id }).count('* as n'))[0].n), 0);

    // A thread that exists with a different history is not overwritten.
    await call(c.keys.secret, 'POST', '/v1/threads', { id: 'x', type: 'group' }, 'zed');
    const clash = await importInto(c.keys.admin, `${thread}\n${ev(1)}`);
    assert.equal(clash.status, 409, clash.text);
    assert.match(clash.body.detail, /already has a different event at seq 1/);
  });

  test('CLI: export writes the file with progress; an import killed halfway and run again ends with no duplicates', async () => {
    const big = await t.project('big source');
    const MESSAGES = 8_000;
    await seedThread(t.db, {
      projectId: big.project_id,
      threadId: 'big',
      messages: MESSAGES,
      start: new Date(Date.now() - DAY),
      stepMs: 1,
    });
    await call(big.keys.secret, 'POST', '/v1/threads', { id: 'small', type: 'group' }, 'ann');
    const file = path.join(dir, 'big.ndjson');
    const env = { DATABASE_URL: t.databaseUrl };
    const exported = await runCliRaw(['export', '--project', big.project_id, '--out', file], env);
    assert.equal(exported.code, 0, exported.stderr);
    assert.match(exported.stderr, /export .*100% \(8,\d{3}\/8,\d{3} events\)/);
    const text = readFileSync(file, 'utf8');
    assert.deepEqual(body(text), body(await exportOf(big.keys.admin)));

    const target = await t.project('big copy');
    const count = async () =>
      Number((await t.db('events').where({ project_id: target.project_id }).count('* as n'))[0].n);
    // Start the import and kill -9 it once part of it has committed.
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'src/cli.ts', 'import', '--project', target.project_id, '--file', file],
      { cwd: repoRoot, env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env }, stdio: 'ignore' },
    );
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const deadline = Date.now() + 60_000;
    while ((await count()) < 1_000) {
      assert.ok(Date.now() < deadline, 'the import started');
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGKILL');
    await exited;
    const partial = await count();
    assert.ok(partial > 0 && partial < MESSAGES, `killed halfway (${partial} events)`);

    const resumed = await runCli<{ events_imported: number; events_skipped: number; complete: boolean }>(
      ['import', '--project', target.project_id, '--file', file, '--json'],
      env,
    );
    assert.equal(resumed.complete, true);
    assert.equal(resumed.events_skipped, partial);
    assert.equal(resumed.events_imported + resumed.events_skipped, MESSAGES + 2 + 2);
    assert.deepEqual(body(await exportOf(target.keys.admin)), body(text));
    const dupes = await t.db.raw(
      `select count(*)::int as n from (select id from messages where project_id = ? group by thread_id, id having count(*) > 1) d`,
      [target.project_id],
    );
    assert.equal(dupes.rows[0].n, 0);
    assert.equal(
      Number((await t.db('messages').where({ project_id: target.project_id }).count('* as n'))[0].n),
      MESSAGES,
    );
  });
});

async function runCliRaw(args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  return { code, stdout, stderr };
}
