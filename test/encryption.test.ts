import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { api, startTestApp, type TestContext } from './helpers/app';
import { signInThroughProvider, startOAuthProvider } from './helpers/oauth-provider';
import { as, openSse, openWs } from './realtime-clients';

const MASTER = Buffer.alloc(32, 7).toString('base64');
const ERASED = { $erased: 'key_destroyed' };

/** A superuser connection that bypasses the append-only triggers: the attacker with database access. */
async function asAttacker<T>(url: string, run: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query('set session_replication_role = replica');
    return await run(c);
  } finally {
    await c.end();
  }
}

/** Flips one character of the base64 payload of an envelope (one byte of nonce/ciphertext/tag changes). */
function tamper(envelope: string): string {
  const i = envelope.length - 5;
  return envelope.slice(0, i) + (envelope[i] === 'A' ? 'B' : 'A') + envelope.slice(i + 1);
}

describe('field-level encryption (embedded KMS)', () => {
  let t: TestContext;
  let provider: Awaited<ReturnType<typeof startOAuthProvider>>;

  before(async () => {
    provider = await startOAuthProvider();
    t = await startTestApp({ ...provider.env, KMS_MASTER_KEY: MASTER });
  });
  after(async () => {
    await t.stop();
    await provider.stop();
  });

  const encrypting = (fields = ['body.text', 'body.attachments.*.url']) =>
    t.app.projects.createProject({ name: 'enc', settings: { encrypted_fields: fields } });

  test('encrypted_fields is set through the management API and validated: bad paths are a 400 saying what to fix', async () => {
    provider.signInAs({ sub: 'g-enc', name: 'Enc', email: 'enc@example.com' });
    const { cookies } = await signInThroughProvider(t.url);
    const dev = (method: string, path: string, body?: unknown) =>
      api(t.url, method, path, { body, headers: { authorization: `Bearer ${cookies.pdb_session}` } });
    const pid = (await dev('POST', '/v1/projects', { name: 'secure' })).body.id;
    const bad = await dev('PATCH', `/v1/projects/${pid}`, {
      settings: { encrypted_fields: ['text', 'body.a b', 'body.text', 'body.text.inner', 'body.x'] },
    });
    assert.equal(bad.status, 400, bad.text);
    assert.equal(bad.headers.get('content-type'), 'application/problem+json; charset=utf-8');
    const errs = bad.body.errors as Array<{ path: string; message: string }>;
    assert.deepEqual(
      errs.map((e) => e.path),
      ['body.settings.encrypted_fields.0', 'body.settings.encrypted_fields.1', 'body.settings.encrypted_fields.3'],
    );
    assert.match(errs[0].message, /body\.text or body\.attachments\.\*\.url/);
    assert.match(errs[2].message, /already covered by "body\.text"/);
    const unchanged = await dev('GET', `/v1/projects/${pid}`);
    assert.equal(unchanged.body.settings.encrypted_fields, undefined);

    const ok = await dev('PATCH', `/v1/projects/${pid}`, {
      settings: { encrypted_fields: ['body.text', 'body.attachments.*.url'] },
    });
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.body.settings.encrypted_fields, ['body.text', 'body.attachments.*.url']);
    const whole = await dev('PATCH', `/v1/projects/${pid}`, { settings: { encrypted_fields: ['*'] } });
    assert.equal(whole.status, 200, whole.text);
  });

  test('raw rows hold no plaintext of encrypted paths; every read path returns plaintext; other paths are stored as sent', async () => {
    const p = await encrypting();
    const sk = p.keys.secret;
    const body = {
      text: 'plain-secret-alpha',
      attachments: [
        { url: 'https://files.example/plain-secret-url-1', name: 'kept-name-1' },
        { url: 'https://files.example/plain-secret-url-2', name: 'kept-name-2' },
      ],
      meta: { lang: 'kept-lang' },
    };
    const created = await api(t.url, 'POST', '/v1/threads/t-raw/messages', {
      key: sk,
      body: { id: 'm1', author: 'ann', body },
    });
    assert.equal(created.status, 201, created.text);
    assert.deepEqual(created.body.body, body);
    const sse = await openSse(`${t.url}/v1/threads/t-raw/tail?after_seq=0`, as(sk));
    const ws = await openWs(`${t.url.replace('http', 'ws')}/v1/ws`, as(sk));
    ws.send({ type: 'subscribe', thread_id: 't-raw', after_seq: 0, id: 's' });

    const edited = await api(t.url, 'PATCH', '/v1/threads/t-raw/messages/m1', {
      key: sk,
      body: { body: { text: 'plain-secret-beta', meta: { lang: 'kept-lang' } } },
    });
    assert.equal(edited.status, 200, edited.text);
    assert.equal(edited.body.body.text, 'plain-secret-beta');
    const idem = { 'idempotency-key': 'idem-1' };
    const first = await api(t.url, 'POST', '/v1/threads/t-raw/messages', {
      key: sk,
      headers: idem,
      body: { author: 'bob', body: { text: 'plain-secret-gamma' } },
    });
    assert.equal(first.status, 201, first.text);
    const replay = await api(t.url, 'POST', '/v1/threads/t-raw/messages', {
      key: sk,
      headers: idem,
      body: { author: 'bob', body: { text: 'plain-secret-gamma' } },
    });
    assert.equal(replay.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(replay.body, first.body);
    const retried = await api(t.url, 'POST', '/v1/threads/t-raw/messages', {
      key: sk,
      body: { id: 'm1', author: 'ann', body },
    });
    assert.equal(retried.status, 201, retried.text);
    assert.deepEqual(retried.body.body, body, 'a client-id retry replays the first (decrypted) result');
    const conflicting = await api(t.url, 'POST', '/v1/threads/t-raw/messages', {
      key: sk,
      body: { id: 'm1', author: 'ann', body: { text: 'other' } },
    });
    assert.equal(conflicting.status, 409);

    // The rows, as PostgreSQL holds them.
    const raw = await t.db.raw(
      `select (select string_agg(data::text, ' ') from events where project_id = :p) as events,
              (select string_agg(body::text, ' ') from messages where project_id = :p) as messages,
              (select string_agg(response::text, ' ') from idempotency_keys where project_id = :p) as idem`,
      { p: p.project_id },
    );
    const stored = raw.rows[0] as Record<string, string>;
    for (const [table, text] of Object.entries(stored)) {
      assert.ok(text, `${table} has rows`);
      assert.doesNotMatch(text, /plain-secret/, `${table} holds no plaintext of encrypted paths`);
      assert.match(text, /pdbenc:v1:dek_/, `${table} holds envelopes`);
    }
    assert.match(stored.events, /kept-name-1/);
    assert.match(stored.events, /kept-lang/);
    assert.match(stored.messages, /kept-lang/);

    // Every read path answers plaintext.
    const page = await api(t.url, 'GET', '/v1/threads/t-raw/messages', { key: sk });
    assert.deepEqual(
      page.body.data.map((m: { body: { text: string } }) => m.body.text),
      ['plain-secret-beta', 'plain-secret-gamma'],
    );
    const text = await api(t.url, 'GET', '/v1/threads/t-raw/messages', { key: sk, headers: { accept: 'text/plain' } });
    assert.match(text.text, /#2 ann: plain-secret-beta/);
    const one = await api(t.url, 'GET', '/v1/threads/t-raw/messages/m1', { key: sk });
    assert.deepEqual(one.body.body, { text: 'plain-secret-beta', meta: { lang: 'kept-lang' } });
    const versions = await api(t.url, 'GET', '/v1/threads/t-raw/messages/m1/versions', { key: sk });
    assert.deepEqual(versions.body.data[0].body, body);
    assert.equal(versions.body.data[1].body.text, 'plain-secret-beta');
    const events = await api(t.url, 'GET', '/v1/threads/t-raw/events', { key: sk });
    const bodies = events.body.data
      .filter((e: { message_id: string | null }) => e.message_id)
      .map((e: any) => e.data.body);
    assert.deepEqual(bodies[0], body);
    assert.equal(bodies[1].text, 'plain-secret-beta');
    const live = await sse.waitForEvents(4);
    assert.deepEqual(live[1].data.body, body);
    assert.equal(live[2].data.body.text, 'plain-secret-beta');
    assert.equal(live[3].data.body.text, 'plain-secret-gamma');
    const wsEvents = await ws.waitForEvents('t-raw', 4);
    assert.equal(wsEvents[3].data.body.text, 'plain-secret-gamma');
    sse.close();
    ws.close();
  });

  test('the setting applies to messages written after it; earlier ones stay as written and readable', async () => {
    const p = await t.app.projects.createProject({ name: 'later' });
    const sk = p.keys.secret;
    await api(t.url, 'POST', '/v1/threads/t-later/messages', {
      key: sk,
      body: { id: 'before', author: 'a', body: { text: 'written-before' } },
    });
    await t
      .db('projects')
      .where({ id: p.project_id })
      .update({ settings: JSON.stringify({ encrypted_fields: ['*'] }) });
    t.app.keyAuth.invalidate(p.project_id);
    const r = await api(t.url, 'POST', '/v1/threads/t-later/messages', {
      key: sk,
      body: { id: 'after', author: 'a', body: { text: 'written-after', n: 3 } },
    });
    assert.equal(r.status, 201, r.text);
    const rows = await t.db('messages').select('id', 'body').where({ project_id: p.project_id }).orderBy('seq');
    assert.deepEqual(rows[0].body, { text: 'written-before' });
    assert.match(rows[1].body as string, /^pdbenc:v1:/, 'the whole body is one envelope');
    const page = await api(t.url, 'GET', '/v1/threads/t-later/messages', { key: sk });
    assert.deepEqual(
      page.body.data.map((m: { body: unknown }) => m.body),
      [{ text: 'written-before' }, { text: 'written-after', n: 3 }],
    );
  });

  test('a client may not send a string that looks like a ciphertext', async () => {
    const p = await t.app.projects.createProject({ name: 'plain' });
    const r = await api(t.url, 'POST', '/v1/threads/t-forge/messages', {
      key: p.keys.secret,
      body: { author: 'a', body: { note: 'pdbenc:v1:dek_x:AAAA' } },
    });
    assert.equal(r.status, 400, r.text);
    assert.match(r.body.detail, /reserved for encrypted values/);
  });

  test('one altered byte of a stored ciphertext fails that read with a clear problem; a ciphertext copied to another message fails too', async () => {
    const p = await encrypting();
    const sk = p.keys.secret;
    for (const id of ['a', 'b', 'c'])
      await api(t.url, 'POST', '/v1/threads/t-tamper/messages', {
        key: sk,
        body: { id, author: 'x', body: { text: `secret-${id}` } },
      });
    await asAttacker(t.databaseUrl, async (c) => {
      const { rows } = await c.query(
        `select id, body->>'text' as text from messages where project_id = $1 order by seq`,
        [p.project_id],
      );
      const [a, b] = rows as Array<{ id: string; text: string }>;
      await c.query(
        `update messages set body = jsonb_set(body, '{text}', to_jsonb($3::text)) where project_id = $1 and id = $2`,
        [p.project_id, 'a', tamper(a.text)],
      );
      await c.query(
        `update events set data = jsonb_set(data, '{body,text}', to_jsonb($3::text)) where project_id = $1 and message_id = $2`,
        [p.project_id, 'a', tamper(a.text)],
      );
      // b's ciphertext copied into c: same thread, same key, other message.
      await c.query(
        `update messages set body = jsonb_set(body, '{text}', to_jsonb($3::text)) where project_id = $1 and id = $2`,
        [p.project_id, 'c', b.text],
      );
    });
    for (const path of [
      '/v1/threads/t-tamper/messages/a',
      '/v1/threads/t-tamper/messages',
      '/v1/threads/t-tamper/events',
      '/v1/threads/t-tamper/messages/c',
    ]) {
      const r = await api(t.url, 'GET', path, { key: sk });
      assert.equal(r.status, 500, `${path}: ${r.text}`);
      assert.equal(r.headers.get('content-type'), 'application/problem+json; charset=utf-8');
      assert.equal(r.body.type, 'https://progressdb.dev/problems/integrity-check-failed');
      assert.match(r.body.detail, /failed its integrity check/);
      assert.doesNotMatch(r.text, /secret-/);
    }
    const b = await api(t.url, 'GET', '/v1/threads/t-tamper/messages/b', { key: sk });
    assert.equal(b.body.body.text, 'secret-b', 'untouched messages still read');
    // A live tail cannot answer an error mid-stream: the value is marked, never garbage.
    const sse = await openSse(`${t.url}/v1/threads/t-tamper/tail?after_seq=0`, as(sk));
    const live = await sse.waitForEvents(4);
    assert.deepEqual(live[1].data.body.text, { $unreadable: 'integrity_check_failed' });
    assert.equal(live[2].data.body.text, 'secret-b');
    sse.close();
  });

  test('a ciphertext copied into another project or thread fails to decrypt', async () => {
    const p = await encrypting();
    const sk = p.keys.secret;
    await api(t.url, 'POST', '/v1/threads/t-src/messages', {
      key: sk,
      body: { id: 'm', author: 'x', body: { text: 'moving-secret' } },
    });
    await api(t.url, 'POST', '/v1/threads/t-dst/messages', {
      key: sk,
      body: { id: 'm', author: 'x', body: { text: 'other' } },
    });
    await asAttacker(t.databaseUrl, async (c) => {
      const { rows } = await c.query(
        `select body->>'text' as text from messages where project_id = $1 and thread_id = 't-src'`,
        [p.project_id],
      );
      await c.query(
        `update messages set body = jsonb_set(body, '{text}', to_jsonb($2::text)) where project_id = $1 and thread_id = 't-dst'`,
        [p.project_id, rows[0].text],
      );
    });
    const r = await api(t.url, 'GET', '/v1/threads/t-dst/messages/m', { key: sk });
    assert.equal(r.status, 500, r.text);
    assert.equal(r.body.type, 'https://progressdb.dev/problems/integrity-check-failed');
  });

  test('an export carries plaintext (as /events shows it); an import is sealed per the target project; ciphertext imports are refused', async () => {
    const src = await encrypting(['body.text']);
    await api(t.url, 'POST', '/v1/threads/t-exp/messages', {
      key: src.keys.secret,
      body: { id: 'm', author: 'ann', body: { text: 'exported-secret', n: 1 } },
    });
    const res = await fetch(`${t.url}/v1/admin/export`, { headers: { authorization: `Bearer ${src.keys.admin}` } });
    const exported = { status: res.status, text: await res.text() };
    assert.equal(exported.status, 200, exported.text);
    assert.match(exported.text, /exported-secret/);
    assert.doesNotMatch(exported.text, /pdbenc:/);

    const dst = await encrypting(['body.text']);
    const imported = await api(t.url, 'POST', '/v1/admin/import', {
      key: dst.keys.admin,
      raw: exported.text,
      contentType: 'application/x-ndjson',
    });
    assert.equal(imported.status, 200, imported.text);
    const raw = await t
      .db('events')
      .select(t.db.raw('data::text as d'))
      .where({ project_id: dst.project_id, message_id: 'm' });
    assert.doesNotMatch(raw[0].d as string, /exported-secret/);
    const read = await api(t.url, 'GET', '/v1/threads/t-exp/messages/m', { key: dst.keys.secret });
    assert.deepEqual(read.body.body, { text: 'exported-secret', n: 1 });

    const forged = exported.text.replace('exported-secret', 'pdbenc:v1:dek_x:AAAA');
    const other = await t.app.projects.createProject({ name: 'forged import' });
    const refused = await api(t.url, 'POST', '/v1/admin/import', {
      key: other.keys.admin,
      raw: forged,
      contentType: 'application/x-ndjson',
    });
    assert.equal(refused.status, 400, refused.text);
    assert.match(refused.body.detail, /ciphertext/);
  });

  test('destroying a thread key erases its encrypted values on every read path; structure and other threads stay', async () => {
    const p = await encrypting(['body.text']);
    const sk = p.keys.secret;
    await api(t.url, 'POST', '/v1/threads/t-shred/messages', {
      key: sk,
      body: { id: 'm', author: 'ann', body: { text: 'to-forget', n: 1 } },
    });
    await api(t.url, 'PATCH', '/v1/threads/t-shred/messages/m', {
      key: sk,
      body: { body: { text: 'to-forget-2', n: 2 } },
    });
    await api(t.url, 'POST', '/v1/threads/t-keep/messages', {
      key: sk,
      body: { id: 'k', author: 'ann', body: { text: 'kept' } },
    });
    // The decrypted newest page is kept by the page cache (briefly: PAGE_CACHE_SEALED_TTL_MS)…
    const hits = () => t.app.metrics.registry.getSingleMetricAsString('progressdb_page_cache_hits_total');
    const hitCount = async () => Number(/ (\d+)$/m.exec(await hits())?.[1] ?? 0);
    const before = await hitCount();
    for (let i = 0; i < 2; i++) {
      const cached = await api(t.url, 'GET', '/v1/threads/t-shred/messages', { key: sk });
      assert.equal(cached.body.data[0].body.text, 'to-forget-2');
    }
    assert.equal((await hitCount()) - before, 1, 'the second read of the decrypted page came from memory');
    const denied = await api(t.url, 'DELETE', '/v1/admin/threads/t-shred/keys', { key: sk });
    assert.equal(denied.status, 403, 'admin keys only');
    const shred = await api(t.url, 'DELETE', '/v1/admin/threads/t-shred/keys', { key: p.keys.admin });
    assert.equal(shred.status, 200, shred.text);
    assert.equal(shred.body.destroyed_keys.length, 1);
    assert.equal(shred.body.seq, 4);
    const missing = await api(t.url, 'DELETE', '/v1/admin/threads/nope/keys', { key: p.keys.admin });
    assert.equal(missing.status, 404);

    // …and shredding is seen at once: it moved the thread's last_seq, so the cached page is not served.
    const shreddedPage = await api(t.url, 'GET', '/v1/threads/t-shred/messages', { key: sk });
    assert.deepEqual(shreddedPage.body.data[0].body, { text: ERASED, n: 2 });
    const one = await api(t.url, 'GET', '/v1/threads/t-shred/messages/m', { key: sk });
    assert.equal(one.status, 200);
    assert.deepEqual(one.body.body, { text: ERASED, n: 2 });
    assert.equal(one.body.author, 'ann');
    const versions = await api(t.url, 'GET', '/v1/threads/t-shred/messages/m/versions', { key: sk });
    assert.deepEqual(
      versions.body.data.map((v: { body: { text: unknown } }) => v.body.text),
      [ERASED, ERASED],
    );
    const events = await api(t.url, 'GET', '/v1/threads/t-shred/events', { key: sk });
    assert.deepEqual(
      events.body.data.map((e: { seq: number; type: string }) => [e.seq, e.type]),
      [
        [1, 'thread.created'],
        [2, 'message.created'],
        [3, 'message.edited'],
        [4, 'keys.destroyed'],
      ],
    );
    assert.deepEqual(events.body.data[1].data.body.text, ERASED);
    const sse = await openSse(`${t.url}/v1/threads/t-shred/tail?after_seq=0`, as(sk));
    const live = await sse.waitForEvents(4);
    assert.deepEqual(live[2].data.body.text, ERASED);
    sse.close();
    const audit = await t.db('encryption_audit').where({ project_id: p.project_id, action: 'keys.destroyed' });
    assert.equal(audit.length, 1);
    assert.equal(audit[0].thread_id, 't-shred');
    const keep = await api(t.url, 'GET', '/v1/threads/t-keep/messages/k', { key: sk });
    assert.equal(keep.body.body.text, 'kept');
    // New messages after the destruction get a new key and read normally.
    const again = await api(t.url, 'POST', '/v1/threads/t-shred/messages', {
      key: sk,
      body: { author: 'ann', body: { text: 'fresh' } },
    });
    assert.equal(again.body.body.text, 'fresh');
    const page = await api(t.url, 'GET', '/v1/threads/t-shred/messages', { key: sk });
    assert.deepEqual(
      page.body.data.map((m: { body: { text: unknown } }) => m.body.text),
      [ERASED, 'fresh'],
    );
  });
});
