import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { checkEndpointUrl, isPublicAddress } from '../src/modules/webhooks/safe-target';
import { api, startTestApp, type TestContext } from './helpers/app';
import { signInThroughProvider, startOAuthProvider } from './helpers/oauth-provider';
import { startReceiver, type Receiver } from './helpers/webhook-receiver';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('webhook targets: private networks refused at registration and at send time', () => {
  let provider: Awaited<ReturnType<typeof startOAuthProvider>>;
  let t: TestContext;
  let session: string;
  let receiver: Receiver;
  let projectId: string;
  let sk: string;
  let ak: string;
  const dev = (method: string, path: string, body?: unknown) =>
    api(t.url, method, path, { body, headers: { authorization: `Bearer ${session}` } });

  before(async () => {
    provider = await startOAuthProvider();
    receiver = await startReceiver();
    // No WEBHOOK_ALLOW_PRIVATE_TARGETS: the production default.
    t = await startTestApp({
      ...provider.env,
      WEBHOOK_POLL_MS: '50',
      WEBHOOK_RETRY_SCHEDULE: '0.2,0.2',
      WEBHOOK_RETRY_JITTER: '0',
    });
    provider.signInAs({ sub: 'g-targets', name: 'T', email: 't@example.com' });
    session = (await signInThroughProvider(t.url)).cookies.pdb_session;
    const p = await dev('POST', '/v1/projects', { name: 'targets' });
    projectId = p.body.id;
    sk = (await dev('POST', `/v1/projects/${projectId}/keys`, { kind: 'secret' })).body.key;
    ak = (await dev('POST', `/v1/projects/${projectId}/keys`, { kind: 'admin' })).body.key;
  });
  after(async () => {
    await t.stop();
    await receiver.close();
    await provider.stop();
  });

  test('registration refuses loopback, private, link-local, metadata and names that resolve to them (422 problem+json)', async () => {
    const refused = [
      `http://127.0.0.1:${receiver.port}/hook`,
      'https://127.0.0.1/hook',
      'https://10.1.2.3/hook',
      'https://192.168.0.10/hook',
      'https://172.16.5.4/hook',
      'http://169.254.169.254/latest/meta-data/',
      'https://100.64.0.1/hook',
      'https://0.0.0.0/hook',
      'https://[::1]/hook',
      'https://[fd00:ec2::254]/hook',
      'https://[::ffff:127.0.0.1]/hook',
      'https://2130706433/hook', // 127.0.0.1 as one number
      'https://0x7f.1/hook', // 127.0.0.1 in hex shorthand
      `http://localhost:${receiver.port}/hook`, // a name that resolves to loopback
      'https://does-not-resolve.invalid/hook',
    ];
    for (const url of refused) {
      const r = await dev('POST', `/v1/projects/${projectId}/webhooks`, { url });
      assert.equal(r.status, 422, `${url} → ${r.status} ${r.text}`);
      assert.match(r.headers.get('content-type') ?? '', /application\/problem\+json/);
      assert.match(r.body.detail, /url/);
    }
    // A public address literal is accepted (nothing is sent until an event commits).
    const ok = await dev('POST', `/v1/projects/${projectId}/webhooks`, { url: 'https://93.184.215.14/hook' });
    assert.equal(ok.status, 201, ok.text);
    const patched = await dev('PATCH', `/v1/projects/${projectId}/webhooks/${ok.body.id}`, {
      url: 'https://169.254.169.254/',
    });
    assert.equal(patched.status, 422, 'an update is checked the same way');
    assert.equal((await dev('DELETE', `/v1/projects/${projectId}/webhooks/${ok.body.id}`)).status, 204);
    assert.equal(receiver.received.length, 0);
  });

  test('at send time the address is resolved and checked again: a target that turned private is never contacted', async () => {
    const ok = await dev('POST', `/v1/projects/${projectId}/webhooks`, {
      url: 'https://93.184.215.14/hook',
      event_types: ['message.created'],
    });
    assert.equal(ok.status, 201, ok.text);
    // What DNS rebinding would do: the registered target now points at the loopback receiver.
    await t
      .db('webhook_endpoints')
      .where({ project_id: projectId, id: ok.body.id })
      .update({ url: `http://127.0.0.1:${receiver.port}/rebound` });
    const posted = await api(t.url, 'POST', '/v1/threads/t1/messages', { key: sk, user: 'u', body: { body: 'x' } });
    assert.equal(posted.status, 201);
    let dead: any[] = [];
    for (let i = 0; i < 100 && dead.length === 0; i++) {
      await sleep(50);
      dead = (await api(t.url, 'GET', '/v1/admin/webhooks/deliveries?status=dead', { key: ak })).body.data;
    }
    assert.equal(dead.length, 1);
    assert.match(dead[0].last_error, /target refused: 127\.0\.0\.1 resolves to 127\.0\.0\.1/);
    assert.equal(dead[0].last_status_code, null);
    assert.equal(receiver.received.length, 0, 'the receiver on loopback was never contacted');
  });

  test('address and URL rules (unit)', () => {
    for (const a of [
      '127.0.0.1',
      '10.0.0.1',
      '169.254.169.254',
      '::1',
      'fe80::1',
      'fd00::1',
      '::ffff:10.0.0.1',
      '0.0.0.0',
    ])
      assert.equal(isPublicAddress(a), false, a);
    for (const a of ['93.184.215.14', '2606:4700::1111', '8.8.8.8']) assert.equal(isPublicAddress(a), true, a);
    const production = { allowHttp: false, allowPrivate: false };
    assert.throws(() => checkEndpointUrl('http://example.com/hook', production), /https/);
    assert.equal(checkEndpointUrl('https://example.com/hook', production).hostname, 'example.com');
    assert.equal(checkEndpointUrl('http://example.com/hook', { ...production, allowHttp: true }).protocol, 'http:');
    assert.throws(() => checkEndpointUrl('https://u:p@example.com/', production), /credentials/);
    assert.throws(() => checkEndpointUrl('file:///etc/passwd', production), /https/);
  });
});
