// Browser tests of the bundled web client, in real headless Chromium driven by
// playwright-core (no browser download: Debian's /usr/bin/chromium is used).
//
//   LANCHAT_URL=http://127.0.0.1:8080 node --test --test-concurrency=1 tests/browser/
//
// Env: LANCHAT_URL (server base URL, default http://127.0.0.1:8080),
//      LANCHAT_SCREENSHOTS=1 (write docs/screenshots/{desktop,phone}.png),
//      CHROMIUM (browser binary, default /usr/bin/chromium),
//      LANCHAT_ADMIN_USER / LANCHAT_ADMIN_PASSWORD (an existing admin, for the admin page test).
// Users are registered through the API (registration is open by default).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const BASE = (process.env.LANCHAT_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const ORIGIN = new URL(BASE).origin;
const SHOTS = process.env.LANCHAT_SCREENSHOTS === '1';
const SHOT_DIR = fileURLToPath(new URL('../../docs/screenshots/', import.meta.url));
const RUN = Math.random().toString(36).slice(2, 7);
const PASSWORD = 'correct horse battery staple';
const T = 15_000; // per wait

let browser;
const pages = []; // every page we opened, with its collected problems
const users = {};

// ------------------------------------------------------------------ helpers

async function api(method, path, body, token) {
  const res = await fetch(`${BASE}/api/v1${path}`, {
    method,
    headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  return { status: res.status, json };
}

async function registerViaApi(key, displayName) {
  const username = `${key}_${RUN}`;
  const r = await api('POST', '/auth/register', { username, password: PASSWORD, display_name: displayName });
  assert.equal(r.status, 201, `register ${username} via API: HTTP ${r.status} ${JSON.stringify(r.json)}`);
  users[key] = { username, displayName, id: r.json.user.id, token: r.json.access_token };
  return users[key];
}

/** A page in its own browser context, watched for foreign requests, console errors and dialogs. */
async function openPage(name, viewport = { width: 1280, height: 800 }, { insecure = false } = {}) {
  const context = await browser.newContext({ viewport, colorScheme: 'light', locale: 'en-GB', timezoneId: 'UTC' });
  if (insecure) {
    // Behave like plain http on a LAN address (not a secure context): no
    // crypto.randomUUID, no Web Locks, no Notification API. The client must cope.
    await context.addInitScript(() => {
      Object.defineProperty(window, 'isSecureContext', { value: false });
      delete Crypto.prototype.randomUUID;
      Object.defineProperty(navigator, 'locks', { value: undefined });
      delete window.Notification;
    });
  }
  const page = await context.newPage();
  const rec = { name, page, context, requests: [], foreign: [], errors: [], dialogs: [], allow: [] };
  context.on('request', (req) => {
    const url = req.url();
    rec.requests.push(url);
    if (!(url.startsWith('data:') || url.startsWith('blob:')) && new URL(url).origin !== ORIGIN) rec.foreign.push(url);
  });
  page.on('websocket', (ws) => {
    const u = new URL(ws.url());
    if (u.host !== new URL(BASE).host) rec.foreign.push(ws.url());
  });
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    if (rec.allow.some((re) => re.test(text))) return;
    rec.errors.push(text);
  });
  page.on('pageerror', (err) => rec.errors.push(`pageerror: ${err.message}`));
  page.on('dialog', async (d) => { rec.dialogs.push(`${d.type()}: ${d.message()}`); await d.dismiss().catch(() => {}); });
  pages.push(rec);
  return rec;
}

const sel = (testid, extra = '') => `[data-testid="${testid}"]${extra}`;

async function login(rec, user) {
  const { page } = rec;
  await page.goto(`${BASE}/#/login`);
  await page.locator(sel('login-username')).fill(user.username);
  await page.locator(sel('login-password')).fill(PASSWORD);
  await page.locator(sel('login-submit')).click();
  await page.locator(sel('main-view')).waitFor({ timeout: T });
  await page.evaluate(() => localStorage.setItem('lanchat.notif-dismissed', '1'));
}

async function send(page, text) {
  const input = page.locator(sel('composer-input'));
  await input.fill(text);
  await input.press('Enter');
}

/** The message element whose body text is exactly `text`. */
function messageWith(page, text) {
  return page.locator(sel('message')).filter({ has: page.locator(sel('message-body'), { hasText: text }) }).last();
}

async function openConversation(page, title) {
  await page.locator(sel('conversation-item', `[data-title="${title}"]`)).click();
  await page.locator(sel('conversation-title')).filter({ hasText: title }).waitFor({ timeout: T });
}

function assertClean(rec) {
  assert.deepEqual(rec.foreign, [], `${rec.name}: requests to another origin`);
  assert.deepEqual(rec.dialogs, [], `${rec.name}: unexpected JS dialogs`);
  assert.deepEqual(rec.errors, [], `${rec.name}: console errors`);
}

// ------------------------------------------------------------------ suite

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const health = await fetch(`${BASE}/api/v1/setup`).catch((e) => { throw new Error(`server not reachable at ${BASE}: ${e.message}`); });
  assert.equal(health.status, 200, 'GET /api/v1/setup');
});

after(async () => {
  if (browser) await browser.close();
});

let A, B; // page records

test('the client is served with a strict CSP and makes no inline script', async () => {
  const res = await fetch(`${BASE}/`);
  assert.equal(res.status, 200);
  const csp = res.headers.get('content-security-policy') || '';
  assert.match(csp, /default-src 'self'/, 'CSP default-src');
  assert.match(csp, /script-src 'self'(;|$)/, 'CSP allows only our own scripts');
  const html = await res.text();
  assert.match(html, /<script type="module" src="\/js\/app\.js"><\/script>/);
  assert.doesNotMatch(html, /<script>(?!<)/, 'no inline script');
  assert.doesNotMatch(html, /\son[a-z]+=/i, 'no inline handlers');
  assert.doesNotMatch(html, /https?:\/\//, 'no absolute URLs to other hosts');
  // SPA fallback: an unknown non-API path is the client too
  const deep = await fetch(`${BASE}/some/deep/link`);
  assert.equal(deep.status, 200);
  assert.match(await deep.text(), /\/js\/app\.js/);
});

test('A registers in the browser; B signs in; the setup screen appears only when needed', async () => {
  A = await openPage('A');
  const { page } = A;
  await page.goto(`${BASE}/`);
  const needs = (await api('GET', '/setup')).json.needs_setup;
  if (needs) {
    await page.locator(sel('setup-form')).waitFor({ timeout: T });
    await page.locator(sel('goto-register')).click();
  } else {
    await page.locator(sel('login-form')).waitFor({ timeout: T });
    await page.locator(sel('goto-register')).click();
  }
  await page.locator(sel('register-form')).waitFor({ timeout: T });
  const username = `alice_${RUN}`;
  await page.locator(sel('register-username')).fill(username);
  await page.locator(sel('register-display-name')).fill('Alice Tester');
  await page.locator(sel('register-password')).fill(PASSWORD);
  await page.locator(sel('register-submit')).click();
  await page.locator(sel('main-view')).waitFor({ timeout: T });
  await page.locator(sel('me-name')).filter({ hasText: 'Alice Tester' }).waitFor({ timeout: T });
  const me = await page.evaluate(() => JSON.parse(localStorage.getItem('lanchat.auth')));
  users.alice = { username, displayName: 'Alice Tester', id: me.user_id };
  await page.evaluate(() => localStorage.setItem('lanchat.notif-dismissed', '1'));

  await registerViaApi('bob', 'Bob Tester');
  await registerViaApi('carol', 'Carol Tester');

  // wrong password first: a readable error, still on the login screen
  B = await openPage('B', undefined, { insecure: true });
  B.allow.push(/status of 401/);
  await B.page.goto(`${BASE}/#/login`);
  await B.page.locator(sel('login-username')).fill(users.bob.username);
  await B.page.locator(sel('login-password')).fill('not the password');
  await B.page.locator(sel('login-submit')).click();
  await B.page.locator(sel('auth-error')).waitFor({ timeout: T });
  B.allow.pop();
  await login(B, users.bob);
  assertClean(A);
  assertClean(B);
});

test('A opens a DM with B and sends; B sees it live; A sees it go read', async () => {
  const a = A.page, b = B.page;
  await b.evaluate(() => { window.__noReload = true; });

  await a.locator(sel('new-conversation')).click();
  await a.locator(sel('newconv-search')).fill(users.bob.username);
  await a.locator(sel('newconv-user', `[data-username="${users.bob.username}"] input`)).check({ timeout: T });
  await a.locator(sel('newconv-submit')).click();
  await a.locator(sel('conversation-title')).filter({ hasText: 'Bob Tester' }).waitFor({ timeout: T });

  const text = `Hello Bob, run ${RUN}`;
  await send(a, text);
  const mine = messageWith(a, text);
  await mine.waitFor({ timeout: T });
  // acked: no longer pending
  await a.waitForFunction((t) => {
    const el = [...document.querySelectorAll('[data-testid="message"]')].find((m) => m.textContent.includes(t));
    return el && ['sent', 'delivered', 'read'].includes(el.dataset.status);
  }, text, { timeout: T });

  // B: the conversation shows up live, with an unread badge
  const item = b.locator(sel('conversation-item', '[data-title="Alice Tester"]'));
  await item.waitFor({ timeout: T });
  await item.locator(sel('unread-badge')).waitFor({ timeout: T });
  await b.waitForFunction(() => /^\(1\) /.test(document.title), null, { timeout: T }); // title badge
  assert.equal(await b.evaluate(() => window.__noReload), true, 'B was not reloaded');
  await item.click();
  await messageWith(b, text).waitFor({ timeout: T });
  assert.equal(await item.locator(sel('unread-badge')).count(), 0, 'badge cleared after viewing');
  await b.waitForFunction(() => !/^\(/.test(document.title), null, { timeout: T });

  // A: read receipt
  await a.waitForFunction((t) => {
    const el = [...document.querySelectorAll('[data-testid="message"]')].find((m) => m.textContent.includes(t));
    return el && el.dataset.status === 'read';
  }, text, { timeout: T });

  // B answers; A gets it live
  await send(b, 'Hi Alice!');
  await messageWith(a, 'Hi Alice!').waitFor({ timeout: T });
  assertClean(A);
  assertClean(B);
});

test('a typing indicator appears for B while A types, and goes away', async () => {
  const a = A.page, b = B.page;
  const input = a.locator(sel('composer-input'));
  await input.click();
  await input.pressSequentially('I am typing something', { delay: 40 });
  const ind = b.locator(sel('typing-indicator'));
  await ind.filter({ hasText: 'Alice Tester is typing' }).waitFor({ state: 'visible', timeout: T });
  await input.fill('');
  await input.dispatchEvent('input');
  await ind.waitFor({ state: 'hidden', timeout: T });
  assertClean(A);
  assertClean(B);
});

test('hostile text is shown literally and runs nothing', async () => {
  const a = A.page, b = B.page;
  const evil = '<img src=x onerror=alert(1)>';
  const evil2 = '<script>alert(2)</script> & "quotes" <b>bold</b>';
  await send(a, evil);
  await send(a, evil2);
  for (const p of [a, b]) {
    await messageWith(p, evil).waitFor({ timeout: T });
    await messageWith(p, 'quotes').waitFor({ timeout: T });
    const bodies = await p.locator(sel('message-body')).allTextContents();
    assert.ok(bodies.some((t) => t.trim() === evil), 'literal <img> text');
    assert.ok(bodies.some((t) => t.trim() === evil2), 'literal <script> text');
    assert.equal(await p.locator(`${sel('message-list')} img:not(.att-image), ${sel('message-list')} script, ${sel('message-list')} b`).count(), 0, 'no elements from message text');
  }
  await a.waitForTimeout(300);
  for (const rec of [A, B]) {
    assert.deepEqual(rec.dialogs, [], `${rec.name}: alert fired`);
    assert.ok(!rec.requests.some((u) => new URL(u).pathname === '/x'), `${rec.name}: the <img> was loaded`);
  }
  assertClean(A);
  assertClean(B);
});

test('reactions, replies, edits and deletes reach the other side', async () => {
  const a = A.page, b = B.page;
  // B reacts to A's greeting
  const target = messageWith(b, `Hello Bob, run ${RUN}`);
  await target.hover();
  await target.locator(sel('msg-react')).click();
  await b.locator(sel('emoji-option', '[data-emoji="👍"]')).click();
  await messageWith(a, `Hello Bob, run ${RUN}`).locator(sel('reaction', '[data-emoji="👍"]')).filter({ hasText: '1' }).waitFor({ timeout: T });
  // A toggles the same reaction on: count 2, pressed
  const chip = messageWith(a, `Hello Bob, run ${RUN}`).locator(sel('reaction', '[data-emoji="👍"]'));
  await chip.click();
  await chip.filter({ hasText: '2' }).waitFor({ timeout: T });
  assert.equal(await chip.getAttribute('aria-pressed'), 'true');
  await messageWith(b, `Hello Bob, run ${RUN}`).locator(sel('reaction', '[data-emoji="👍"]')).filter({ hasText: '2' }).waitFor({ timeout: T });

  // B replies to it
  await target.hover();
  await target.locator(sel('msg-reply')).click();
  await b.locator(sel('composer-mode', '[data-mode="reply"]')).waitFor({ timeout: T });
  await send(b, 'Replying to your hello');
  const reply = messageWith(a, 'Replying to your hello');
  await reply.waitFor({ timeout: T });
  await reply.locator(sel('reply-quote')).filter({ hasText: `Hello Bob, run ${RUN}` }).waitFor({ timeout: T });

  // A edits, then deletes, a message of theirs
  await send(a, 'typo mesage');
  const typo = messageWith(a, 'typo mesage');
  await typo.waitFor({ timeout: T });
  await messageWith(b, 'typo mesage').waitFor({ timeout: T });
  await typo.hover();
  await typo.locator(sel('msg-edit')).click();
  await a.locator(sel('composer-mode', '[data-mode="edit"]')).waitFor({ timeout: T });
  await send(a, 'fixed message');
  const fixedOnB = messageWith(b, 'fixed message');
  await fixedOnB.locator(sel('message-edited')).waitFor({ timeout: T });

  const fixedOnA = messageWith(a, 'fixed message');
  await fixedOnA.hover();
  await fixedOnA.locator(sel('msg-delete')).click();
  await a.locator(sel('confirm-ok')).click();
  await b.waitForFunction(() => [...document.querySelectorAll('[data-testid="message-body"]')].every((e) => !e.textContent.includes('fixed message')), null, { timeout: T });
  assert.ok(await b.locator(sel('message-deleted')).count() >= 1, 'deleted marker on B');
  assertClean(A);
  assertClean(B);
});

test('a group is created and both members see its messages', async () => {
  const a = A.page, b = B.page;
  const title = `Group ${RUN}`;
  await a.locator(sel('new-conversation')).click();
  await a.locator(sel('newconv-search')).fill(RUN);
  await a.locator(sel('newconv-user', `[data-username="${users.bob.username}"] input`)).check({ timeout: T });
  await a.locator(sel('newconv-user', `[data-username="${users.carol.username}"] input`)).check({ timeout: T });
  await a.locator(sel('newconv-title')).fill(title);
  await a.locator(sel('newconv-submit')).click();
  await a.locator(sel('conversation-title')).filter({ hasText: title }).waitFor({ timeout: T });
  await send(a, 'Welcome to the group');
  await messageWith(a, 'Welcome to the group').waitFor({ timeout: T });

  await b.locator(sel('conversation-item', `[data-title="${title}"]`)).waitFor({ timeout: T });
  await openConversation(b, title);
  await messageWith(b, 'Welcome to the group').waitFor({ timeout: T });
  await send(b, `Thanks @${users.alice.username}`);
  const m = messageWith(a, 'Thanks');
  await m.waitFor({ timeout: T });
  await m.locator(sel('mention')).waitFor({ timeout: T });

  // group settings: members and roles are listed
  await a.locator(sel('conversation-settings')).click();
  const dlg = a.locator(sel('conversation-settings-dialog'));
  await dlg.waitFor({ timeout: T });
  await dlg.locator(sel('member-row', `[data-username="${users.carol.username}"]`)).waitFor({ timeout: T });
  assert.equal(await dlg.locator(sel('member-row')).count(), 3);
  // export: the history downloads as a standalone page with the messages escaped
  const [download] = await Promise.all([
    a.waitForEvent('download', { timeout: T }),
    dlg.locator(sel('export-html')).click(),
  ]);
  const stream = await download.createReadStream();
  let html = '';
  for await (const chunk of stream) html += chunk;
  assert.ok(html.includes('Welcome to the group'), 'the export holds the messages');
  assert.ok(html.startsWith('<!doctype html>'), 'the export is a web page');
  await a.keyboard.press('Escape');
  await dlg.waitFor({ state: 'detached', timeout: T });
  assertClean(A);
  assertClean(B);
});

test('channels: A creates one, B finds it in the browser and joins', async () => {
  const a = A.page, b = B.page;
  const title = `chan-${RUN}`;
  await a.locator(sel('browse-channels')).click();
  await a.locator(sel('channel-title')).fill(title);
  await a.locator(sel('channel-topic')).fill('Testing channels');
  await a.locator(sel('channel-create')).click();
  await a.locator(sel('conversation-title')).filter({ hasText: title }).waitFor({ timeout: T });
  await send(a, 'First post in the channel');
  await messageWith(a, 'First post in the channel').waitFor({ timeout: T });

  await b.locator(sel('browse-channels')).click();
  await b.locator(sel('channel-search')).fill(title);
  const row = b.locator(sel('channel-row', `[data-title="${title}"]`));
  await row.locator(sel('channel-join')).click({ timeout: T });
  await b.locator(sel('conversation-title')).filter({ hasText: title }).waitFor({ timeout: T });
  await messageWith(b, 'First post in the channel').waitFor({ timeout: T });
  await send(b, 'Joined!');
  await messageWith(a, 'Joined!').waitFor({ timeout: T });
  assertClean(A);
  assertClean(B);
});

test('reload keeps the session and the open conversation', async () => {
  const b = B.page;
  await openConversation(b, 'Alice Tester');
  const url = b.url();
  await b.reload();
  await b.locator(sel('main-view')).waitFor({ timeout: T });
  assert.equal(await b.locator(sel('login-form')).count(), 0);
  assert.equal(b.url(), url);
  await b.locator(sel('conversation-title')).filter({ hasText: 'Alice Tester' }).waitFor({ timeout: T });
  await messageWith(b, `Hello Bob, run ${RUN}`).waitFor({ timeout: T });
  assertClean(B);
});

test('disconnected: reconnecting banner, pending message and draft survive a reload, sent once on reconnect', async () => {
  const a = A.page, b = B.page;
  await openConversation(a, 'Bob Tester');
  await openConversation(b, 'Alice Tester');
  // A's WebSocket goes through a switch we control.
  let blocked = false;
  const live = new Set();
  await a.routeWebSocket(/\/api\/v1\/ws/, (ws) => {
    if (blocked) { ws.close({ code: 1012, reason: 'test: server restarting' }); return; }
    ws.connectToServer();
    live.add(ws);
  });
  A.allow.push(/WebSocket/);
  // reconnect through the route
  await a.reload();
  await a.locator(sel('conversation-title')).filter({ hasText: 'Bob Tester' }).waitFor({ timeout: T });
  await a.waitForFunction(() => !document.querySelector('[data-testid="conn-status"]:not([hidden])'), null, { timeout: T });
  await a.waitForTimeout(300);

  blocked = true;
  for (const ws of live) await ws.close({ code: 1012, reason: 'test: drop' }).catch(() => {});
  live.clear();
  await a.locator(sel('conn-status')).filter({ hasText: 'Reconnecting' }).waitFor({ timeout: T });

  const text = `sent while offline ${RUN}`;
  await send(a, text);
  const pending = messageWith(a, text);
  await pending.waitFor({ timeout: T });
  assert.equal(await pending.getAttribute('data-status'), 'pending');
  await a.locator(sel('composer-input')).fill('half-typed draft');
  await a.waitForTimeout(400); // draft save is debounced

  await a.reload();
  await a.locator(sel('conversation-title')).filter({ hasText: 'Bob Tester' }).waitFor({ timeout: T });
  await messageWith(a, text).waitFor({ timeout: T });
  assert.equal(await messageWith(a, text).getAttribute('data-status'), 'pending');
  assert.equal(await a.locator(sel('composer-input')).inputValue(), 'half-typed draft');

  blocked = false;
  await a.waitForFunction((t) => {
    const el = [...document.querySelectorAll('[data-testid="message"]')].find((m) => m.textContent.includes(t));
    return el && el.dataset.status && el.dataset.status !== 'pending';
  }, text, { timeout: 45_000 });
  await messageWith(b, text).waitFor({ timeout: T });
  await b.waitForTimeout(500);
  const copies = (await b.locator(sel('message-body')).allTextContents()).filter((t) => t.includes(text));
  assert.equal(copies.length, 1, 'delivered exactly once');
  await a.locator(sel('conn-status')).waitFor({ state: 'hidden', timeout: T });
  await a.unrouteAll({ behavior: 'ignoreErrors' });
  await a.locator(sel('composer-input')).fill('');
  await a.locator(sel('composer-input')).dispatchEvent('input');
  // A keeps allowing the browser's own "WebSocket connection failed" lines: they are
  // what Chromium logs for the connections this test dropped on purpose.
  assertClean(A);
  assertClean(B);
});

test('profile: display name, status and sessions; sign out and back in', async () => {
  const b = B.page;
  await b.locator(sel('open-profile')).click();
  const dlg = b.locator(sel('profile-dialog'));
  await dlg.waitFor({ timeout: T });
  await dlg.locator(sel('session-row')).first().waitFor({ timeout: T });
  await dlg.locator(sel('profile-status')).fill('Testing things');
  await dlg.locator(sel('profile-save')).click();
  await b.locator(sel('open-profile')).filter({ hasText: 'Testing things' }).waitFor({ timeout: T });
  await dlg.locator(sel('logout')).click();
  await b.locator(sel('confirm-ok')).click();
  await b.locator(sel('login-form')).waitFor({ timeout: T });
  await login(B, users.bob);
  await b.locator(sel('conversation-item', '[data-title="Alice Tester"]')).waitFor({ timeout: T });
  assertClean(B);
});

test('phone width: the list is the first screen and the sidebar becomes a drawer', async () => {
  const P = await openPage('phone', { width: 390, height: 844 });
  await login(P, users.bob);
  const p = P.page;
  await p.locator(sel('conversation-item', '[data-title="Alice Tester"]')).click();
  await p.locator(sel('conversation-title')).filter({ hasText: 'Alice Tester' }).waitFor({ timeout: T });
  assert.equal(await p.locator(sel('sidebar')).isVisible(), false, 'sidebar hidden while reading');
  const width = await p.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `no horizontal overflow (${width})`);
  await p.setViewportSize({ width: 360, height: 740 });
  assert.ok(await p.evaluate(() => document.documentElement.scrollWidth) <= 360, 'no horizontal overflow at 360 px');
  await p.locator(sel('open-drawer')).click();
  await p.locator(sel('sidebar')).waitFor({ state: 'visible', timeout: T });
  await p.keyboard.press('Escape');
  await p.waitForFunction(() => !document.querySelector('.drawer-open'), null, { timeout: T });
  assertClean(P);
  await P.context.close();
});

test('keyboard only: pick a message with the arrows, react with Tab and Enter', async () => {
  const a = A.page;
  await openConversation(a, 'Bob Tester');
  await send(a, 'keyboard target');
  await messageWith(a, 'keyboard target').waitFor({ timeout: T });
  await a.waitForFunction(() => {
    const el = [...document.querySelectorAll('[data-testid="message"]')].find((m) => m.textContent.includes('keyboard target'));
    return el && el.dataset.status && el.dataset.status !== 'pending';
  }, null, { timeout: T });
  await a.locator(sel('message-list')).focus();
  await a.keyboard.press('ArrowUp');
  const focused = await a.evaluate(() => document.activeElement.dataset.testid);
  assert.equal(focused, 'message');
  await a.keyboard.press('Tab');
  assert.equal(await a.evaluate(() => document.activeElement.dataset.testid), 'msg-react');
  await a.keyboard.press('Enter');
  await a.locator(sel('emoji-picker')).waitFor({ timeout: T });
  await a.keyboard.press('ArrowRight'); // ❤️
  await a.keyboard.press('Enter');
  await messageWith(a, 'keyboard target').locator(sel('reaction', '[data-emoji="❤️"]')).waitFor({ timeout: T });
  await openConversation(B.page, 'Alice Tester');
  await messageWith(B.page, 'keyboard target').locator(sel('reaction', '[data-emoji="❤️"]')).waitFor({ timeout: T });
  // Escape leaves the list for the composer; Escape closes dialogs
  await a.locator(sel('message-list')).focus();
  await a.keyboard.press('ArrowUp');
  await a.keyboard.press('Escape');
  assert.equal(await a.evaluate(() => document.activeElement.dataset.testid), 'composer-input');
  await a.locator(sel('open-directory')).click();
  await a.locator(sel('directory-dialog')).waitFor({ timeout: T });
  await a.keyboard.press('Escape');
  await a.locator(sel('directory-dialog')).waitFor({ state: 'detached', timeout: T });
  assertClean(A);
});

// A 1×1 PNG (one opaque pixel).
const PNG_1X1 = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');

test('an image uploaded with the attach button reaches the other side as an image', async () => {
  const a = A.page, b = B.page;
  await openConversation(a, 'Bob Tester');
  await a.locator(sel('attach-input')).setInputFiles({ name: 'dot.png', mimeType: 'image/png', buffer: PNG_1X1 });
  await a.locator(sel('upload-ready')).filter({ hasText: 'dot.png' }).waitFor({ timeout: T });
  const caption = `A picture for you ${RUN}`;
  await send(a, caption);
  await a.waitForFunction((t) => {
    const el = [...document.querySelectorAll('[data-testid="message"]')].find((m) => m.textContent.includes(t));
    return el && el.dataset.status && el.dataset.status !== 'pending';
  }, caption, { timeout: T });
  assert.equal(await a.locator(sel('composer-attachments')).isVisible(), false, 'composer attachments cleared after sending');

  await openConversation(b, 'Alice Tester');
  const img = messageWith(b, caption).locator(sel('attachment-image'));
  await img.waitFor({ timeout: T });
  await b.waitForFunction((t) => {
    const el = [...document.querySelectorAll('[data-testid="message"]')].find((m) => m.textContent.includes(t));
    const i = el && el.querySelector('[data-testid="attachment-image"]');
    return i && i.src.startsWith('blob:') && i.complete && i.naturalWidth === 1;
  }, caption, { timeout: T });
  assertClean(A);
  assertClean(B);
});

test('search finds a message and jumps to it in its conversation, highlighted', async () => {
  // Bob writes the target in the group, then enough messages that a fresh
  // client's first page does not hold it: the jump must load around it.
  const list = await api('GET', '/conversations', undefined, users.bob.token);
  const group = list.json.items.find((c) => c.title === `Group ${RUN}`);
  assert.ok(group, 'the group is in bob\'s list');
  const post = async (body) => {
    const r = await api('POST', `/conversations/${group.id}/messages`, { body, client_id: `search-${RUN}-${Math.random()}` }, users.bob.token);
    assert.ok(r.status === 201 || r.status === 200, `post: HTTP ${r.status} ${JSON.stringify(r.json)}`);
    return r.json;
  };
  const word = `needle${RUN}`;
  const target = await post(`Find the ${word} here <b>not bold</b> & co`);
  for (let i = 0; i < 60; i++) await post(`filler ${i}`);

  const C = await openPage('C');
  await login(C, users.carol);
  const c = C.page;
  await c.locator(sel('open-search')).click();
  await c.locator(sel('search-dialog')).waitFor({ timeout: T });
  await c.locator(sel('search-input')).fill(word);
  const result = c.locator(sel('search-result', `[data-message-id="${target.id}"]`));
  await result.waitFor({ timeout: T });
  // The snippet: the hit in a <mark>, the rest as literal text (no markup made).
  const snip = result.locator(sel('search-snippet'));
  assert.equal(await snip.locator('mark').first().textContent(), word);
  assert.match(await snip.textContent(), /<b>not bold<\/b> & co/);
  assert.equal(await snip.locator('b').count(), 0, 'no element from the message text');
  assert.match(await result.textContent(), /Bob Tester/);
  assert.match(await result.textContent(), new RegExp(`Group ${RUN}`));

  await result.click();
  await c.locator(sel('search-dialog')).waitFor({ state: 'detached', timeout: T });
  await c.locator(sel('conversation-title')).filter({ hasText: `Group ${RUN}` }).waitFor({ timeout: T });
  const msg = c.locator(`${sel('message')}[data-id="${target.id}"]`);
  await msg.waitFor({ state: 'visible', timeout: T });
  await c.waitForFunction((id) => {
    const el = document.querySelector(`[data-testid="message"][data-id="${id}"]`);
    const box = document.querySelector('[data-testid="message-list"]');
    if (!el || !box || !el.classList.contains('flash')) return false;
    const r = el.getBoundingClientRect(), l = box.getBoundingClientRect();
    return r.top >= l.top - 1 && r.bottom <= l.bottom + 1;
  }, target.id, { timeout: T });
  assert.ok(C.requests.some((u) => u.includes(`around=${target.id}`)), 'the messages around the hit were loaded');

  // Keyboard: "/" opens the search too, Escape closes it.
  await c.locator(sel('message-list')).focus();
  await c.keyboard.press('/');
  await c.locator(sel('search-dialog')).waitFor({ timeout: T });
  await c.keyboard.press('Escape');
  await c.locator(sel('search-dialog')).waitFor({ state: 'detached', timeout: T });
  assertClean(C);
  await C.context.close();
});

test('admin page: users, an invite with its code, inline errors; hidden from non-admins', async () => {
  assert.equal(await A.page.locator(sel('open-admin')).count(), 0, 'no admin link for a non-admin');
  const admin = { username: process.env.LANCHAT_ADMIN_USER, password: process.env.LANCHAT_ADMIN_PASSWORD };
  assert.ok(admin.username && admin.password, 'LANCHAT_ADMIN_USER and LANCHAT_ADMIN_PASSWORD are set');
  const M = await openPage('admin');
  const p = M.page;
  await p.goto(`${BASE}/#/login`);
  await p.locator(sel('login-username')).fill(admin.username);
  await p.locator(sel('login-password')).fill(admin.password);
  await p.locator(sel('login-submit')).click();
  await p.locator(sel('main-view')).waitFor({ timeout: T });
  await p.evaluate(() => localStorage.setItem('lanchat.notif-dismissed', '1'));

  await p.locator(sel('open-admin')).click();
  await p.locator(sel('admin-page')).waitFor({ timeout: T });
  assert.match(p.url(), /#\/admin$/);
  await p.locator(sel('admin-user', `[data-username="${users.alice.username}"]`)).waitFor({ timeout: T });
  await p.locator(sel('admin-user', `[data-username="${admin.username}"]`)).locator(sel('admin-user-admin-tag')).waitFor({ timeout: T });
  await p.locator(sel('admin-stats')).locator('dd').first().waitFor({ timeout: T });
  assert.equal(await p.locator(sel('admin-server-name')).inputValue(), 'lanchat');

  // an invite: created, its code shown and listed
  await p.locator(sel('admin-invite-uses')).fill('3');
  await p.locator(sel('admin-invite-create')).click();
  const code = (await p.locator(sel('admin-new-invite-code')).textContent({ timeout: T })).trim();
  assert.match(code, /^[0-9A-HJKMNP-TV-Z]{20}$/, `invite code ${code}`);
  const row = p.locator(sel('admin-invite', `[data-code="${code}"]`));
  await row.waitFor({ timeout: T });
  assert.match(await row.textContent(), /3 uses left/);
  await row.locator(sel('admin-invite-delete')).click();
  await row.waitFor({ state: 'detached', timeout: T });

  // creating an account: a bad password is an inline error, a good one a new row
  M.allow.push(/status of 400/);
  const name = `dave_${RUN}`;
  await p.locator(sel('admin-create-username')).fill(name);
  await p.locator(sel('admin-create-password')).fill('x');
  await p.locator(sel('admin-create-submit')).click();
  await p.locator(sel('admin-create-error')).waitFor({ timeout: T });
  await p.locator(sel('admin-create-password')).fill(PASSWORD);
  await p.locator(sel('admin-create-submit')).click();
  const dave = p.locator(sel('admin-user', `[data-username="${name}"]`));
  await dave.waitFor({ timeout: T });
  assert.equal(await p.locator(sel('admin-create-error')).isVisible(), false);

  // disable and enable again
  await dave.locator(sel('admin-user-toggle-disabled')).click();
  await p.locator(sel('confirm-ok')).click();
  await p.locator(sel('admin-user', `[data-username="${name}"]`)).locator(sel('admin-user-disabled-tag')).waitFor({ timeout: T });
  await p.locator(sel('admin-user', `[data-username="${name}"]`)).locator(sel('admin-user-toggle-disabled')).click();
  await p.locator(sel('admin-user', `[data-username="${name}"]`)).locator(sel('admin-user-toggle-disabled')).filter({ hasText: 'Disable' }).waitFor({ timeout: T });
  assert.equal((await api('POST', '/auth/login', { username: name, password: PASSWORD })).status, 200, 'the new account can sign in');
  assertClean(M);
  await M.context.close();
});

test('a new contact shows as online: presence is read when the first shared conversation appears', async () => {
  const a = A.page;
  // Erin exists and is offline when A loads the directory...
  const erin = await registerViaApi('erin', 'Erin Tester');
  await a.reload();
  await a.locator(sel('main-view')).waitFor({ timeout: T });
  // ...then comes online: A is not told, they share no conversation yet.
  const E = await openPage('E');
  await login(E, erin);
  // Erin writes to A first.
  const opened = await api('POST', '/conversations', { kind: 'direct', user_id: users.alice.id }, erin.token);
  assert.equal(opened.status, 201, JSON.stringify(opened.json));
  await openConversation(a, 'Erin Tester');
  await a.getByRole('heading', { name: 'Erin Tester' }).waitFor({ timeout: T });
  await a.locator(sel('conversation-subtitle')).filter({ hasText: /^online/ }).waitFor({ timeout: T });
  assertClean(A);
  assertClean(E);
  await E.context.close();
});

test('screenshots of the main view (desktop and phone)', { skip: !SHOTS && 'LANCHAT_SCREENSHOTS is not 1' }, async () => {
  mkdirSync(SHOT_DIR, { recursive: true });
  // A small, realistic conversation in the group, written through the API.
  const title = `Group ${RUN}`;
  const list = await api('GET', '/conversations', undefined, users.carol.token);
  const group = list.json.items.find((c) => c.title === title);
  assert.ok(group, 'group visible to carol');
  const post = async (who, body, extra = {}) => {
    const r = await api('POST', `/conversations/${group.id}/messages`, { body, client_id: `shot-${RUN}-${Math.random()}`, ...extra }, users[who].token);
    assert.ok(r.status === 201 || r.status === 200, `post: HTTP ${r.status}`);
    return r.json;
  };
  const m1 = await post('carol', 'Morning! Build 142 is green on all three platforms.');
  await post('bob', 'Nice. I ran the upgrade on the staging box, no surprises.');
  await post('bob', `@${users.alice.username} can you tag the release when you have a minute?`);
  await api('PUT', `/messages/${m1.id}/reactions/${encodeURIComponent('🎉')}`, undefined, users.bob.token);
  const a = A.page;
  await openConversation(a, title);
  await messageWith(a, 'can you tag the release').waitFor({ timeout: T });
  const m = messageWith(a, 'Build 142 is green');
  await m.hover();
  await m.locator(sel('msg-reply')).click();
  await send(a, 'On it — tagging v1.4.0 now.');
  await messageWith(a, 'tagging v1.4.0').waitFor({ timeout: T });
  await a.mouse.move(0, 0);
  await a.locator(sel('composer-input')).blur();
  await a.waitForTimeout(500);
  await a.screenshot({ path: `${SHOT_DIR}desktop.png` });

  const P = await openPage('phone-shot', { width: 390, height: 844 });
  await login(P, users.carol);
  await openConversation(P.page, title);
  await messageWith(P.page, 'tagging v1.4.0').waitFor({ timeout: T });
  await P.page.mouse.move(200, 20);
  await P.page.waitForTimeout(500);
  await P.page.screenshot({ path: `${SHOT_DIR}phone.png` });
  assertClean(P);
  await P.context.close();
});

test('no page requested another origin, logged an error or opened a dialog', () => {
  for (const rec of pages) {
    assert.ok(rec.requests.length > 0, `${rec.name}: saw requests`);
    assertClean(rec);
  }
});
