// People: the user directory dialog, the "new conversation" dialog, and the
// user picker they share.

import { h, replaceChildren } from '../dom.js';
import * as store from '../store.js';
import { displayName, presenceText } from '../format.js';
import { avatar, showToast, showFormError } from './common.js';
import { openDialog } from './dialog.js';

/** Debounced directory search; renders rows through `row(user)`. */
function userSearch({ placeholder, testid, row, exclude = () => false, listTestid }) {
  const input = h('input', { type: 'search', class: 'search-input', placeholder, 'aria-label': placeholder, testid, autocomplete: 'off', autofocus: true });
  const list = h('ul', { class: 'user-list', testid: listTestid });
  const status = h('p', { class: 'muted small', role: 'status' });
  let timer = null;
  let seq = 0;

  async function run() {
    const q = input.value.trim();
    const mine = ++seq;
    status.textContent = 'Searching…';
    let users;
    try {
      users = await store.loadDirectory(q, 2);
    } catch (e) {
      if (mine === seq) status.textContent = e.message;
      return;
    }
    if (mine !== seq) return;
    users = users.filter((u) => !exclude(u) && !u.disabled);
    users.sort((a, b) => (b.online - a.online) || displayName(a).localeCompare(displayName(b)));
    status.textContent = users.length ? '' : 'Nobody found.';
    replaceChildren(list, users.map((u) => row(store.user(u.id))));
  }
  input.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(run, 200); });
  run();
  return { input, list, status, refresh: run };
}

function userLine(u) {
  return [
    avatar(u, { size: 'md', presence: true }),
    h('span', { class: 'user-text' },
      h('span', { class: 'user-name', text: displayName(u) }),
      h('span', { class: 'user-sub muted', text: [`@${u.username}`, presenceText(u), u.status_text].filter(Boolean).join(' · ') })),
  ];
}

/** User directory with presence; choosing someone opens the direct conversation. */
export function openDirectory({ onOpen }) {
  openDialog({
    title: 'People',
    testid: 'directory-dialog',
    content: ({ close }) => {
      const me = store.state.me;
      const s = userSearch({
        placeholder: 'Search people',
        testid: 'directory-search',
        listTestid: 'directory-list',
        row: (u) => h('li', { class: 'user-row', testid: 'directory-user', dataset: { username: u.username, online: u.online ? '1' : '0' } },
          userLine(u),
          u.id === me.id ? h('span', { class: 'muted small', text: 'You' })
            : h('button', { type: 'button', class: 'btn btn-small', testid: 'directory-message', on: { click: async () => {
              try { const c = await store.openDirect(u.id); close(); onOpen(c.id); } catch (e) { showToast(e.message, 'error'); }
            } } }, 'Message')),
      });
      return [s.input, s.status, s.list];
    },
  });
}

/** Pick one person → direct conversation; several → group with a title. */
export function openNewConversation({ onOpen }) {
  const selected = new Map(); // id -> user
  openDialog({
    title: 'New conversation',
    testid: 'new-conversation-dialog',
    content: ({ close }) => {
      const chips = h('div', { class: 'chips', testid: 'newconv-selected', 'aria-live': 'polite' });
      const titleField = h('div', { class: 'field', hidden: true },
        h('label', { for: 'newconv-title', text: 'Group name' }),
        h('input', { id: 'newconv-title', name: 'title', maxlength: 100, testid: 'newconv-title', placeholder: 'e.g. Release planning' }));
      const submit = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'newconv-submit', disabled: true }, 'Open chat');
      const err = h('p', { class: 'form-error', role: 'alert', hidden: true });

      function update() {
        replaceChildren(chips, [...selected.values()].map((u) => h('span', { class: 'chip' }, displayName(u))));
        titleField.hidden = selected.size < 2;
        submit.disabled = selected.size === 0;
        submit.textContent = selected.size >= 2 ? `Create group (${selected.size + 1})` : 'Open chat';
      }

      const s = userSearch({
        placeholder: 'Search people',
        testid: 'newconv-search',
        listTestid: 'newconv-list',
        exclude: (u) => u.id === store.state.me.id,
        row: (u) => {
          const cb = h('input', { type: 'checkbox', checked: selected.has(u.id), testid: 'newconv-check', on: { change: () => {
            if (cb.checked) selected.set(u.id, u); else selected.delete(u.id);
            update();
          } } });
          return h('li', { class: 'user-row', testid: 'newconv-user', dataset: { username: u.username } },
            h('label', { class: 'user-pick' }, cb, userLine(u)));
        },
      });

      const form = h('form', { class: 'stack', on: { submit: async (e) => {
        e.preventDefault();
        showFormError(form, null);
        const ids = [...selected.keys()];
        submit.disabled = true;
        try {
          let c;
          if (ids.length === 1) c = await store.openDirect(ids[0]);
          else {
            const title = form.elements.namedItem('title').value.trim();
            if (!title) { showFormError(form, { field: 'title', message: 'Give the group a name.' }); submit.disabled = false; return; }
            c = await store.createGroup(title, ids);
          }
          close();
          onOpen(c.id);
        } catch (ex) {
          showFormError(form, ex);
          submit.disabled = false;
        }
      } } }, s.input, chips, s.status, s.list, titleField, err, h('div', { class: 'actions' }, submit));
      return form;
    },
  });
}

/** Add-members picker for group settings. Resolves when done. */
export function openAddMembers(c, onDone) {
  const present = new Set((c.members || []).map((m) => m.user_id));
  const chosen = new Set();
  openDialog({
    title: 'Add members',
    testid: 'add-members-dialog',
    content: ({ close }) => {
      const submit = h('button', { type: 'submit', class: 'btn btn-primary', disabled: true, testid: 'add-members-submit' }, 'Add');
      const s = userSearch({
        placeholder: 'Search people',
        testid: 'add-members-search',
        listTestid: 'add-members-list',
        exclude: (u) => present.has(u.id),
        row: (u) => {
          const cb = h('input', { type: 'checkbox', checked: chosen.has(u.id), on: { change: () => {
            if (cb.checked) chosen.add(u.id); else chosen.delete(u.id);
            submit.disabled = !chosen.size;
          } } });
          return h('li', { class: 'user-row', dataset: { username: u.username } }, h('label', { class: 'user-pick' }, cb, userLine(u)));
        },
      });
      const form = h('form', { class: 'stack', on: { submit: async (e) => {
        e.preventDefault();
        submit.disabled = true;
        try { await store.addMembers(c.id, [...chosen]); close(); onDone && onDone(); } catch (ex) { showToast(ex.message, 'error'); submit.disabled = false; }
      } } }, s.input, s.status, s.list, h('div', { class: 'actions' }, submit));
      return form;
    },
  });
}
