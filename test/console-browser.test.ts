import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { api, startTestApp, type TestContext } from './helpers/app';
import { startOAuthProvider } from './helpers/oauth-provider';
import { startReceiver, type Receiver } from './helpers/webhook-receiver';

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const SCREENSHOT = path.resolve(__dirname, '../docs/console.png');

describe('web console in a real browser', () => {
  let provider: Awaited<ReturnType<typeof startOAuthProvider>>;
  let t: TestContext;
  let userDataDir: string;
  let context: BrowserContext;
  let page: Page;
  const problems: string[] = [];
  let receiver: Receiver;

  before(async () => {
    provider = await startOAuthProvider();
    receiver = await startReceiver();
    t = await startTestApp({
      ...provider.env,
      KEY_CACHE_TTL_MS: '60000',
      KMS_MASTER_KEY: Buffer.alloc(32, 3).toString('base64'),
      // The Webhooks tab's receiver is on loopback; one quick retry, then dead.
      WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true',
      WEBHOOK_POLL_MS: '50',
      WEBHOOK_RETRY_SCHEDULE: '0.1',
      WEBHOOK_RETRY_JITTER: '0',
    });
    userDataDir = mkdtempSync(path.join(tmpdir(), 'pdb-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: '/usr/bin/chromium',
      args: CHROMIUM_ARGS,
      headless: true,
      viewport: { width: 1360, height: 860 },
    });
    page = context.pages()[0] ?? (await context.newPage());
    // CSP violations and script errors show up here: the console must have none.
    page.on('console', (m) => m.type() === 'error' && problems.push(m.text()));
    page.on('pageerror', (e) => problems.push(String(e)));
  });
  after(async () => {
    await context?.close();
    rmSync(userDataDir, { recursive: true, force: true });
    await t.stop();
    await receiver.close();
    await provider.stop();
  });

  test('sign in, create a project and a key, use it, browse the message, revoke the key', async () => {
    provider.signInAs({ sub: 'g-browser', email: 'linus@example.com', name: 'Linus Developer' });
    await page.goto(`${t.url}/console`);
    await page.getByTestId('sign-in-google').click();
    await page.locator('#app').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#account-name').textContent(), 'Linus Developer');
    assert.equal(new URL(page.url()).pathname, '/console');

    await page.getByTestId('new-project').click();
    await page.getByTestId('new-project-name').fill('Acme Chat');
    await page.getByTestId('create-project').click();
    await page.getByTestId('project-name').filter({ hasText: 'Acme Chat' }).waitFor();
    const projectId = (await page.getByTestId('project-id').textContent())!;
    assert.match(projectId, /^prj_/);

    await page.getByTestId('new-key-name').fill('Production backend');
    await page.getByTestId('new-key-kind').selectOption('secret');
    await page.getByTestId('create-key').click();
    await page.getByTestId('new-key-banner').waitFor({ state: 'visible' });
    assert.match((await page.getByTestId('new-key-banner').textContent())!, /will not be shown again/);
    const key = await page.getByTestId('new-key-value').inputValue();
    assert.match(key, /^sk_/);

    const posted = await api(t.url, 'POST', '/v1/threads/welcome/messages', {
      key,
      user: 'ada',
      body: { body: { text: 'Hello from the browser test' } },
    });
    assert.equal(posted.status, 201, posted.text);
    await api(t.url, 'PATCH', `/v1/threads/welcome/messages/${posted.body.id}`, {
      key,
      user: 'ada',
      body: { body: { text: 'Hello from the browser test (edited)' } },
    });

    await page.getByTestId('tab-threads').click();
    await page.locator('[data-thread-id="welcome"]').click();
    const message = page.locator(`[data-message-id="${posted.body.id}"]`);
    await message.filter({ hasText: 'Hello from the browser test (edited)' }).waitFor();
    await message.getByTestId('show-versions').click();
    await message
      .locator('.versions')
      .filter({ hasText: 'v1' })
      .filter({ hasText: 'Hello from the browser test' })
      .waitFor();

    await page.getByTestId('tab-usage').click();
    await page.locator('#usage-messages').filter({ hasText: '1' }).waitFor();

    // A second key and a dismissed banner, for the screenshot.
    await page.getByTestId('tab-keys').click();
    await page.getByTestId('new-key-name').fill('Web app');
    await page.getByTestId('new-key-kind').selectOption('publishable');
    await page.getByTestId('create-key').click();
    await page.locator('#keys-body tr').nth(1).waitFor();
    await page.locator('#new-key-done').click();
    await page.getByTestId('new-key-banner').waitFor({ state: 'hidden' });
    await page.locator('#toast').waitFor({ state: 'hidden' });
    mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT });

    const row = page.locator('#keys-body tr').filter({ hasText: 'Production backend' });
    await row.getByTestId('revoke-key').click();
    await page.getByTestId('confirm-ok').click();
    await row.filter({ hasText: 'Revoked' }).waitFor();
    const refused = await api(t.url, 'POST', '/v1/threads/welcome/messages', {
      key,
      user: 'ada',
      body: { body: { text: 'after revocation' } },
    });
    assert.equal(refused.status, 401, refused.text);

    // Retention policy from the Settings tab (validated and stored like every setting).
    await page.getByTestId('tab-settings').click();
    await page.locator('#set-retention').fill('365');
    await page.locator('#set-max-messages').fill('5000');
    await page.getByTestId('save-settings').click();
    await page.locator('#toast').filter({ hasText: 'Settings saved' }).waitFor();
    const saved = await t.db('projects').first('settings').where({ name: 'Acme Chat' });
    assert.equal(saved.settings.retention_days, 365);
    assert.equal(saved.settings.max_messages_per_thread, 5000);
    assert.equal(saved.settings.deleted_thread_retention_days, null);

    // The signed-out first load's GET /v1/me answers 401 by design; anything else is a defect.
    const unexpected = problems.filter((p) => !/status of 401/.test(p));
    assert.deepEqual(unexpected, [], 'no script errors or CSP violations');
  });

  test('webhooks tab: add an endpoint (secret shown once), see it failing, replay its dead letter', async () => {
    const projectId = (await page.getByTestId('project-id').textContent())!;
    const { key } = await t.app.projects.createKey(projectId, 'secret', 'webhooks');
    receiver.answer(() => ({ status: 500, body: 'down for maintenance' }));
    await page.getByTestId('tab-webhooks').click();
    await page.getByTestId('new-hook-url').fill(`${receiver.url}/console-hook`);
    await page.getByTestId('new-hook-events').fill('message.created');
    await page.getByTestId('create-hook').click();
    await page.getByTestId('new-hook-banner').waitFor({ state: 'visible' });
    assert.match((await page.getByTestId('new-hook-banner').textContent())!, /will not be shown again/);
    assert.match(await page.getByTestId('new-hook-secret').inputValue(), /^whsec_/);
    await page.locator('#new-hook-done').click();

    const posted = await api(t.url, 'POST', '/v1/threads/hooks/messages', {
      key,
      user: 'ada',
      body: { body: { text: 'to the webhook' } },
    });
    assert.equal(posted.status, 201, posted.text);
    await receiver.until((all) => all.length >= 2); // the first attempt and the one retry

    await page.getByTestId('deliveries-status').selectOption('dead');
    const replay = page.getByTestId('replay-delivery');
    for (let i = 0; i < 50 && (await replay.count()) === 0; i++) {
      await page.waitForTimeout(100);
      await page.locator('#hooks-refresh').click();
    }
    const deadRow = page.locator('#deliveries-body tr').filter({ has: replay });
    assert.equal(await deadRow.getByTestId('delivery-response').textContent(), '500');
    await page.getByTestId('hook-failing').waitFor();
    assert.equal(await page.getByTestId('hook-dead').textContent(), '1');
    await page.locator('#toast').waitFor({ state: 'hidden' });
    await page.screenshot({ path: path.resolve(__dirname, '../docs/console-webhooks.png') });

    receiver.answer(() => ({ status: 204 }));
    await replay.click();
    const got = await receiver.until((all) => all.length >= 3);
    assert.equal(got[2].headers['webhook-id'], got[0].headers['webhook-id'], 'the replay keeps the webhook-id');
    await page.getByTestId('deliveries-status').selectOption('delivered');
    await page
      .locator('#deliveries-body tr')
      .filter({ hasText: 'message.created' })
      .getByTestId('delivery-response')
      .filter({ hasText: '204' })
      .waitFor();
    const unexpected = problems.filter((p) => !/status of 401/.test(p));
    assert.deepEqual(unexpected, [], 'no script errors or CSP violations');
  });

  test('encrypted fields are set in the settings tab (bad paths explained), and encrypted messages browse as plaintext', async () => {
    await page.getByTestId('new-project').click();
    await page.getByTestId('new-project-name').fill('Secure Chat');
    await page.getByTestId('create-project').click();
    await page.getByTestId('project-name').filter({ hasText: 'Secure Chat' }).waitFor();
    const projectId = (await page.getByTestId('project-id').textContent())!;
    await page.getByTestId('tab-settings').click();
    await page.getByTestId('encrypted-fields').fill('body.text\ntext');
    await page.getByTestId('save-settings').click();
    await page.locator('#settings-error').filter({ hasText: 'encrypted_fields.1' }).waitFor();
    assert.match((await page.locator('#settings-error').textContent())!, /body\.attachments\.\*\.url/);
    await page.getByTestId('encrypted-fields').fill('body.text');
    await page.getByTestId('save-settings').click();
    await page.locator('#toast').filter({ hasText: 'Settings saved' }).waitFor();

    await page.getByTestId('tab-keys').click();
    await page.getByTestId('new-key-name').fill('Backend');
    await page.getByTestId('new-key-kind').selectOption('secret');
    await page.getByTestId('create-key').click();
    await page.getByTestId('new-key-banner').waitFor({ state: 'visible' });
    const key = await page.getByTestId('new-key-value').inputValue();
    const posted = await api(t.url, 'POST', '/v1/threads/vault/messages', {
      key,
      user: 'ada',
      body: { body: { text: 'Confidential browser text' } },
    });
    assert.equal(posted.status, 201, posted.text);
    const row = await t.db('messages').first('body').where({ project_id: projectId, id: posted.body.id });
    assert.match((row.body as { text: string }).text, /^pdbenc:v1:/);
    await page.locator('#new-key-done').click();
    await page.getByTestId('tab-threads').click();
    await page.locator('[data-thread-id="vault"]').click();
    await page
      .locator(`[data-message-id="${posted.body.id}"]`)
      .filter({ hasText: 'Confidential browser text' })
      .waitFor();
  });

  test("a provider error is shown on the sign-in page (a fixed text, never the provider's own words)", async () => {
    await page.getByTestId('sign-out').click();
    await page.locator('#signin').waitFor({ state: 'visible' });
    provider.failNextAuthorization('access_denied', 'You declined');
    await page.getByTestId('sign-in-google').click();
    await page.locator('#signin-error').filter({ hasText: 'Sign-in was cancelled at the provider.' }).waitFor();
    assert.equal(await page.locator('#signin-error').textContent(), 'Sign-in was cancelled at the provider.');
    assert.equal(await page.locator('#app').isVisible(), false);
  });
});
