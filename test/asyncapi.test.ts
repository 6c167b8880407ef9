import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Parser } from '@asyncapi/parser';
import { signUserId } from '../src/modules/keys/key-auth-service';
import type { ProjectCredentials } from '../src/modules/projects/projects-service';
import { serverFrames } from '../src/modules/realtime/asyncapi';
import { api, startTestApp, type TestContext } from './helpers/app';
import { openSse, openWs } from './realtime-clients';

/** GET /asyncapi.json: the WebSocket and SSE protocols, machine-readable and true to what is sent. */
describe('AsyncAPI document of the realtime protocols', () => {
  let t: TestContext;
  let p: ProjectCredentials;
  let doc: any;
  before(async () => {
    t = await startTestApp();
    p = await t.project();
    const r = await api(t.url, 'GET', '/asyncapi.json');
    assert.equal(r.status, 200, r.text);
    doc = r.body;
  });
  after(() => t.stop());

  test('is a valid AsyncAPI 3 document (official parser: no errors, no warnings)', async () => {
    const { document, diagnostics } = await new Parser().parse(JSON.stringify(doc));
    const serious = diagnostics.filter((d) => d.severity <= 1);
    assert.deepEqual(
      serious.map((d) => `${d.code} ${d.message} at ${d.path.join('.')}`),
      [],
    );
    assert.ok(document, 'parsed');
    assert.deepEqual(
      document
        .channels()
        .all()
        .map((c) => c.address())
        .sort(),
      ['/v1/threads/{thread_id}/tail', '/v1/ws'],
    );
    assert.equal(new URL(t.url).host, doc.servers.ws.host, 'the server is the host that was asked');
  });

  test('documents every frame, including send → ack | error', () => {
    const names = (where: string) =>
      Object.values<any>(doc.channels[where].messages).map((m) => m.$ref.split('/').pop() as string);
    const ws = names('ws');
    for (const n of ['subscribe', 'unsubscribe', 'typing', 'read', 'ping', 'send'])
      assert.ok(ws.includes(`client.${n}`), `client ${n}`);
    for (const n of Object.keys(serverFrames)) assert.ok(ws.includes(`server.${n}`), `server ${n}`);
    for (const n of ['event', 'ready', 'reset', 'reconnect', 'closed'])
      assert.ok(names('tail').includes(`sse.${n}`), n);
    const send = doc.operations.sendMessage;
    assert.equal(send.action, 'send');
    assert.deepEqual(
      send.reply.messages.map((m: any) => m.$ref),
      ['#/channels/ws/messages/server.ack', '#/channels/ws/messages/server.error'],
    );
    const payload = doc.components.messages['client.send'].payload;
    assert.deepEqual([...payload.required].sort(), ['message', 'thread_id', 'type']);
    assert.ok(payload.properties.id, 'the optional request id the ack repeats');
    assert.equal(payload.properties.thread_id.type, 'string', 'typed as the handler validates it');
    assert.ok(payload.properties.message.properties.reply_to, 'the message is a NewMessage');
    assert.ok(doc.components.messages['server.ack'].payload.properties.message.properties.seq);
  });

  test('the frames the server really sends match their documented schemas (no undocumented fields)', async () => {
    const user = (id: string) => ({
      authorization: `Bearer ${p.keys.publishable}`,
      'x-user-id': id,
      'x-user-signature': signUserId(p.signing_secret, id),
    });
    await api(t.url, 'POST', '/v1/threads', {
      key: p.keys.secret,
      body: { id: 'aa', type: 'group', members: ['ann', 'bob'] },
    });
    const wsUrl = t.url.replace(/^http/, 'ws') + '/v1/ws';
    const ann = await openWs(wsUrl, user('ann'));
    const bob = await openWs(wsUrl, user('bob'));
    const sse = await openSse(`${t.url}/v1/threads/aa/tail?after_seq=0`, user('bob'));
    try {
      for (const c of [ann, bob]) c.send({ type: 'subscribe', thread_id: 'aa', after_seq: 0, id: 's1' });
      await ann.waitFor((m) => m.type === 'ready', 'ready');
      await bob.waitFor((m) => m.type === 'ready', 'ready');
      ann.send({ type: 'typing', thread_id: 'aa', state: 'start' });
      await bob.waitFor((m) => m.type === 'typing', 'typing');
      await api(t.url, 'POST', '/v1/threads/aa/messages', {
        ...{ key: p.keys.secret },
        user: 'ann',
        body: { body: 'hi' },
      });
      await ann.waitFor((m) => m.type === 'event' && m.event.type === 'message.created', 'event');
      ann.send({ type: 'read', thread_id: 'aa', seq: 1, id: 'r1' });
      await ann.waitFor((m) => m.type === 'read.ok', 'read.ok');
      ann.send({ type: 'ping', id: 'p1' });
      await ann.waitFor((m) => m.type === 'pong', 'pong');
      ann.send({ type: 'subscribe', thread_id: 'nope', id: 's2' });
      await ann.waitFor((m) => m.type === 'error', 'error');
      ann.send({ type: 'unsubscribe', thread_id: 'aa', id: 'u1' });
      await ann.waitFor((m) => m.type === 'unsubscribed', 'unsubscribed');
      await sse.waitForEvents(2);
      const seen = new Set<string>();
      for (const frame of [...ann.messages, ...bob.messages]) {
        const schema = (serverFrames as Record<string, any>)[frame.type];
        assert.ok(schema, `frame type ${frame.type} is documented`);
        const r = schema.strict().safeParse(frame);
        assert.ok(r.success, `${frame.type}: ${JSON.stringify(frame)} ${r.error?.message}`);
        seen.add(frame.type);
      }
      for (const type of [
        'welcome',
        'subscribed',
        'ready',
        'event',
        'typing',
        'read.ok',
        'pong',
        'error',
        'unsubscribed',
      ])
        assert.ok(seen.has(type), `saw ${type}`);
      // SSE: named events carry the documented data.
      const ready = sse.messages.find((m) => m.event === 'ready');
      assert.ok(ready);
      const readyProps = doc.components.messages['sse.ready'].payload.properties;
      for (const k of Object.keys(JSON.parse(ready.data))) assert.ok(k in readyProps, `sse ready: ${k}`);
      for (const e of sse.events())
        for (const k of Object.keys(e)) assert.ok(k in doc.components.messages['sse.event'].payload.properties, k);
    } finally {
      ann.close();
      bob.close();
      sse.close();
    }
  });
});
