// Channel browser: list public channels, join, create.

import { h, replaceChildren } from '../dom.js';
import * as api from '../api.js';
import * as store from '../store.js';
import { convAvatar, showToast, showFormError } from './common.js';
import { openDialog } from './dialog.js';

export function openChannelBrowser({ onOpen }) {
  openDialog({
    title: 'Channels',
    testid: 'channel-browser',
    content: ({ close }) => {
      const search = h('input', { type: 'search', class: 'search-input', placeholder: 'Search channels', 'aria-label': 'Search channels', testid: 'channel-search', autofocus: true });
      const list = h('ul', { class: 'channel-list', testid: 'channel-list' });
      const status = h('p', { class: 'muted small', role: 'status' });
      let timer = null;
      let seq = 0;

      async function load() {
        const mine = ++seq;
        status.textContent = 'Loading…';
        try {
          const items = [];
          let cursor = null;
          for (let i = 0; i < 5; i++) {
            const page = await api.get('/channels', { q: search.value.trim(), cursor });
            items.push(...(page.items || []));
            cursor = page.next_cursor;
            if (!cursor) break;
          }
          if (mine !== seq) return;
          status.textContent = items.length ? '' : 'No channels yet. Create the first one below.';
          replaceChildren(list, items.map(row));
        } catch (e) { if (mine === seq) status.textContent = e.message; }
      }

      function row(ch) {
        const joined = store.state.convs.has(ch.id) || !!ch.my_role;
        const n = ch.member_count || 0;
        return h('li', { class: 'channel-row', testid: 'channel-row', dataset: { title: ch.title, joined: joined ? '1' : '0' } },
          convAvatar('channel', ch.title, ch.id),
          h('span', { class: 'user-text' },
            h('span', { class: 'user-name', text: ch.title }),
            h('span', { class: 'user-sub muted', text: [`${n} member${n === 1 ? '' : 's'}`, ch.topic].filter(Boolean).join(' · ') })),
          h('button', { type: 'button', class: ['btn', 'btn-small', !joined && 'btn-primary'], testid: joined ? 'channel-open' : 'channel-join', on: { click: async (e) => {
            e.currentTarget.disabled = true;
            try {
              if (!joined) await store.joinChannel(ch.id);
              close();
              onOpen(ch.id);
            } catch (ex) { showToast(ex.message, 'error'); e.currentTarget.disabled = false; }
          } } }, joined ? 'Open' : 'Join'));
      }

      search.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(load, 200); });
      load();

      const create = h('form', { class: 'stack create-channel', testid: 'create-channel-form', on: { submit: async (e) => {
        e.preventDefault();
        showFormError(create, null);
        const title = create.elements.namedItem('title').value.trim();
        const topic = create.elements.namedItem('topic').value.trim();
        if (!title) return;
        try { const c = await store.createChannel(title, topic); close(); onOpen(c.id); } catch (ex) { showFormError(create, ex); }
      } } },
        h('h3', { text: 'Create a channel' }),
        h('div', { class: 'field' }, h('label', { for: 'ch-title', text: 'Name' }), h('input', { id: 'ch-title', name: 'title', required: true, maxlength: 100, testid: 'channel-title' })),
        h('div', { class: 'field' }, h('label', { for: 'ch-topic', text: 'Topic (optional)' }), h('input', { id: 'ch-topic', name: 'topic', maxlength: 250, testid: 'channel-topic' })),
        h('p', { class: 'form-error', role: 'alert', hidden: true }),
        h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'btn btn-primary', testid: 'channel-create' }, 'Create channel')));
      return [search, status, list, create];
    },
  });
}
