// The secure connection in real headless Chromium, on a name that is not
// localhost (office.test, mapped to 127.0.0.1) so plain HTTP is not a secure
// context. The server's CA is trusted through the NSS database in $HOME (made
// by tests/browser.rs with certutil), as a person's browser would after
// following the trust page.
//
// Env: LANCHAT_PORT (the server's port), LANCHAT_URL (plain HTTP on loopback,
//      for API set-up calls), LANCHAT_FINGERPRINT (the CA's SHA-256),
//      CHROMIUM, HOME (with .pki/nssdb).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const PORT = process.env.LANCHAT_PORT;
const API = (process.env.LANCHAT_URL || '').replace(/\/+$/, '');
const FINGERPRINT = process.env.LANCHAT_FINGERPRINT;
const NAME = 'office.test';
const HTTP = `http://${NAME}:${PORT}`;
const HTTPS = `https://${NAME}:${PORT}`;
const RUN = Math.random().toString(36).slice(2, 7);
const PASSWORD = 'correct horse battery staple';
const T = 15_000;

let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [`--host-resolver-rules=MAP ${NAME} 127.0.0.1`],
  });
});

after(async () => { await browser?.close(); });

async function api(method, path, body, token) {
  const res = await fetch(`${API}/api/v1${path}`, {
    method,
    headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

async function register(key) {
  const username = `${key}_${RUN}`;
  const r = await api('POST', '/auth/register', { username, password: PASSWORD, display_name: key });
  assert.equal(r.status, 201, JSON.stringify(r.json));
  return { username, id: r.json.user.id, token: r.json.access_token };
}

test('over plain http on a LAN name the page is not secure, links to the trust page, and Check moves to https', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${HTTP}/`);
  assert.equal(await page.evaluate(() => window.isSecureContext), false);
  const link = page.getByRole('link', { name: 'Turn on the secure connection' });
  await link.waitFor({ timeout: T });
  await link.click();
  await page.waitForURL(`${HTTP}/trust`, { timeout: T });
  await page.getByRole('heading', { name: 'Turn on the secure connection' }).waitFor({ timeout: T });
  await page.waitForFunction(
    (fp) => document.querySelector('[data-testid="trust-fingerprint"]').textContent === fp,
    FINGERPRINT, { timeout: T });
  // Linux is detected and its steps are open.
  const linux = page.locator('details[data-platform="linux"]');
  assert.equal(await linux.getAttribute('open'), '');
  assert.ok(await page.getByRole('link', { name: 'Download the certificate (.crt)' }).isVisible());
  // The CA is trusted in this browser: Check takes us to the secure address.
  await page.getByRole('button', { name: 'Check' }).click();
  await page.waitForURL(`${HTTPS}/`, { timeout: T });
  assert.equal(await page.evaluate(() => window.isSecureContext), true);
  await context.close();
});

test('over https the page is a secure context and a message from another user raises a notification', async () => {
  const a = await register('ann');
  const b = await register('ben');
  const dm = await api('POST', '/conversations', { kind: 'direct', user_id: a.id }, b.token);
  assert.ok(dm.status === 201 || dm.status === 200, JSON.stringify(dm.json));

  const context = await browser.newContext({ permissions: ['notifications'] });
  await context.addInitScript(() => {
    // The tab counts as in the background (notifications are only for hidden
    // tabs), and every notification made is recorded: headless shows none.
    Object.defineProperty(document, 'hidden', { get: () => true });
    Object.defineProperty(document, 'visibilityState', { get: () => 'hidden' });
    window.__notifications = [];
    const Real = window.Notification;
    if (!Real) return;
    class Recorded extends Real {
      constructor(title, options) {
        window.__notifications.push({ title, body: options && options.body });
        super(title, options);
      }
    }
    Object.defineProperty(Recorded, 'permission', { get: () => Real.permission });
    Recorded.requestPermission = (...args) => Real.requestPermission(...args);
    window.Notification = Recorded;
  });
  const page = await context.newPage();
  await page.goto(`${HTTPS}/#/login`);
  assert.equal(await page.evaluate(() => window.isSecureContext), true);
  assert.equal(await page.evaluate(() => Notification.permission), 'granted');
  // No trust banner on a secure connection.
  assert.equal(await page.getByRole('link', { name: 'Turn on the secure connection' }).count(), 0);
  await page.getByLabel('Username').fill(a.username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('navigation', { name: 'Conversations' }).waitFor({ timeout: T });

  const text = `hello over https ${RUN}`;
  const sent = await api('POST', `/conversations/${dm.json.id}/messages`, { body: text }, b.token);
  assert.equal(sent.status, 201, JSON.stringify(sent.json));
  await page.waitForFunction(
    (t) => window.__notifications.some((n) => n.body && n.body.includes(t)),
    text, { timeout: T });
  const [note] = await page.evaluate(() => window.__notifications);
  assert.match(note.title, /ben/);
  await context.close();
});
