// The composer: Enter sends, Shift+Enter newline, typing frames, reply and
// edit modes, drafts kept in localStorage, @mention completion.

import { h, replaceChildren } from '../dom.js';
import * as store from '../store.js';
import { displayName, snippet } from '../format.js';
import { icon, iconButton, showToast } from './common.js';
import { composerTools, fileHandlers } from './hooks.js';

const MAX_BODY = 16_000;

export function mountComposer(convId, { onSent }) {
  let mode = null; // { type: 'reply' | 'edit', message }
  let attachments = [];
  let draftTimer = null;

  const textarea = h('textarea', {
    class: 'composer-input', rows: 1, testid: 'composer-input', 'aria-label': 'Message', placeholder: 'Write a message…',
    enterkeyhint: 'send', maxlength: MAX_BODY,
  });
  const modeBar = h('div', { class: 'composer-mode', hidden: true, testid: 'composer-mode' });
  const attBar = h('div', { class: 'composer-attachments', hidden: true, testid: 'composer-attachments' });
  const suggest = h('ul', { class: 'mention-suggest', role: 'listbox', hidden: true, testid: 'mention-suggest', id: `mention-suggest-${convId}` });
  const sendBtn = h('button', { type: 'submit', class: 'send-btn', testid: 'send-button', title: 'Send (Enter)', 'aria-label': 'Send' }, icon('send'));
  const toolsBox = h('div', { class: 'composer-tools' });
  const form = h('form', { class: 'composer', testid: 'composer', 'aria-label': 'Send a message', on: { submit: (e) => { e.preventDefault(); submit(); } } },
    suggest, modeBar, attBar,
    h('div', { class: 'composer-row' }, toolsBox, textarea, sendBtn));

  const ctx = {
    convId,
    textarea,
    addAttachment(att) { attachments.push(att); renderAtts(); },
    /** Show an upload in progress; returns { progress(fraction), done(att), fail() }. */
    startUpload(name) {
      const entry = { name, _uploading: true, _progress: 0 };
      attachments.push(entry);
      renderAtts();
      const drop = () => { const i = attachments.indexOf(entry); if (i >= 0) attachments.splice(i, 1); };
      return {
        progress(f) { entry._progress = f; const bar = attBar.querySelector(`progress[data-n="${attachments.indexOf(entry)}"]`); if (bar) bar.value = f; },
        done(att) { const i = attachments.indexOf(entry); if (i >= 0) attachments[i] = att; renderAtts(); },
        fail() { drop(); renderAtts(); },
      };
    },
  };
  for (const t of composerTools) {
    toolsBox.appendChild(iconButton(t.icon, t.label, { testid: t.testid, on: { click: () => t.run(ctx) } }));
    if (t.mount) toolsBox.appendChild(t.mount(ctx));
  }
  form.addEventListener('dragover', (e) => { if (fileHandlers.length && e.dataTransfer && [...e.dataTransfer.types].includes('Files')) e.preventDefault(); });
  form.addEventListener('drop', (e) => {
    if (!fileHandlers.length || !e.dataTransfer || !e.dataTransfer.files.length) return;
    e.preventDefault();
    for (const fh of fileHandlers) if (fh([...e.dataTransfer.files], ctx)) break;
  });
  textarea.addEventListener('paste', (e) => {
    const files = e.clipboardData ? [...e.clipboardData.files] : [];
    if (!files.length || !fileHandlers.length) return;
    e.preventDefault();
    for (const fh of fileHandlers) if (fh(files, ctx)) break;
  });

  textarea.value = store.getDraft(convId);
  autosize();
  // Reloads and tab closes do not blur: save the draft on the way out too.
  const saveNow = () => { if (!mode || mode.type !== 'edit') store.setDraft(convId, textarea.value); };
  window.addEventListener('pagehide', saveNow);

  textarea.addEventListener('input', () => {
    autosize();
    if (!mode || mode.type !== 'edit') {
      clearTimeout(draftTimer);
      draftTimer = setTimeout(() => store.setDraft(convId, textarea.value), 250);
      store.noteTyping(convId, textarea.value.trim().length > 0);
    }
    updateSuggest();
  });
  textarea.addEventListener('blur', () => {
    if (!mode || mode.type !== 'edit') store.setDraft(convId, textarea.value);
    setTimeout(() => { suggest.hidden = true; }, 150);
  });
  textarea.addEventListener('keydown', (e) => {
    if (!suggest.hidden && handleSuggestKey(e)) return;
    if (e.key === 'Enter' && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      submit();
    } else if (e.key === 'Escape' && (mode || attachments.length)) {
      e.preventDefault();
      e.stopPropagation();
      cancelMode();
    } else if (e.key === 'ArrowUp' && !textarea.value && !mode) {
      const mine = lastOwnMessage();
      if (mine) { e.preventDefault(); edit(mine); }
    }
  });

  function autosize() {
    textarea.style.height = 'auto';
    textarea.style.height = `${Math.min(textarea.scrollHeight + 2, Math.round(window.innerHeight * 0.4))}px`;
  }

  function lastOwnMessage() {
    const w = store.state.msgs.get(convId);
    if (!w) return null;
    for (let i = w.items.length - 1; i >= 0; i--) {
      const m = w.items[i];
      if (m.sender_id === store.state.me.id && m.kind !== 'system' && !m.deleted_at) return m;
    }
    return null;
  }

  function renderMode() {
    if (!mode) { modeBar.hidden = true; replaceChildren(modeBar); return; }
    const m = mode.message;
    const label = mode.type === 'edit' ? 'Editing message' : `Replying to ${displayName(store.user(m.sender_id))}`;
    replaceChildren(modeBar,
      icon(mode.type === 'edit' ? 'edit' : 'reply'),
      h('span', { class: 'composer-mode-text' },
        h('strong', { text: label }),
        h('span', { class: 'muted', text: ` ${snippet(m.body, 80)}` })),
      iconButton('close', mode.type === 'edit' ? 'Cancel editing (Esc)' : 'Cancel reply (Esc)', { class: 'icon-btn-small', testid: 'composer-mode-cancel', on: { click: cancelMode } }));
    modeBar.dataset.mode = mode.type;
    modeBar.hidden = false;
  }

  function renderAtts() {
    attBar.hidden = !attachments.length;
    replaceChildren(attBar, attachments.map((a, i) => h('span', { class: 'chip', testid: a._uploading ? 'upload-pending' : 'upload-ready' },
      icon('paperclip'), h('span', { text: a.name }),
      a._uploading ? h('progress', { max: 1, value: a._progress || 0, dataset: { n: i }, 'aria-label': `Uploading ${a.name}` }) : null,
      iconButton('close', `Remove ${a.name}`, { class: 'icon-btn-small', on: { click: () => { attachments.splice(i, 1); renderAtts(); } } }))));
  }

  function cancelMode() {
    const wasEdit = mode && mode.type === 'edit';
    mode = null;
    renderMode();
    if (wasEdit) { textarea.value = store.getDraft(convId); autosize(); }
    textarea.focus();
  }

  function reply(m) {
    if (mode && mode.type === 'edit') cancelMode();
    mode = { type: 'reply', message: m };
    renderMode();
    textarea.focus();
  }

  function edit(m) {
    if (!(mode && mode.type === 'edit')) store.setDraft(convId, textarea.value);
    mode = { type: 'edit', message: m };
    textarea.value = m.body;
    renderMode();
    autosize();
    textarea.focus();
    textarea.setSelectionRange(textarea.value.length, textarea.value.length);
  }

  async function submit() {
    const body = textarea.value.replace(/\s+$/, '').replace(/^\n+/, '');
    if (body.length > MAX_BODY) { showToast(`Messages can be at most ${MAX_BODY} characters.`, 'error'); return; }
    if (mode && mode.type === 'edit') {
      if (!body.trim()) { showToast('A message cannot be empty. Delete it instead.', 'error'); return; }
      const m = mode.message;
      if (body === m.body) { cancelMode(); return; }
      sendBtn.disabled = true;
      try {
        await store.editMessage(m, body);
        mode = null;
        renderMode();
        textarea.value = store.getDraft(convId);
        autosize();
      } catch (e) { showToast(e.message, 'error'); } finally { sendBtn.disabled = false; textarea.focus(); }
      return;
    }
    if (!body.trim() && !attachments.length) return;
    if (attachments.some((a) => a._uploading)) { showToast('Wait for the uploads to finish.', 'error'); return; }
    store.sendMessage(convId, body, { replyTo: mode && mode.type === 'reply' ? mode.message.id : null, attachments });
    store.stopTyping();
    textarea.value = '';
    attachments = [];
    renderAtts();
    clearTimeout(draftTimer);
    store.setDraft(convId, '');
    mode = null;
    renderMode();
    autosize();
    textarea.focus();
    if (onSent) onSent();
  }

  // ---------------------------------------------------------- @mention completion
  let suggestions = [];
  let active = 0;

  function mentionQuery() {
    const pos = textarea.selectionStart;
    const before = textarea.value.slice(0, pos);
    const m = before.match(/(^|\s)@([A-Za-z0-9_.-]{0,32})$/);
    return m ? { start: pos - m[2].length, q: m[2].toLowerCase() } : null;
  }

  function candidates(q) {
    const c = store.conv(convId);
    let ids = c && Array.isArray(c.members) ? c.members.map((m) => m.user_id) : [...store.state.users.keys()];
    ids = ids.filter((id) => id !== store.state.me.id);
    return ids.map((id) => store.user(id)).filter((u) => !u._placeholder && (u.username.startsWith(q) || displayName(u).toLowerCase().includes(q))).slice(0, 6);
  }

  function updateSuggest() {
    const mq = mentionQuery();
    suggestions = mq ? candidates(mq.q) : [];
    // Fully typed already: Enter sends instead of completing.
    if (mq && suggestions.some((u) => u.username === mq.q)) suggestions = [];
    if (!suggestions.length) { suggest.hidden = true; textarea.removeAttribute('aria-activedescendant'); return; }
    active = Math.min(active, suggestions.length - 1);
    replaceChildren(suggest, suggestions.map((u, i) => h('li', {
      id: `${suggest.id}-${i}`, role: 'option', class: i === active ? 'active' : null, 'aria-selected': i === active ? 'true' : 'false',
      on: { mousedown: (e) => { e.preventDefault(); pick(u); } },
    }, h('strong', { text: displayName(u) }), h('span', { class: 'muted', text: ` @${u.username}` }))));
    suggest.hidden = false;
    textarea.setAttribute('aria-activedescendant', `${suggest.id}-${active}`);
  }

  function handleSuggestKey(e) {
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      active = (active + (e.key === 'ArrowDown' ? 1 : -1) + suggestions.length) % suggestions.length;
      updateSuggest();
      return true;
    }
    if (e.key === 'Tab' || (e.key === 'Enter' && !e.shiftKey)) { e.preventDefault(); pick(suggestions[active]); return true; }
    if (e.key === 'Escape') { e.preventDefault(); e.stopPropagation(); suggest.hidden = true; return true; }
    return false;
  }

  function pick(u) {
    const mq = mentionQuery();
    if (!mq || !u) return;
    const pos = textarea.selectionStart;
    textarea.value = `${textarea.value.slice(0, mq.start)}${u.username} ${textarea.value.slice(pos)}`;
    const caret = mq.start + u.username.length + 1;
    textarea.setSelectionRange(caret, caret);
    suggest.hidden = true;
    active = 0;
    textarea.dispatchEvent(new Event('input'));
  }

  return {
    el: form,
    reply,
    edit,
    focus: () => textarea.focus(),
    destroy() {
      window.removeEventListener('pagehide', saveNow);
      clearTimeout(draftTimer);
      if (!mode || mode.type !== 'edit') store.setDraft(convId, textarea.value);
      store.stopTyping();
    },
  };
}
