// Conversation details: title/topic, members with roles, add/remove, mute, leave.

import { h, replaceChildren, preserveFocus } from '../dom.js';
import * as api from '../api.js';
import * as store from '../store.js';
import { displayName, presenceText } from '../format.js';
import { avatar, showToast, showFormError } from './common.js';
import { openDialog, confirmDialog } from './dialog.js';
import { openAddMembers } from './people.js';

const ROLE_LABEL = { owner: 'Owner', admin: 'Admin', member: 'Member' };

export function openConversationSettings(convId, { onOpenDirect }) {
  const c0 = store.conv(convId);
  if (!c0) return;
  if (!Array.isArray(c0.members)) store.refreshConv(convId); // channels may omit long member lists
  const dlg = openDialog({
    title: c0.kind === 'direct' ? 'Conversation' : (c0.kind === 'channel' ? 'Channel settings' : 'Group settings'),
    testid: 'conversation-settings-dialog',
    onClose: () => unsub(),
    content: () => h('div', { class: 'stack settings-body' }),
  });
  const box = dlg.body.firstChild;
  const unsub = store.subscribe((ch) => { if (ch.has('convs') || ch.has('users')) render(); });

  let lastSig = null;
  function render() {
    const c = store.conv(convId);
    if (!c) { dlg.close(); return; }
    const me = store.state.me;
    const sig = JSON.stringify([c.title, c.topic, c.muted, c.my_role, c.member_count,
      (c.members || []).map((m) => { const u = store.user(m.user_id); return [m.user_id, m.role, u.display_name, u.online, u.status_text]; })]);
    if (sig === lastSig) return;
    lastSig = sig;
    // keep what the user is typing in the form across a re-render
    const typed = {};
    for (const name of ['title', 'topic']) {
      const el = box.querySelector(`input[name="${name}"]`);
      if (el && el.value !== (el.dataset.orig || '')) typed[name] = el.value;
    }
    const isMod = c.my_role === 'owner' || c.my_role === 'admin';
    const isOwner = c.my_role === 'owner';
    const parts = [];

    if (c.kind === 'direct') {
      const o = store.otherMember(c);
      const u = o ? store.user(o.user_id) : null;
      if (u) {
        parts.push(h('div', { class: 'profile-card' },
          avatar(u, { size: 'lg', presence: true }),
          h('div', null,
            h('p', { class: 'user-name', text: displayName(u) }),
            h('p', { class: 'muted', text: `@${u.username} · ${presenceText(u)}` }),
            u.status_text ? h('p', { text: u.status_text }) : null)));
      }
    } else {
      const form = h('form', { class: 'stack', testid: 'conv-settings-form', on: { submit: async (e) => {
        e.preventDefault();
        showFormError(form, null);
        const title = form.elements.namedItem('title').value.trim();
        const topic = form.elements.namedItem('topic').value.trim();
        const patch = {};
        if (title !== (c.title || '')) patch.title = title;
        if (topic !== (c.topic || '')) patch.topic = topic;
        if (!Object.keys(patch).length) return;
        try { await store.updateConv(convId, patch); showToast('Saved'); } catch (ex) { showFormError(form, ex); }
      } } },
        h('div', { class: 'field' }, h('label', { for: 'cs-title', text: c.kind === 'channel' ? 'Channel name' : 'Group name' }),
          h('input', { id: 'cs-title', name: 'title', value: typed.title ?? (c.title || ''), dataset: { orig: c.title || '' }, maxlength: 100, required: true, readOnly: !isMod, testid: 'conv-title-input' })),
        h('div', { class: 'field' }, h('label', { for: 'cs-topic', text: 'Topic' }),
          h('input', { id: 'cs-topic', name: 'topic', value: typed.topic ?? (c.topic || ''), dataset: { orig: c.topic || '' }, maxlength: 250, readOnly: !isMod, testid: 'conv-topic-input' })),
        h('p', { class: 'form-error', role: 'alert', hidden: true }),
        isMod ? h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'btn btn-primary', testid: 'conv-settings-save' }, 'Save')) : null);
      parts.push(form);
    }

    parts.push(h('label', { class: 'switch' },
      h('input', { type: 'checkbox', checked: !!c.muted, testid: 'conv-mute', on: { change: (e) => store.setMuted(convId, e.target.checked).catch((ex) => showToast(ex.message, 'error')) } }),
      h('span', { text: 'Mute notifications (mentions still notify)' })));

    if (c.kind !== 'direct') {
      const members = Array.isArray(c.members) ? c.members.slice() : [];
      const order = { owner: 0, admin: 1, member: 2 };
      members.sort((a, b) => (order[a.role] - order[b.role]) || displayName(store.user(a.user_id)).localeCompare(displayName(store.user(b.user_id))));
      const n = c.member_count || members.length;
      parts.push(h('div', { class: 'section-head' },
        h('h3', { text: `Members (${n})` }),
        c.kind === 'group' && isMod ? h('button', { type: 'button', class: 'btn btn-small', testid: 'add-members', on: { click: () => openAddMembers(c) } }, 'Add people') : null));
      if (!members.length && n) parts.push(h('p', { class: 'muted', text: 'Loading members…' }));
      parts.push(h('ul', { class: 'user-list', testid: 'member-list' }, members.map((m) => {
        const u = store.user(m.user_id);
        const self = m.user_id === me.id;
        const controls = [];
        if (isOwner && !self && m.role !== 'owner') {
          const sel = h('select', { 'aria-label': `Role of ${displayName(u)}`, testid: 'member-role', on: { change: async () => {
            try { await store.setRole(convId, m.user_id, sel.value); } catch (ex) { showToast(ex.message, 'error'); render(); }
          } } },
          h('option', { value: 'member', selected: m.role === 'member' }, 'Member'),
          h('option', { value: 'admin', selected: m.role === 'admin' }, 'Admin'));
          controls.push(sel);
        } else controls.push(h('span', { class: 'role-tag', text: ROLE_LABEL[m.role] || m.role }));
        if (isMod && !self && m.role !== 'owner' && !(c.my_role === 'admin' && m.role === 'admin')) {
          controls.push(h('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', testid: 'member-remove', on: { click: async () => {
            if (!(await confirmDialog('Remove member?', `Remove ${displayName(u)} from ${c.title}?`, 'Remove', { danger: true }))) return;
            try { await store.removeMember(convId, m.user_id); } catch (ex) { showToast(ex.message, 'error'); }
          } } }, 'Remove'));
        }
        return h('li', { class: 'user-row', testid: 'member-row', dataset: { username: u.username, role: m.role } },
          avatar(u, { size: 'md', presence: true }),
          h('span', { class: 'user-text' },
            h('span', { class: 'user-name', text: displayName(u) + (self ? ' (you)' : '') }),
            h('span', { class: 'user-sub muted', text: `@${u.username} · ${presenceText(u)}` })),
          !self ? h('button', { type: 'button', class: 'link-btn', on: { click: () => { dlg.close(); onOpenDirect(m.user_id); } } }, 'Message') : null,
          h('span', { class: 'member-controls' }, controls));
      })));
      parts.push(h('div', { class: 'actions actions-start' },
        h('button', { type: 'button', class: 'btn btn-danger', testid: 'leave-conversation', on: { click: async () => {
          if (!(await confirmDialog(`Leave ${c.title}?`, c.kind === 'group' ? 'You will need to be added again to come back.' : 'You can join the channel again at any time.', 'Leave', { danger: true }))) return;
          try { await store.leaveConv(convId); dlg.close(); location.hash = '#/'; } catch (ex) { showToast(ex.message, 'error'); }
        } } }, c.kind === 'group' ? 'Leave group' : 'Leave channel')));
    }
    parts.push(h('div', { class: 'actions actions-start' },
      ['html', 'json'].map((format) => h('button', { type: 'button', class: 'btn', testid: `export-${format}`, on: { click: () => exportConversation(convId, format) } },
        format === 'html' ? 'Export as web page' : 'Export as JSON'))));
    preserveFocus(box, () => replaceChildren(box, parts));
  }
  render();
}

/** Downloads the caller's readable history (the server streams it). */
async function exportConversation(convId, format) {
  try {
    const url = await api.blobUrl(`/api/v1/conversations/${convId}/export?format=${format}`);
    const link = h('a', { href: url, download: `lanchat-conversation-${convId}.${format}` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (ex) {
    showToast(ex.message, 'error');
  }
}
