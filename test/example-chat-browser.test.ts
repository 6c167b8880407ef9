import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { chromium, type Browser, type Locator, type Page } from 'playwright-core';
import { startExample } from '../examples/chat/server';
import { createBackendClient } from '../sdk/src/index';
import { createTestDatabase } from './helpers/db';
import { freePort, runCli, spawnReplica, type Replica } from './helpers/processes';

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const SCREENSHOT = path.resolve(__dirname, '../docs/example-chat.png');
const HISTORY = 120;

interface Creds {
  project_id: string;
  signing_secret: string;
  keys: { secret: string; publishable: string };
}

describe('example chat app (examples/chat) in Chromium, two users on two replicas', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let a: Replica;
  let b: Replica;
  let creds: Creds;
  let example: Awaited<ReturnType<typeof startExample>>;
  let browser: Browser;
  const problems: string[] = [];

  before(async () => {
    database = await createTestDatabase();
    creds = await runCli<Creds>(['project', 'create', '--name', 'example', '--json'], { DATABASE_URL: database.url });
    const port = await freePort();
    // The page's origin may use the publishable key (the dev project allows localhost by itself).
    const client = new pg.Client({ connectionString: database.url });
    await client.connect();
    await client.query(`update projects set settings = $1 where id = $2`, [
      { allowed_origins: [`http://127.0.0.1:${port}`] },
      creds.project_id,
    ]);
    await client.end();
    const env = { DATABASE_URL: database.url, REALTIME_PRESENCE_GRACE_MS: '500' };
    [a, b] = await Promise.all([spawnReplica('A', env), spawnReplica('B', env)]);
    example = await startExample({
      apiUrls: [a.url, b.url],
      secretKey: creds.keys.secret,
      publishableKey: creds.keys.publishable,
      signingSecret: creds.signing_secret,
      port,
      host: '127.0.0.1',
    });
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS, headless: true });
  });
  after(async () => {
    await browser?.close();
    await example?.close();
    await a?.stop();
    await b?.stop();
    await database?.drop();
  });

  async function signIn(user: string, replica: Replica): Promise<Page> {
    const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
    const page = await context.newPage();
    page.on('console', (m) => m.type() === 'error' && problems.push(`${user}: ${m.text()}`));
    page.on('pageerror', (e) => problems.push(`${user}: ${String(e)}`));
    page.on('response', (r) => r.status() >= 400 && problems.push(`${user}: ${r.status()} ${r.url()}`));
    await page.goto(`${example.url}/?api=${encodeURIComponent(replica.url)}`);
    await page.getByTestId('user-id').fill(user);
    await page.getByTestId('sign-in').click();
    await page.getByTestId('thread-general').waitFor();
    return page;
  }

  const message = (page: Page, text: string) =>
    page.locator('[data-testid="message"]').filter({ has: page.getByTestId('text').getByText(text, { exact: true }) });
  const highlighted = (page: Page, text: string) => message(page, text).and(page.locator('[data-highlighted="true"]'));

  /** Whether a message row is wholly visible in the scrolled message list. */
  const inView = (row: Locator) =>
    row.evaluate((el) => {
      const list = el.closest('[data-testid="messages"]')!.getBoundingClientRect();
      const r = el.getBoundingClientRect();
      return r.top >= list.top - 1 && r.bottom <= list.bottom + 1;
    });

  async function until(check: () => Promise<boolean>, what: string, timeoutMs = 15_000) {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  const threadOrder = (page: Page) =>
    page
      .locator('[data-testid^="thread-"]')
      .evaluateAll((els) => els.map((el) => (el as HTMLElement).dataset.testid!.slice('thread-'.length)));

  test('sign in, history with infinite scroll up, live messages, typing, edits, reactions, replies, unread counts', async () => {
    // History older than one page, from a third user, written by the backend.
    const backend = createBackendClient({ baseUrl: a.url, secretKey: creds.keys.secret });
    await backend.threads.create({ id: 'general', type: 'group', title: 'General', members: ['carol'] });
    const history = await backend.asUser('carol').messages.sendBatch(
      'general',
      Array.from({ length: HISTORY }, (_, i) => ({ body: { text: `history ${i}` } })),
    );

    const alice = await signIn('alice', a);
    const bob = await signIn('bob', b);
    await message(alice, `history ${HISTORY - 1}`).waitFor();
    assert.equal(await message(alice, 'history 0').count(), 0, 'only the newest page at first');

    // Infinite scroll up reaches the first message.
    assert.ok(
      await alice.getByTestId('messages').evaluate((el) => el.scrollHeight > el.clientHeight),
      'the message list scrolls',
    );
    for (let i = 0; i < 20 && (await message(alice, 'history 0').count()) === 0; i++) {
      await alice.getByTestId('messages').evaluate((el) => (el.scrollTop = 0));
      await alice.waitForTimeout(250);
    }
    await message(alice, 'history 0').waitFor();
    assert.equal(await alice.locator('[data-testid="message"]').count(), HISTORY);

    // Typing shows on the other replica's user.
    await bob.getByTestId('composer').fill('typing something');
    await alice.getByTestId('typing').filter({ hasText: 'bob is typing' }).waitFor();

    // Live messages both ways, each shown once (the optimistic copy becomes the stored one).
    await alice.getByTestId('composer').fill('Hello Bob, from replica A');
    await alice.getByTestId('send').click();
    await message(bob, 'Hello Bob, from replica A').waitFor();
    await message(alice, 'Hello Bob, from replica A').and(alice.locator('[data-status="sent"]')).waitFor();
    await bob.getByTestId('composer').fill('Hi Alice, replica B here');
    await bob.getByTestId('send').click();
    await message(alice, 'Hi Alice, replica B here').waitFor();
    await alice.getByTestId('typing').filter({ hasNotText: 'bob' }).waitFor();
    for (const page of [alice, bob]) {
      assert.equal(await message(page, 'Hello Bob, from replica A').count(), 1);
      assert.equal(await message(page, 'Hi Alice, replica B here').count(), 1);
    }

    // Alice edits; Bob sees the new text marked "edited".
    const mine = message(alice, 'Hello Bob, from replica A');
    await mine.getByTestId('edit').click();
    await alice.getByTestId('edit-input').fill('Hello Bob, from replica A (typo fixed)');
    await alice.getByTestId('edit-input').press('Enter');
    const edited = message(bob, 'Hello Bob, from replica A (typo fixed)');
    await edited.getByTestId('edited').waitFor();

    // Bob reacts; Alice sees the count.
    await edited.getByTestId('react').click();
    await message(alice, 'Hello Bob, from replica A (typo fixed)')
      .getByTestId('react')
      .filter({ hasText: '♥ 1' })
      .waitFor();

    // Threads are listed by last activity: general was just talked in.
    await until(async () => (await threadOrder(alice)).join() === 'general,random', 'general listed first');

    // Bob replies to Alice's message; Alice sees the reply live, quoting its parent's author and
    // first words; the reply is stored with reply_to.
    await edited.getByTestId('reply').click();
    await bob.getByTestId('replying-to').filter({ hasText: 'alice' }).waitFor();
    await bob.getByTestId('composer').fill('Typo or not, hello!');
    await bob.getByTestId('send').click();
    await bob.getByTestId('replying-to').waitFor({ state: 'detached' });
    const reply = message(alice, 'Typo or not, hello!');
    await reply
      .getByTestId('quote')
      .filter({ hasText: 'alice' })
      .filter({ hasText: 'Hello Bob, from replica A (typo fixed)' })
      .waitFor();
    const parentId = await message(alice, 'Hello Bob, from replica A (typo fixed)').getAttribute('data-message-id');
    const replyId = await reply.getAttribute('data-message-id');
    assert.equal((await backend.messages.get('general', replyId!)).reply_to, parentId);
    // Clicking the quote highlights the parent.
    await reply.getByTestId('quote').click();
    await highlighted(alice, 'Hello Bob, from replica A (typo fixed)').waitFor();

    // A reply to a message Alice has loaded but scrolled far away from: the quote scrolls to it.
    await message(bob, 'history 95').getByTestId('reply').click();
    await bob.getByTestId('composer').fill('Still true, this old one');
    await bob.getByTestId('send').click();
    const oldReply = message(alice, 'Still true, this old one');
    await oldReply.getByTestId('quote').filter({ hasText: 'carol' }).filter({ hasText: 'history 95' }).waitFor();
    await alice.getByTestId('messages').evaluate((el) => (el.scrollTop = el.scrollHeight));
    await alice.waitForTimeout(200);
    assert.equal(await inView(message(alice, 'history 95')), false, 'the parent is out of view before the click');
    await oldReply.getByTestId('quote').click();
    await highlighted(alice, 'history 95').waitFor();
    await until(() => inView(message(alice, 'history 95')), 'the parent scrolled into view');
    assert.equal(await highlighted(alice, 'Hello Bob, from replica A (typo fixed)').count(), 0);

    // A message in another thread shows as unread in Alice's thread list.
    await backend.members.set('random', 'carol');
    await backend.asUser('carol').messages.send('random', { body: { text: 'over in random' } });
    await alice.getByTestId('unread-random').filter({ hasText: '1' }).waitFor({ timeout: 15_000 });
    await until(async () => (await threadOrder(alice)).join() === 'random,general', 'random listed first');

    await alice.getByTestId('messages').evaluate((el) => (el.scrollTop = el.scrollHeight));
    await alice.waitForTimeout(300);
    mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await alice.screenshot({ path: SCREENSHOT });

    // Opening the thread reads it: the badge goes away.
    await alice.getByTestId('thread-random').click();
    await message(alice, 'over in random').waitFor();
    await alice.getByTestId('thread-general').click();
    await alice.getByTestId('unread-random').waitFor({ state: 'detached', timeout: 15_000 });

    // Back in general Alice has only the newest page. A reply to the thread's fourth message
    // arrives live: its quote reads the parent, and clicking it loads the page around the parent
    // (messages.around) and highlights it there.
    await message(alice, 'Still true, this old one').waitFor();
    assert.equal(await message(alice, 'history 50').count(), 0, 'only the newest page after reopening');
    await backend.asUser('carol').messages.reply('general', history[3].id, { body: { text: 'Back to the start' } });
    const farReply = message(alice, 'Back to the start');
    await farReply.getByTestId('quote').filter({ hasText: 'carol' }).filter({ hasText: 'history 3' }).waitFor();
    assert.equal(await message(alice, 'history 3').count(), 0, 'the parent is not loaded');
    await farReply.getByTestId('quote').click();
    await highlighted(alice, 'history 3').waitFor();
    await until(() => inView(message(alice, 'history 3')), 'the parent in view');
    assert.equal(await message(alice, 'history 119').count(), 0, 'the page around the parent, not the newest');
    await alice.getByTestId('jump-latest').waitFor();

    // A message sent meanwhile waits until Alice scrolls back down to the newest messages.
    await bob.getByTestId('composer').fill('While you were reading history');
    await bob.getByTestId('send').click();
    await message(bob, 'While you were reading history').and(bob.locator('[data-status="sent"]')).waitFor();
    await alice.waitForTimeout(1000);
    assert.equal(await message(alice, 'While you were reading history').count(), 0);
    for (let i = 0; i < 40 && (await alice.getByTestId('jump-latest').count()) > 0; i++) {
      await alice.getByTestId('messages').evaluate((el) => (el.scrollTop = el.scrollHeight));
      await alice.waitForTimeout(250);
    }
    await alice.getByTestId('jump-latest').waitFor({ state: 'detached' });
    // Paged down from the parent to the live end: the whole thread, in order, each message once.
    const stored: string[] = [];
    for await (const m of backend.messages.iterate('general', { direction: 'forward' })) stored.push(m.id);
    assert.ok(stored.length > HISTORY);
    assert.deepEqual(
      await alice
        .locator('[data-testid="message"]')
        .evaluateAll((els) => els.map((el) => (el as HTMLElement).dataset.messageId)),
      stored,
    );

    assert.deepEqual(problems, [], 'no script errors in either browser');
  });
});
