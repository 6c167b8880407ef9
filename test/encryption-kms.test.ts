import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { api, startTestApp, type TestContext } from './helpers/app';
import { sleep } from './helpers/load';
import { freePort, repoRoot, spawnKms, type KmsProcess } from './helpers/processes';

describe('external KMS (a real child process)', () => {
  let t: TestContext;
  let kms: KmsProcess;
  let dataDir: string;
  let port: number;
  const token = randomBytes(24).toString('hex');
  const callers = `api=${token},ops=${randomBytes(24).toString('hex')}`;
  const audit = () =>
    readFileSync(path.join(dataDir, 'audit.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);

  before(async () => {
    dataDir = mkdtempSync(path.join(repoRoot, '.test-data', 'kms-'));
    port = await freePort();
    kms = await spawnKms({ port, dataDir, callers });
    t = await startTestApp({
      KMS_MODE: 'external',
      KMS_URL: kms.url,
      KMS_TOKEN: token,
      KMS_HEALTH_INTERVAL_MS: '200',
      KMS_TIMEOUT_MS: '1000',
    });
  });
  after(async () => {
    await t?.stop();
    await kms?.kill9();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('refuses unknown callers, audits every request with caller and key id; the API process holds no KEK', async () => {
    for (const authorization of [`Bearer ${randomBytes(24).toString('hex')}`, '']) {
      const r = await fetch(`${kms.url}/v1/keys/prj_x/wrap`, {
        method: 'POST',
        headers: { authorization, 'content-type': 'application/json' },
        body: JSON.stringify({ plaintext: randomBytes(32).toString('base64'), context: 'x' }),
      });
      assert.equal(r.status, 401);
    }
    const p = await t.app.projects.createProject({ name: 'ext', settings: { encrypted_fields: ['body.text'] } });
    const r = await api(t.url, 'POST', '/v1/threads/t1/messages', {
      key: p.keys.secret,
      body: { author: 'a', body: { text: 'external-secret' } },
    });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.body.text, 'external-secret');
    const lines = audit();
    assert.ok(lines.filter((l) => l.caller === 'unknown' && l.status === 401).length >= 2, 'refusals are audited');
    assert.ok(
      lines.some((l) => l.caller === 'api' && l.op === 'wrap' && l.kek_id === p.project_id && l.version === 1),
      'the wrap is audited with caller, key id and version',
    );
    const keks = await t.db('kms_keks').count({ n: '*' });
    assert.equal(Number(keks[0].n), 0, 'no KEK is stored on the API side');
    const row = await t.db('thread_keys').first().where({ project_id: p.project_id });
    assert.equal(row.kek_id, p.project_id);
    assert.equal(row.kek_version, 1);
  });

  test('KMS stopped mid-load: writes answer 503 + Retry-After, reads go on from cached keys, /readyz says so; after recovery nothing is lost', async () => {
    const p = await t.app.projects.createProject({ name: 'load', settings: { encrypted_fields: ['body.text'] } });
    const sk = p.keys.secret;
    for (let i = 0; i < 3; i++)
      await api(t.url, 'POST', `/v1/threads/warm-${i}/messages`, {
        key: sk,
        body: { author: 'a', body: { text: `warm-${i}` } },
      });

    let acks = 0;
    let unavailable = 0;
    let missingRetryAfter = 0;
    const unexpected: string[] = [];
    const WRITERS = 4;
    const PER_WRITER = 30;
    const writer = async (w: number) => {
      for (let i = 0; i < PER_WRITER; i++) {
        // Existing threads (cached keys) and, every fifth message, a new thread (needs the KMS).
        const thread = i % 5 === 4 ? `new-${w}-${i}` : `warm-${(w + i) % 3}`;
        const id = `w${w}-${i}`;
        for (;;) {
          const r = await api(t.url, 'POST', `/v1/threads/${thread}/messages`, {
            key: sk,
            body: { id, author: 'a', body: { text: `load-secret-${id}` } },
          });
          if (r.status === 201) break;
          if (r.status === 503) {
            unavailable++;
            if (!r.headers.get('retry-after')) missingRetryAfter++;
            await sleep(100);
            continue;
          }
          unexpected.push(`${r.status} ${r.text}`);
          break;
        }
        acks++;
        await sleep(20);
      }
    };
    const outage = async () => {
      while (acks < 20) await sleep(10);
      await kms.kill9();
      // Down: the health probe notices, writes get 503, reads of cached keys go on.
      for (let i = 0; ; i++) {
        const ready = await api(t.url, 'GET', '/readyz');
        if (ready.body.checks.kms === false) {
          assert.equal(ready.status, 200, 'a KMS outage degrades the replica, it does not take it out');
          assert.equal(ready.body.status, 'degraded');
          break;
        }
        assert.ok(i < 100, 'readyz reports the KMS outage');
        await sleep(50);
      }
      const read = await api(t.url, 'GET', '/v1/threads/warm-0/messages', { key: sk });
      assert.equal(read.status, 200, read.text);
      assert.equal(read.body.data[0].body.text, 'warm-0');
      const denied = await api(t.url, 'POST', '/v1/threads/warm-0/messages', {
        key: sk,
        body: { author: 'a', body: { text: 'x-during' } },
      });
      assert.equal(denied.status, 503);
      assert.ok(Number(denied.headers.get('retry-after')) >= 1);
      const plain = await t.app.projects.createProject({ name: 'no encryption' });
      const ok = await api(t.url, 'POST', '/v1/threads/p/messages', {
        key: plain.keys.secret,
        body: { author: 'a', body: { text: 'fine' } },
      });
      assert.equal(ok.status, 201, 'projects without encryption are not affected');
      await sleep(1_000);
      kms = await spawnKms({ port, dataDir, callers });
    };
    await Promise.all([...Array.from({ length: WRITERS }, (_, w) => writer(w)), outage()]);

    assert.deepEqual(unexpected, []);
    assert.ok(unavailable > 0, 'some writes were refused while the KMS was down');
    assert.equal(missingRetryAfter, 0);
    const { rows } = await t.db.raw(
      `select id, body::text as body from messages where project_id = ? and id like 'w%' order by id`,
      [p.project_id],
    );
    assert.equal(rows.length, WRITERS * PER_WRITER, 'every write stored exactly once');
    for (const r of rows as Array<{ body: string }>) assert.doesNotMatch(r.body, /load-secret/);
    for (let w = 0; w < WRITERS; w++) {
      const one = await api(t.url, 'GET', `/v1/threads/new-${w}-4/messages/w${w}-4`, { key: sk });
      assert.equal(one.body.body.text, `load-secret-w${w}-4`);
    }
    const page = await api(t.url, 'GET', '/v1/threads/warm-1/messages?limit=200', { key: sk });
    assert.ok(page.body.data.every((m: { body: { text: string } }) => /^(warm|load-secret)-/.test(m.body.text)));
    for (let i = 0; ; i++) {
      const ready = await api(t.url, 'GET', '/readyz');
      if (ready.body.status === 'ready') break;
      assert.ok(i < 100, 'readyz recovers');
      await sleep(50);
    }
  });
});
