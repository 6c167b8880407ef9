import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createDb } from '../src/lib/db';
import { createLogger } from '../src/lib/logger';
import { createEmbeddedKms } from '../src/modules/kms/embedded-kms';
import { createTestDatabase } from './helpers/db';
import { attempt, sleep, type Attempt } from './helpers/load';
import { runCli, spawnReplica, type Replica } from './helpers/processes';
import { as, openSse } from './realtime-clients';

const MASTER = Buffer.alloc(32, 9).toString('base64');
const ERASED = { $erased: 'key_destroyed' };
const THREADS = 8;

describe('encryption across two replicas: rotation under load, shredding everywhere', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let a: Replica;
  let b: Replica;
  let creds: { project_id: string; keys: { secret: string; admin: string } };
  const env = () => ({
    DATABASE_URL: database.url,
    KMS_MASTER_KEY: MASTER,
    KEY_ROTATION_GRACE_MS: '1500',
    KEY_ROTATION_BATCH: '3',
  });

  before(async () => {
    database = await createTestDatabase();
    creds = await runCli(['project', 'create', '--name', 'enc replicas', '--json'], { DATABASE_URL: database.url });
    const db = createDb(database.url, 1);
    await db('projects')
      .where({ id: creds.project_id })
      .update({ settings: JSON.stringify({ encrypted_fields: ['body.text'] }) });
    await db.destroy();
    [a, b] = await Promise.all([spawnReplica('A', env()), spawnReplica('B', env())]);
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await database?.drop();
  });

  const auth = () => as(creds.keys.secret);
  const admin = () => as(creds.keys.admin);

  test('rotation while both replicas append and read: zero errors, every value readable, every key on the new KEK version', async () => {
    const expected = new Map<string, string>();
    const errors: string[] = [];
    const fail = (what: string, r: Attempt) => errors.push(`${what} on ${r.replica}: ${r.status} ${r.text ?? ''}`);
    for (let i = 0; i < THREADS; i++) {
      const r = await attempt(a, 'POST', `/v1/threads/rot-${i}/messages`, {
        headers: auth(),
        body: { id: `seed-${i}`, author: 'u', body: { text: `rot-secret-seed-${i}` } },
      });
      assert.equal(r.status, 201, r.text);
      expected.set(`rot-${i}/seed-${i}`, `rot-secret-seed-${i}`);
    }

    let running = true;
    let writes = 0;
    let reads = 0;
    const writer = async (w: number) => {
      for (let i = 0; running; i++) {
        const replica = (w + i) % 2 ? a : b;
        const thread = i % 7 === 6 ? `rot-new-${w}-${i}` : `rot-${(w * 3 + i) % THREADS}`;
        const id = `w${w}-${i}`;
        const r = await attempt(replica, 'POST', `/v1/threads/${thread}/messages`, {
          headers: auth(),
          body: { id, author: 'u', body: { text: `rot-secret-${id}` } },
        });
        if (r.status !== 201 || r.body.body.text !== `rot-secret-${id}`) fail('append', r);
        else expected.set(`${thread}/${id}`, `rot-secret-${id}`);
        writes++;
      }
    };
    const reader = async (k: number) => {
      for (let i = 0; running; i++) {
        const replica = (k + i) % 2 ? a : b;
        const r = await attempt(replica, 'GET', `/v1/threads/rot-${i % THREADS}/messages?limit=50`, {
          headers: auth(),
        });
        if (r.status !== 200 || !r.body.data.every((m: { body: { text: unknown } }) => typeof m.body.text === 'string'))
          fail('read', r);
        reads++;
      }
    };
    const load = [...[0, 1, 2, 3].map(writer), ...[0, 1].map(reader)];

    await sleep(500);
    const started = await attempt(a, 'POST', '/v1/admin/encryption/rotate', { headers: admin() });
    assert.equal(started.status, 202, started.text);
    assert.equal(started.body.kek_version, 2);
    const seen: string[] = [];
    let rotation: Attempt;
    for (let i = 0; ; i++) {
      rotation = await attempt(b, 'GET', `/v1/admin/encryption/rotations/${started.body.id}`, { headers: admin() });
      assert.equal(rotation.status, 200, rotation.text);
      seen.push(`${rotation.body.state}:${rotation.body.rewrapped}/${rotation.body.total}`);
      if (rotation.body.state !== 'running') break;
      assert.ok(i < 300, 'rotation finishes');
      await sleep(50);
    }
    await sleep(300);
    running = false;
    await Promise.all(load);

    assert.deepEqual(errors, [], 'no request failed during the rotation');
    assert.ok(writes > 20 && reads > 20, `load ran (${writes} writes, ${reads} reads)`);
    assert.equal(rotation.body.state, 'done', JSON.stringify(rotation.body));
    assert.deepEqual(rotation.body.retired_versions, [1]);
    assert.ok(rotation.body.rewrapped >= THREADS, `progress: ${seen.join(' ')}`);

    const status = await attempt(a, 'GET', '/v1/admin/encryption', { headers: admin() });
    assert.deepEqual(status.body.keys_by_kek_version, { '2': status.body.keys_by_kek_version['2'] });
    assert.deepEqual(
      status.body.kek.versions.map((v: { version: number; state: string }) => [v.version, v.state]),
      [
        [1, 'retired'],
        [2, 'active'],
      ],
    );

    // Every data key unwraps under the new version (checked with the KMS itself, not a replica cache).
    const db = createDb(database.url, 2);
    try {
      const kms = createEmbeddedKms({ db, logger: createLogger('silent'), masterKey: MASTER, keyFile: '/nonexistent' });
      const rows = await db('thread_keys').where({ project_id: creds.project_id }).whereNull('destroyed_at');
      assert.ok(rows.length > THREADS);
      for (const r of rows) {
        assert.equal(r.kek_version, 2);
        const key = await kms.unwrap(
          { kek_id: r.kek_id, kek_version: r.kek_version, wrapped: r.wrapped_dek },
          `${r.project_id}/${r.thread_id}/${r.dek_id}`,
        );
        assert.equal(key.length, 32);
      }
    } finally {
      await db.destroy();
    }

    // Every value written before, during and after the rotation reads back, on both replicas.
    for (const replica of [a, b]) {
      const threads = new Set([...expected.keys()].map((k) => k.split('/')[0]));
      for (const thread of threads) {
        const page = await attempt(replica, 'GET', `/v1/threads/${thread}/messages?limit=200`, { headers: auth() });
        assert.equal(page.status, 200, page.text);
        for (const m of page.body.data as Array<{ id: string; body: { text: string } }>)
          assert.equal(m.body.text, expected.get(`${thread}/${m.id}`));
        assert.equal(page.body.data.length, [...expected.keys()].filter((k) => k.startsWith(`${thread}/`)).length);
      }
    }

    // The CLI rotates too (and retires version 2 once nothing uses it).
    const cli = await runCli<{ state: string; kek_version: number; retired_versions: number[] }>(
      ['encryption', 'rotate', '--project', creds.project_id, '--json'],
      { ...env(), KEY_ROTATION_GRACE_MS: '1200' },
    );
    assert.equal(cli.state, 'done');
    assert.equal(cli.kek_version, 3);
    assert.deepEqual(cli.retired_versions, [2]);
    const r = await attempt(b, 'GET', '/v1/threads/rot-1/messages/seed-1', { headers: auth() });
    assert.equal(r.body.body.text, 'rot-secret-seed-1');
  });

  test('destroying a thread key on one replica makes its values unreadable on every read path of every replica; other threads untouched', async () => {
    for (const [thread, text] of [
      ['gone', 'shred-secret-1'],
      ['gone', 'shred-secret-2'],
      ['stays', 'kept-secret'],
    ])
      assert.equal(
        (
          await attempt(a, 'POST', `/v1/threads/${thread}/messages`, {
            headers: auth(),
            body: { author: 'u', body: { text } },
          })
        ).status,
        201,
      );
    // B caches the thread key and has a live subscriber.
    const warm = await attempt(b, 'GET', '/v1/threads/gone/messages', { headers: auth() });
    assert.equal(warm.body.data[0].body.text, 'shred-secret-1');
    const sse = await openSse(`${b.url}/v1/threads/gone/tail?after_seq=0`, auth());
    await sse.waitForEvents(3);

    const shred = await attempt(a, 'DELETE', '/v1/admin/threads/gone/keys', { headers: admin() });
    assert.equal(shred.status, 200, shred.text);
    const live = await sse.waitForEvents(4);
    assert.equal(live[3].type, 'keys.destroyed');
    sse.close();

    for (const replica of [a, b]) {
      const paths = [
        ['/v1/threads/gone/messages', (x: any) => x.data.map((m: any) => m.body.text)],
        [
          '/v1/threads/gone/events',
          (x: any) => x.data.filter((e: any) => e.message_id).map((e: any) => e.data.body.text),
        ],
      ] as const;
      for (const [path, texts] of paths) {
        let got: unknown;
        for (let i = 0; i < 40; i++) {
          const r = await attempt(replica, 'GET', path, { headers: auth() });
          assert.equal(r.status, 200, r.text);
          got = texts(r.body);
          if (JSON.stringify(got) === JSON.stringify([ERASED, ERASED])) break;
          await sleep(50);
        }
        assert.deepEqual(got, [ERASED, ERASED], `${path} on ${replica.name}`);
      }
      const page = await attempt(replica, 'GET', '/v1/threads/gone/messages', { headers: auth() });
      const first = page.body.data[0];
      for (const path of [`/v1/threads/gone/messages/${first.id}`, `/v1/threads/gone/messages/${first.id}/versions`]) {
        const r = await attempt(replica, 'GET', path, { headers: auth() });
        assert.doesNotMatch(r.text ?? '', /shred-secret/, `${path} on ${replica.name}`);
        assert.match(r.text ?? '', /key_destroyed/);
      }
      assert.deepEqual(
        page.body.data.map((m: { seq: number; author: string }) => [m.seq, m.author]),
        [
          [2, 'u'],
          [3, 'u'],
        ],
        'seqs and authors stay',
      );
      const sseAfter = await openSse(`${replica.url}/v1/threads/gone/tail?after_seq=0`, auth());
      const replayed = await sseAfter.waitForEvents(4);
      assert.deepEqual(replayed[1].data.body.text, ERASED);
      sseAfter.close();
      const kept = await attempt(replica, 'GET', '/v1/threads/stays/messages', { headers: auth() });
      assert.equal(kept.body.data[0].body.text, 'kept-secret');
    }
  });
});
