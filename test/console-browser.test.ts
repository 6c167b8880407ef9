import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { api, startTestApp, type TestContext } from './helpers/app';
import { startOAuthProvider } from './helpers/oauth-provider';

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

  before(async () => {
    provider = await startOAuthProvider();
    t = await startTestApp({ ...provider.env, KEY_CACHE_TTL_MS: '60000' });
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

  test('a provider error is shown on the sign-in page', async () => {
    await page.getByTestId('sign-out').click();
    await page.locator('#signin').waitFor({ state: 'visible' });
    provider.failNextAuthorization('access_denied', 'You declined');
    await page.getByTestId('sign-in-google').click();
    await page.locator('#signin-error').filter({ hasText: 'You declined' }).waitFor();
    assert.equal(await page.locator('#app').isVisible(), false);
  });
});
