// Message search: a dialog (sidebar button, Ctrl+K or "/") calling GET /search;
// a result opens its conversation at the message (around=) and highlights it.
//
// The server's snippet is HTML-escaped text with <mark> around the hits. It is
// never parsed as HTML into the page: it is split on the <mark> tags, and the
// text parts are entity-decoded through a detached <textarea> (RCDATA: no
// elements can be created) and inserted as text nodes.

import { h, replaceChildren } from '../dom.js';
import * as api from '../api.js';
import * as store from '../store.js';
import { displayName, listTime, fullDate, snippet } from '../format.js';
import { openDialog, confirmDialog } from './dialog.js';
import { errorText, showToast } from './common.js';
import { registerSidebarTool, app } from './hooks.js';

const decoder = document.createElement('textarea');
function decodeEntities(text) {
  if (!text.includes('&')) return text;
  decoder.innerHTML = text;
  const out = decoder.value;
  decoder.textContent = '';
  return out;
}

/** Snippet with <mark> hits → DOM nodes (text nodes and <mark> elements). */
export function snippetNodes(html) {
  const nodes = [];
  let inMark = false;
  for (const part of String(html || '').split(/(<mark>|<\/mark>)/)) {
    if (part === '<mark>') { inMark = true; continue; }
    if (part === '</mark>') { inMark = false; continue; }
    if (!part) continue;
    const text = decodeEntities(part);
    nodes.push(inMark ? h('mark', { text }) : document.createTextNode(text));
  }
  return nodes;
}

let openApi = null;

export function openSearch() {
  if (openApi) { const i = openApi.dialog.querySelector('input'); if (i) i.focus(); return; }
  let seq = 0;
  let cursor = null;
  let query = '';
  const input = h('input', { type: 'search', name: 'q', class: 'input', testid: 'search-input', placeholder: 'Search messages…', 'aria-label': 'Search messages', autofocus: true, maxlength: 500, autocomplete: 'off' });
  const status = h('p', { class: 'muted search-status', role: 'status', testid: 'search-status' });
  const error = h('p', { class: 'form-error', hidden: true, testid: 'search-error' });
  const results = h('ul', { class: 'search-results', testid: 'search-results' });
  const more = h('button', { type: 'button', class: 'btn btn-small', hidden: true, testid: 'search-more', on: { click: () => run(false) } }, 'Load more');
  let timer = null;
  input.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(() => run(true), 250); });
  const form = h('form', { class: 'search-form', role: 'search', on: { submit: (e) => { e.preventDefault(); clearTimeout(timer); run(true); } } }, input);

  async function run(fresh) {
    const q = input.value.trim();
    if (fresh) {
      query = q; cursor = null;
      replaceChildren(results);
      more.hidden = true;
      error.hidden = true;
      if (!q) { status.textContent = ''; return; }
    }
    const my = ++seq;
    status.textContent = 'Searching…';
    more.disabled = true;
    try {
      const page = await api.get('/search', { q: query, cursor: fresh ? null : cursor, limit: 20 });
      if (my !== seq) return;
      for (const item of page.items) results.appendChild(renderResult(item));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      const n = results.children.length;
      status.textContent = n ? `${n}${cursor ? '+' : ''} result${n === 1 ? '' : 's'}` : 'No messages found.';
    } catch (e) {
      if (my !== seq) return;
      status.textContent = '';
      error.textContent = errorText(e);
      error.hidden = false;
    } finally { if (my === seq) more.disabled = false; }
  }

  function renderResult({ message: m, snippet: snip }) {
    const c = store.conv(m.conversation_id);
    const title = c ? store.convTitle(c) : 'A channel you have not joined';
    const sender = store.user(m.sender_id);
    return h('li', null, h('button', {
      type: 'button', class: 'search-result', testid: 'search-result', dataset: { messageId: m.id, convId: m.conversation_id },
      on: { click: () => openResult(m) },
    },
    h('span', { class: 'search-result-head' },
      h('strong', { class: 'search-result-sender', text: displayName(sender) }),
      h('span', { class: 'muted', text: ` in ${title}` }),
      h('time', { class: 'muted search-result-time', datetime: new Date(m.created_at).toISOString(), title: fullDate(m.created_at), text: listTime(m.created_at) })),
    h('span', { class: 'search-result-snippet', testid: 'search-snippet' }, snip ? snippetNodes(snip) : snippet(m.body || '', 200))));
  }

  async function openResult(m) {
    if (openApi) openApi.close();
    if (!store.conv(m.conversation_id)) {
      if (!(await confirmDialog('Join the channel?', 'This message is in a channel you have not joined. Join it to read the conversation?', 'Join'))) return;
      try { store.upsertConv(await api.post(`/conversations/${m.conversation_id}/join`)); } catch (e) { showToast(errorText(e), 'error'); return; }
    }
    app.jumpToMessage(m.conversation_id, m.id);
  }

  openApi = openDialog({
    title: 'Search messages',
    testid: 'search-dialog',
    className: 'dlg-search',
    onClose: () => { clearTimeout(timer); seq++; openApi = null; },
    content: () => [form, error, status, results, more],
  });
}

registerSidebarTool({ id: 'search', label: 'Search', icon: 'search', testid: 'open-search', run: openSearch });

document.addEventListener('keydown', (e) => {
  if (!store.state.me || !document.querySelector('[data-testid="main-view"]')) return;
  if (document.querySelector('dialog[open]')) return;
  const t = e.target;
  const typing = t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
  if ((e.key === 'k' || e.key === 'K') && (e.ctrlKey || e.metaKey) && !e.altKey) { e.preventDefault(); openSearch(); }
  else if (e.key === '/' && !typing && !e.ctrlKey && !e.metaKey && !e.altKey) { e.preventDefault(); openSearch(); }
});
