import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { api, startTestApp, type TestContext } from './helpers/app';
import { startReceiver, type Receiver, type Received } from './helpers/webhook-receiver';

const MASTER = Buffer.alloc(32, 9).toString('base64');
const ERASED = { $erased: 'key_destroyed' };

describe('webhooks of an encrypting project: payloads carry the event as /events shows it', () => {
  let t: TestContext;
  let receiver: Receiver;

  before(async () => {
    receiver = await startReceiver();
    t = await startTestApp({
      KMS_MASTER_KEY: MASTER,
      WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true',
      WEBHOOK_POLL_MS: '50',
      WEBHOOK_RETRY_SCHEDULE: '0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3',
      WEBHOOK_RETRY_JITTER: '0',
    });
  });
  after(async () => {
    await t.stop();
    await receiver.close();
  });

  const on = (path: string) => (all: Received[]) => all.filter((r) => r.path === path);
  const verify = (secret: string, r: Received) =>
    new Webhook(secret).verify(r.body, {
      'webhook-id': String(r.headers['webhook-id']),
      'webhook-timestamp': String(r.headers['webhook-timestamp']),
      'webhook-signature': String(r.headers['webhook-signature']),
    }) as any;

  async function encryptingProject(path: string) {
    const p = await t.app.projects.createProject({ name: 'enc-hooks', settings: { encrypted_fields: ['body.text'] } });
    const ep = await t.app.webhooks.service.create(p.project_id, {
      url: receiver.url + path,
      description: '',
      event_types: ['message.created', 'message.edited'],
      thread_ids: null,
    });
    return { id: p.project_id, sk: p.keys.secret, ak: p.keys.admin, secret: ep.secret };
  }

  test('body.text encrypted: the receiver gets plaintext, signed; PostgreSQL (events and the outbox) holds none', async () => {
    const p = await encryptingProject('/enc');
    const texts = ['webhook-plain-alpha', 'webhook-plain-beta'];
    for (const [i, text] of texts.entries()) {
      const r = await api(t.url, 'POST', '/v1/threads/enc-room/messages', {
        key: p.sk,
        body: { id: `m${i}`, author: 'ann', body: { text, n: i } },
      });
      assert.equal(r.status, 201, r.text);
    }
    const edit = await api(t.url, 'PATCH', '/v1/threads/enc-room/messages/m0', {
      key: p.sk,
      body: { body: { text: 'webhook-plain-gamma', n: 9 } },
    });
    assert.equal(edit.status, 200, edit.text);

    const got = on('/enc')(await receiver.until((all) => on('/enc')(all).length >= 3));
    const payloads = got.map((r) => verify(p.secret, r));
    assert.deepEqual(
      payloads.map((x) => [x.type, x.data.data.body]),
      [
        ['message.created', { text: 'webhook-plain-alpha', n: 0 }],
        ['message.created', { text: 'webhook-plain-beta', n: 1 }],
        ['message.edited', { text: 'webhook-plain-gamma', n: 9 }],
      ],
    );
    // Exactly the events as /events shows them (plus project_id and offline members).
    const events = await api(t.url, 'GET', '/v1/threads/enc-room/events', { key: p.sk });
    assert.equal(events.status, 200, events.text);
    const shown = new Map(events.body.data.map((e: { seq: number }) => [e.seq, e]));
    for (const x of payloads) {
      const { project_id, offline_member_ids: _offline, ...event } = x.data;
      assert.equal(project_id, p.id);
      assert.deepEqual(event, shown.get(event.seq));
    }

    // What PostgreSQL holds: ciphertext in the log, and the outbox rows carry no body at all.
    const raw = await t.db.raw(
      `select (select string_agg(data::text, ' ') from events where project_id = :p) as events,
              (select string_agg(to_jsonb(d)::text, ' ') from webhook_deliveries d where project_id = :p) as outbox,
              (select count(*)::int from webhook_deliveries where project_id = :p) as deliveries`,
      { p: p.id },
    );
    const stored = raw.rows[0] as { events: string; outbox: string; deliveries: number };
    assert.equal(stored.deliveries, 3);
    for (const text of [...texts, 'webhook-plain-gamma']) {
      assert.ok(!stored.events.includes(text), `events hold no "${text}"`);
      assert.ok(!stored.outbox.includes(text), `the outbox holds no "${text}"`);
    }
    assert.match(stored.events, /"n": 1/, 'unencrypted paths are stored as sent');
  });

  test('a shredded thread: payloads show the same erased marker /events shows', async () => {
    const p = await encryptingProject('/shred');
    // Held by the receiver until the key is gone: the event is delivered after the shredding.
    let hold = true;
    receiver.answer((r) => (r.path === '/shred' && hold ? { status: 503 } : { status: 204 }));
    try {
      const r = await api(t.url, 'POST', '/v1/threads/shred-room/messages', {
        key: p.sk,
        body: { id: 'm', author: 'ann', body: { text: 'to-be-forgotten', n: 1 } },
      });
      assert.equal(r.status, 201, r.text);
      await receiver.until((all) => on('/shred')(all).length >= 1);
      const shred = await api(t.url, 'DELETE', '/v1/admin/threads/shred-room/keys', { key: p.ak });
      assert.equal(shred.status, 200, shred.text);
      hold = false;
      const got = await receiver.until((all) =>
        on('/shred')(all).some((x) => x.json?.data?.type === 'message.created' && !x.body.includes('to-be')),
      );
      const delivered = on('/shred')(got).filter((x) => !x.body.includes('to-be-forgotten'));
      const payload = verify(p.secret, delivered[0]);
      assert.deepEqual(payload.data.data.body, { text: ERASED, n: 1 });
      const events = await api(t.url, 'GET', '/v1/threads/shred-room/events', { key: p.sk });
      const shown = events.body.data.find((e: { seq: number }) => e.seq === payload.data.seq);
      assert.deepEqual(payload.data.data.body, shown.data.body, 'the same marker as /events');
    } finally {
      receiver.answer(() => ({ status: 204 }));
    }
  });
});
