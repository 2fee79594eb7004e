// Profile: display name, status, notifications, password, sessions, sign out.

import { h, replaceChildren } from '../dom.js';
import * as api from '../api.js';
import * as store from '../store.js';
import { relative, fullDate } from '../format.js';
import { avatar, showToast, showFormError } from './common.js';
import { openDialog, confirmDialog } from './dialog.js';
import * as notify from '../notify.js';

function describeAgent(ua) {
  if (!ua) return 'Unknown device';
  const browser = /Edg\//.test(ua) ? 'Edge' : /Firefox\//.test(ua) ? 'Firefox' : /Chrome\/|Chromium\//.test(ua) ? 'Chrome' : /Safari\//.test(ua) ? 'Safari' : null;
  const os = /Windows/.test(ua) ? 'Windows' : /Android/.test(ua) ? 'Android' : /iPhone|iPad/.test(ua) ? 'iOS' : /Mac OS X/.test(ua) ? 'macOS' : /Linux/.test(ua) ? 'Linux' : null;
  return browser || os ? [browser, os].filter(Boolean).join(' on ') : ua.slice(0, 60);
}

export function openProfile({ onLogout }) {
  openDialog({
    title: 'Profile and settings',
    testid: 'profile-dialog',
    content: () => {
      const me = store.state.me;

      const profile = h('form', { class: 'stack', testid: 'profile-form', on: { submit: async (e) => {
        e.preventDefault();
        showFormError(profile, null);
        try {
          await store.updateMe({
            display_name: profile.elements.namedItem('display_name').value.trim(),
            status_text: profile.elements.namedItem('status_text').value.trim(),
          });
          showToast('Profile saved');
        } catch (ex) { showFormError(profile, ex); }
      } } },
        h('div', { class: 'profile-card' }, avatar(me, { size: 'lg' }),
          h('div', null, h('p', { class: 'user-name', text: `@${me.username}` }), me.is_admin ? h('p', { class: 'muted', text: 'Administrator' }) : null)),
        h('div', { class: 'field' }, h('label', { for: 'p-dn', text: 'Display name' }),
          h('input', { id: 'p-dn', name: 'display_name', value: me.display_name || '', maxlength: 64, autocomplete: 'name', testid: 'profile-display-name' })),
        h('div', { class: 'field' }, h('label', { for: 'p-st', text: 'Status' }),
          h('input', { id: 'p-st', name: 'status_text', value: me.status_text || '', maxlength: 140, placeholder: 'In a meeting until 3', testid: 'profile-status' })),
        h('p', { class: 'form-error', role: 'alert', hidden: true }),
        h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'btn btn-primary', testid: 'profile-save' }, 'Save profile')));

      const notifBox = h('div', { class: 'stack' });
      function renderNotif() {
        const p = notify.permission();
        replaceChildren(notifBox, h('h3', { text: 'Notifications' }),
          p === 'unsupported'
            ? h('p', { class: 'muted' }, 'Desktop notifications need a secure connection. ',
              h('a', { href: '/trust' }, 'Turn on the secure connection'), '. Unread counts still show in the tab title.')
            : p === 'granted' ? h('p', { class: 'muted', text: 'Desktop notifications are on for new messages while this tab is in the background.' })
              : p === 'denied' ? h('p', { class: 'muted', text: 'Notifications are blocked in this browser\u2019s site settings.' })
                : h('button', { type: 'button', class: 'btn', testid: 'enable-notifications', on: { click: async () => { await notify.requestPermission(); renderNotif(); } } }, 'Enable desktop notifications'));
      }
      renderNotif();

      const pw = h('form', { class: 'stack', testid: 'password-form', on: { submit: async (e) => {
        e.preventDefault();
        showFormError(pw, null);
        const cur = pw.elements.namedItem('current_password').value;
        const next = pw.elements.namedItem('new_password').value;
        const again = pw.elements.namedItem('new_password_again').value;
        if (next !== again) { showFormError(pw, { field: 'new_password_again', message: 'The new passwords do not match.' }); return; }
        try {
          await api.post('/users/me/password', { current_password: cur, new_password: next });
          pw.reset();
          showToast('Password changed. Other devices were signed out.');
          loadSessions();
        } catch (ex) { showFormError(pw, ex); }
      } } },
        h('h3', { text: 'Change password' }),
        h('input', { type: 'text', name: 'username', value: me.username, autocomplete: 'username', hidden: true, readOnly: true }),
        h('div', { class: 'field' }, h('label', { for: 'p-cur', text: 'Current password' }), h('input', { id: 'p-cur', type: 'password', name: 'current_password', required: true, autocomplete: 'current-password', testid: 'password-current' })),
        h('div', { class: 'field' }, h('label', { for: 'p-new', text: 'New password' }), h('input', { id: 'p-new', type: 'password', name: 'new_password', required: true, minlength: 8, autocomplete: 'new-password', testid: 'password-new' })),
        h('div', { class: 'field' }, h('label', { for: 'p-new2', text: 'Repeat new password' }), h('input', { id: 'p-new2', type: 'password', name: 'new_password_again', required: true, minlength: 8, autocomplete: 'new-password', testid: 'password-new-again' })),
        h('p', { class: 'form-error', role: 'alert', hidden: true }),
        h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'btn', testid: 'password-submit' }, 'Change password')));

      const sessionsList = h('ul', { class: 'session-list', testid: 'session-list' });
      async function loadSessions() {
        try {
          const res = await api.get('/auth/sessions');
          const items = Array.isArray(res) ? res : (res.items || []);
          replaceChildren(sessionsList, items.map((s) => {
            const current = s.current === true || s.is_current === true;
            return h('li', { class: 'session-row', testid: 'session-row', dataset: { current: current ? '1' : '0' } },
              h('span', { class: 'user-text' },
                h('span', { class: 'user-name', text: describeAgent(s.user_agent) + (current ? ' (this device)' : '') }),
                h('span', { class: 'user-sub muted', title: s.created_at ? `Signed in ${fullDate(s.created_at)}` : '',
                  text: [s.address || s.ip, s.last_used_at ? `active ${relative(s.last_used_at)}` : null].filter(Boolean).join(' · ') })),
              current ? null : h('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', testid: 'session-revoke', on: { click: async () => {
                try { await api.del(`/auth/sessions/${s.id}`); loadSessions(); } catch (ex) { showToast(ex.message, 'error'); }
              } } }, 'Sign out'));
          }));
        } catch (ex) { replaceChildren(sessionsList, h('li', { class: 'muted', text: ex.message })); }
      }
      loadSessions();

      return [
        profile,
        h('hr'),
        notifBox,
        h('hr'),
        pw,
        h('hr'),
        h('div', { class: 'stack' }, h('h3', { text: 'Signed-in devices' }), sessionsList),
        h('hr'),
        h('div', { class: 'actions actions-start' },
          h('button', { type: 'button', class: 'btn btn-danger', testid: 'logout', on: { click: async () => {
            if (await confirmDialog('Sign out?', 'Unsent messages and drafts on this device will be discarded.', 'Sign out')) onLogout();
          } } }, 'Sign out')),
      ];
    },
  });
}
