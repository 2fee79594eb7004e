// The admin page (#/admin, for admins only): statistics, settings, accounts
// (create, disable/enable, grant/revoke admin, reset password) and invites.

import { h, replaceChildren } from '../dom.js';
import * as api from '../api.js';
import * as store from '../store.js';
import { displayName, fullDate, formatBytes } from '../format.js';
import { icon, iconButton, errorText, showToast } from './common.js';
import { openDialog, confirmDialog } from './dialog.js';
import { registerSidebarTool, registerRoute, app } from './hooks.js';

const errBox = (testid) => h('p', { class: 'form-error', hidden: true, role: 'alert', testid });
function showErr(box, e) { box.textContent = e ? errorText(e) : ''; box.hidden = !e; }

function section(title, testid, ...children) {
  return h('section', { class: 'admin-section', testid, 'aria-label': title }, h('h2', { text: title }), ...children);
}

function field(label, input) {
  return h('div', { class: 'field' }, h('label', { for: input.id, text: label }), input);
}

let seq = 0;
const uid = (p) => `${p}-${++seq}`;

function renderAdmin({ show }) {
  const me = store.state.me;
  if (!me || !me.is_admin) {
    show(h('div', { class: 'admin-page', testid: 'admin-page' },
      h('h1', { text: 'Administration' }),
      h('p', { class: 'form-error', testid: 'admin-forbidden', text: 'Only administrators can open this page.' })));
    return;
  }
  let alive = true;

  // ------------------------------------------------------------ stats
  const statsBox = h('dl', { class: 'admin-stats', testid: 'admin-stats' });
  const statsErr = errBox('admin-stats-error');
  async function loadStats() {
    try {
      const s = await api.get('/admin/stats');
      if (!alive) return;
      const rows = [['Users', s.users], ['Online', s.online_users], ['Conversations', s.conversations], ['Messages', s.messages],
        ['Database', formatBytes(s.database_bytes)], ['Attachments', formatBytes(s.attachment_bytes)]];
      replaceChildren(statsBox, rows.map(([k, v]) => h('div', { class: 'admin-stat' }, h('dt', { text: k }), h('dd', { text: String(v) }))));
      showErr(statsErr, null);
    } catch (e) { showErr(statsErr, e); }
  }

  // ------------------------------------------------------------ settings
  const regSel = h('select', { id: uid('adm-reg'), name: 'registration', testid: 'admin-registration' },
    ['open', 'invite', 'closed'].map((v) => h('option', { value: v, text: v === 'open' ? 'Open: anyone can register' : v === 'invite' ? 'Invite code needed' : 'Closed' })));
  const nameInput = h('input', { id: uid('adm-name'), name: 'server_name', class: 'input', maxlength: 64, required: true, testid: 'admin-server-name' });
  const settingsErr = errBox('admin-settings-error');
  const settingsForm = h('form', { class: 'stack', testid: 'admin-settings-form', on: { submit: saveSettings } },
    field('Registration', regSel), field('Server name', nameInput), settingsErr,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'btn btn-primary', testid: 'admin-settings-save' }, 'Save settings')));
  async function loadSettings() {
    try {
      const s = await api.get('/admin/settings');
      if (!alive) return;
      regSel.value = s.registration;
      nameInput.value = s.server_name;
      showErr(settingsErr, null);
    } catch (e) { showErr(settingsErr, e); }
  }
  async function saveSettings(e) {
    e.preventDefault();
    const btn = settingsForm.querySelector('button[type=submit]');
    btn.disabled = true;
    try {
      const s = await api.patch('/admin/settings', { registration: regSel.value, server_name: nameInput.value.trim() });
      regSel.value = s.registration;
      nameInput.value = s.server_name;
      showErr(settingsErr, null);
      showToast('Settings saved.');
    } catch (err) { showErr(settingsErr, err); } finally { btn.disabled = false; }
  }

  // ------------------------------------------------------------ users
  const userQ = h('input', { type: 'search', class: 'input', placeholder: 'Filter by name', 'aria-label': 'Filter users', testid: 'admin-user-filter' });
  const userList = h('ul', { class: 'admin-list', testid: 'admin-users' });
  const usersErr = errBox('admin-users-error');
  const usersMore = h('button', { type: 'button', class: 'btn btn-small', hidden: true, testid: 'admin-users-more', on: { click: () => loadUsers(false) } }, 'Load more');
  let userCursor = null;
  let userSeq = 0;
  let filterTimer = null;
  userQ.addEventListener('input', () => { clearTimeout(filterTimer); filterTimer = setTimeout(() => loadUsers(true), 250); });

  async function loadUsers(fresh) {
    const my = ++userSeq;
    try {
      const page = await api.get('/admin/users', { q: userQ.value.trim(), cursor: fresh ? null : userCursor, limit: 50 });
      if (!alive || my !== userSeq) return;
      if (fresh) replaceChildren(userList);
      for (const u of page.items) userList.appendChild(userRow(u));
      userCursor = page.next_cursor;
      usersMore.hidden = !userCursor;
      showErr(usersErr, null);
    } catch (e) { if (my === userSeq) showErr(usersErr, e); }
  }

  function userRow(u) {
    const rowErr = errBox('admin-user-error');
    const li = h('li', { class: ['admin-row', u.disabled && 'is-disabled'], testid: 'admin-user', dataset: { username: u.username, userId: u.id } });
    const patch = async (body, btn) => {
      btn.disabled = true;
      try {
        const nu = await api.patch(`/admin/users/${u.id}`, body);
        if (nu.id === store.state.me.id) store.putUser(nu);
        li.replaceWith(userRow(nu));
        loadStats();
      } catch (e) { showErr(rowErr, e); btn.disabled = false; }
    };
    const toggleDisabled = h('button', { type: 'button', class: ['btn', 'btn-small', !u.disabled && 'btn-danger-ghost'], testid: 'admin-user-toggle-disabled',
      on: { click: async (e) => {
        const btn = e.currentTarget;
        if (!u.disabled && !(await confirmDialog('Disable account?', `${u.username} will be signed out everywhere and cannot sign in until re-enabled.`, 'Disable', { danger: true }))) return;
        patch({ disabled: !u.disabled }, btn);
      } } }, u.disabled ? 'Enable' : 'Disable');
    const toggleAdmin = h('button', { type: 'button', class: 'btn btn-small', testid: 'admin-user-toggle-admin',
      on: { click: (e) => patch({ is_admin: !u.is_admin }, e.currentTarget) } }, u.is_admin ? 'Revoke admin' : 'Make admin');
    const reset = h('button', { type: 'button', class: 'btn btn-small', testid: 'admin-user-reset-password', on: { click: () => resetPassword(u, rowErr) } }, 'Reset password');
    replaceChildren(li,
      h('span', { class: 'admin-row-main' },
        h('strong', { text: displayName(u) }),
        h('span', { class: 'muted', text: ` @${u.username}` }),
        u.is_admin ? h('span', { class: 'tag', testid: 'admin-user-admin-tag' }, icon('shield'), ' admin') : null,
        u.disabled ? h('span', { class: 'tag tag-danger', testid: 'admin-user-disabled-tag', text: 'disabled' }) : null,
        h('span', { class: 'muted admin-row-sub', text: `Joined ${fullDate(u.created_at)}` })),
      h('span', { class: 'admin-row-actions' }, toggleDisabled, toggleAdmin, reset),
      rowErr);
    return li;
  }

  function resetPassword(u, rowErr) {
    const pw = h('input', { id: uid('adm-pw'), type: 'password', name: 'password', class: 'input', required: true, autocomplete: 'new-password', autofocus: true, testid: 'admin-reset-password-input' });
    const err = errBox('admin-reset-error');
    openDialog({
      title: `New password for ${u.username}`,
      testid: 'admin-reset-dialog',
      className: 'dlg-small',
      content: ({ close }) => h('form', { class: 'stack', on: { submit: async (e) => {
        e.preventDefault();
        try {
          await api.patch(`/admin/users/${u.id}`, { password: pw.value });
          close();
          showErr(rowErr, null);
          showToast(`Password of ${u.username} changed; their sessions were signed out.`);
        } catch (ex) { showErr(err, ex); }
      } } },
      h('p', { class: 'muted', text: 'They will be signed out everywhere and must use the new password.' }),
      field('New password', pw), err,
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'btn', on: { click: () => close() } }, 'Cancel'),
        h('button', { type: 'submit', class: 'btn btn-primary', testid: 'admin-reset-submit' }, 'Set password'))),
    });
  }

  // create user
  const cuName = h('input', { id: uid('adm-cu-name'), name: 'username', class: 'input', required: true, autocomplete: 'off', testid: 'admin-create-username' });
  const cuDisplay = h('input', { id: uid('adm-cu-display'), name: 'display_name', class: 'input', autocomplete: 'off', testid: 'admin-create-display-name' });
  const cuPw = h('input', { id: uid('adm-cu-pw'), type: 'password', name: 'password', class: 'input', required: true, autocomplete: 'new-password', testid: 'admin-create-password' });
  const cuAdmin = h('input', { id: uid('adm-cu-admin'), type: 'checkbox', name: 'is_admin', testid: 'admin-create-is-admin' });
  const createForm = h('form', { class: 'stack admin-create', testid: 'admin-create-user-form', on: { submit: createUser } },
    h('h3', { text: 'Create an account' }),
    h('div', { class: 'admin-grid' }, field('Username', cuName), field('Display name (optional)', cuDisplay), field('Initial password', cuPw)),
    h('label', { class: 'check' }, cuAdmin, ' Administrator'),
    h('p', { class: 'form-error', hidden: true, role: 'alert', testid: 'admin-create-error' }),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'btn btn-primary', testid: 'admin-create-submit' }, 'Create account')));
  async function createUser(e) {
    e.preventDefault();
    const box = createForm.querySelector('.form-error');
    const body = { username: cuName.value.trim(), password: cuPw.value, is_admin: cuAdmin.checked };
    if (cuDisplay.value.trim()) body.display_name = cuDisplay.value.trim();
    try {
      const u = await api.post('/admin/users', body);
      showErr(box, null);
      createForm.reset();
      showToast(`Account ${u.username} created.`);
      loadUsers(true);
      loadStats();
    } catch (err) {
      showErr(box, err);
      if (err.field) { const i = createForm.querySelector(`[name="${CSS.escape(err.field)}"]`); if (i) i.focus(); }
    }
  }

  // ------------------------------------------------------------ invites
  const invUses = h('input', { id: uid('adm-inv-uses'), type: 'number', name: 'uses', class: 'input', min: 1, max: 1000, value: '1', testid: 'admin-invite-uses' });
  const invExpiry = h('select', { id: uid('adm-inv-exp'), name: 'expires_in', testid: 'admin-invite-expiry' },
    [['3600', '1 hour'], ['86400', '1 day'], ['604800', '7 days'], ['2592000', '30 days'], ['', 'Never']].map(([v, t]) => h('option', { value: v, text: t })));
  invExpiry.value = '604800';
  const invErr = errBox('admin-invites-error');
  const invList = h('ul', { class: 'admin-list', testid: 'admin-invites' });
  const invMore = h('button', { type: 'button', class: 'btn btn-small', hidden: true, testid: 'admin-invites-more', on: { click: () => loadInvites(false) } }, 'Load more');
  const newCode = h('div', { class: 'admin-new-code', hidden: true, testid: 'admin-new-invite' });
  let invCursor = null;
  const invForm = h('form', { class: 'admin-inline-form', testid: 'admin-invite-form', on: { submit: createInvite } },
    field('Uses', invUses), field('Expires after', invExpiry),
    h('button', { type: 'submit', class: 'btn btn-primary', testid: 'admin-invite-create' }, 'Create invite'));

  async function createInvite(e) {
    e.preventDefault();
    const body = { uses: Number(invUses.value) || 1 };
    if (invExpiry.value) body.expires_in = Number(invExpiry.value);
    try {
      const inv = await api.post('/admin/invites', body);
      showErr(invErr, null);
      replaceChildren(newCode, h('span', { text: 'New invite code: ' }), h('code', { class: 'invite-code', testid: 'admin-new-invite-code', text: inv.code }),
        h('button', { type: 'button', class: 'btn btn-small', on: { click: () => copy(inv.code) } }, 'Copy'));
      newCode.hidden = false;
      loadInvites(true);
    } catch (err) { showErr(invErr, err); }
  }

  async function copy(text) {
    try { await navigator.clipboard.writeText(text); showToast('Copied.'); } catch { showToast('Copy it by hand: the clipboard is not available here.', 'error'); }
  }

  function inviteState(inv) {
    if (inv.uses_left <= 0) return 'used up';
    if (inv.expires_at && inv.expires_at < Date.now()) return 'expired';
    return `${inv.uses_left} use${inv.uses_left === 1 ? '' : 's'} left · ${inv.expires_at ? `expires ${fullDate(inv.expires_at)}` : 'no expiry'}`;
  }

  function inviteRow(inv) {
    const rowErr = errBox('admin-invite-error');
    const li = h('li', { class: 'admin-row', testid: 'admin-invite', dataset: { code: inv.code } },
      h('span', { class: 'admin-row-main' },
        h('code', { class: 'invite-code', testid: 'admin-invite-code', text: inv.code }),
        h('span', { class: 'muted admin-row-sub', text: `${inviteState(inv)} · created ${fullDate(inv.created_at)}` })),
      h('span', { class: 'admin-row-actions' },
        h('button', { type: 'button', class: 'btn btn-small', on: { click: () => copy(inv.code) } }, 'Copy'),
        iconButton('trash', `Delete invite ${inv.code}`, { class: 'icon-btn-small', testid: 'admin-invite-delete', on: { click: async () => {
          try { await api.del(`/admin/invites/${encodeURIComponent(inv.code)}`); li.remove(); } catch (e) { showErr(rowErr, e); }
        } } })),
      rowErr);
    return li;
  }

  async function loadInvites(fresh) {
    try {
      const page = await api.get('/admin/invites', { cursor: fresh ? null : invCursor, limit: 50 });
      if (!alive) return;
      if (fresh) replaceChildren(invList);
      for (const inv of page.items) invList.appendChild(inviteRow(inv));
      invCursor = page.next_cursor;
      invMore.hidden = !invCursor;
      if (!invList.children.length) invList.appendChild(h('li', { class: 'muted', text: 'No invites yet.' }));
    } catch (e) { showErr(invErr, e); }
  }

  const node = h('div', { class: 'admin-page', testid: 'admin-page' },
    h('header', { class: 'admin-head' },
      h('button', { type: 'button', class: 'btn btn-small', testid: 'admin-back', on: { click: () => app.navigate('#/') } }, icon('back'), ' Back'),
      h('h1', { text: 'Administration' })),
    section('Statistics', 'admin-stats-section', statsBox, statsErr),
    section('Settings', 'admin-settings-section', settingsForm),
    section('Accounts', 'admin-users-section', userQ, usersErr, userList, usersMore, createForm),
    section('Invites', 'admin-invites-section', h('p', { class: 'muted', text: 'Invite codes let people register while registration is set to “Invite code needed”.' }),
      invForm, invErr, newCode, invList, invMore));
  show(node, () => { alive = false; clearTimeout(filterTimer); });
  loadStats();
  loadSettings();
  loadUsers(true);
  loadInvites(true);
}

registerRoute('admin', renderAdmin);
registerSidebarTool({ id: 'admin', label: 'Admin', icon: 'shield', testid: 'open-admin', visible: (me) => !!(me && me.is_admin), run: () => app.navigate('#/admin') });
