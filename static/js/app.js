// Entry point: decides between setup / login / register and the main view,
// and maps #/ routes onto the store.

import { h, replaceChildren } from './dom.js';
import * as api from './api.js';
import * as store from './store.js';
import * as notify from './notify.js';
import { renderAuth } from './ui/auth.js';
import { mountShell } from './ui/shell.js';
import { showToast } from './ui/common.js';
import { routes, app as appHooks } from './ui/hooks.js';
// Feature modules (issue 6): they register themselves in hooks.js.
import './ui/upload.js';
import './ui/search.js';
import './ui/admin.js';

const root = document.getElementById('app');
let shell = null;
let authMode = null;

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean);
  if (parts[0] === 'c' && /^\d+$/.test(parts[1] || '')) return { name: 'conversation', id: Number(parts[1]) };
  return { name: parts[0] || 'home', params: parts.slice(1) };
}

export function navigate(hash) {
  if (location.hash !== hash) location.hash = hash;
  else applyRoute();
}

function applyRoute() {
  const r = parseRoute();
  if (!shell) {
    if (authMode && (r.name === 'login' || r.name === 'register' || r.name === 'setup') && r.name !== authMode) showAuth(r.name);
    return;
  }
  if (r.name === 'conversation') { store.setCurrent(r.id); return; }
  store.setCurrent(null);
  if (routes[r.name]) routes[r.name]({ params: r.params, show: (node, cleanup) => shell.showPage(node, cleanup) });
  else shell.showPage(null);
}

function showAuth(mode, message) {
  if (shell) { shell.destroy(); shell = null; }
  authMode = mode;
  const want = `#/${mode}`;
  if (location.hash !== want) history.replaceState(null, '', want);
  renderAuth(root, mode, { message, setupToken, serverName: store.state.serverName, onAuthed: () => { authMode = null; startApp(); } });
  notify.updateTitle();
}

async function serverInfo() {
  try {
    const info = await api.publicGet('/setup');
    if (info && info.server_name) { store.state.serverName = info.server_name; notify.updateTitle(); }
    return info || {};
  } catch { return {}; } // offline
}

async function showSignedOut(message) {
  const needsSetup = !!(await serverInfo()).needs_setup;
  const r = parseRoute();
  if (r.name === 'register' || r.name === 'login') showAuth(r.name, message);
  else showAuth(needsSetup ? 'setup' : 'login', message);
}

async function startApp(attempt = 0) {
  let me;
  try {
    me = await api.get('/users/me');
  } catch (e) {
    if (e.status === 401 || !api.hasSession()) { showSignedOut(); return; }
    // Server unreachable (e.g. restarting): keep the session and try again.
    const wait = Math.min(30_000, 1000 * 2 ** attempt) * (0.5 + Math.random() / 2);
    replaceChildren(root, h('div', { class: 'boot', role: 'status', testid: 'boot-offline' },
      h('p', { text: 'Cannot reach the lanchat server. Retrying…' }),
      h('p', { class: 'muted', text: 'Unsent messages and drafts are kept on this device.' }),
      h('button', { type: 'button', class: 'btn', on: { click: () => startApp(0) } }, 'Retry now')));
    setTimeout(() => { if (!shell) startApp(attempt + 1); }, wait);
    return;
  }
  if (shell) return;
  if (['login', 'register', 'setup'].includes(parseRoute().name)) history.replaceState(null, '', '#/');
  api.scheduleRefresh();
  shell = mountShell(root, { navigate, onLogout: logout });
  const r = parseRoute();
  if (r.name === 'conversation') store.state.currentId = r.id;
  await store.start(me);
  if (r.name === 'conversation' && !store.conv(r.id)) navigate('#/');
  applyRoute();
}

async function logout() {
  try { await api.post('/auth/logout'); } catch { /* session may already be gone */ }
  if (shell) { shell.destroy(); shell = null; }
  store.forgetLocalData();
  store.stop();
  api.clearSession();
  history.replaceState(null, '', '#/login');
  showSignedOut('You have been signed out.');
}

// The server prints a setup URL "/setup?token=…" at first start: take the token
// and drop it from the address bar.
let setupToken = null;
function takeSetupUrl() {
  if (location.pathname.replace(/\/+$/, '') !== '/setup') return;
  setupToken = new URLSearchParams(location.search).get('token');
  history.replaceState(null, '', '/#/setup');
}

function boot() {
  takeSetupUrl();
  store.onToast((text, kind) => showToast(text, kind));
  notify.init({ onOpen: (id) => navigate(`#/c/${id}`) });
  api.onAuthLost(() => {
    if (shell) { shell.destroy(); shell = null; }
    store.stop();
    showSignedOut('Your session has ended. Please sign in again.');
  });
  window.addEventListener('hashchange', applyRoute);
  if (api.hasSession()) { startApp(); serverInfo(); } else showSignedOut();
}

// Handles for feature modules (issue 6: search → jump to a message).
appHooks.navigate = navigate;
appHooks.jumpToMessage = (convId, messageId) => { if (shell) shell.jumpTo(convId, messageId); };

boot();
