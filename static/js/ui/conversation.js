// The open conversation: header, message list with upward infinite scroll,
// typing indicator, composer. Marks messages read while they are seen.

import { h, reconcile, replaceChildren, preserveFocus } from '../dom.js';
import * as store from '../store.js';
import { displayName, presenceText } from '../format.js';
import { avatar, convAvatar, iconButton, icon, showToast } from './common.js';
import { buildEntries } from './messages.js';
import { mountComposer } from './composer.js';
import { openEmojiPicker } from './emoji.js';
import { confirmDialog } from './dialog.js';

const LOAD_OLDER_PX = 400;
const BOTTOM_SLACK_PX = 48;

export function mountConversation(pane, convId, { openSettings, openDrawer }) {
  const head = h('header', { class: 'conv-head', testid: 'conversation-header' });
  const items = h('ol', { class: 'msg-items', testid: 'message-items' });
  const historyStatus = h('div', { class: 'history-status', testid: 'history-status' });
  const list = h('section', { class: 'messages', role: 'log', 'aria-label': 'Messages. Use the arrow keys to pick a message and Tab to reach its actions.', 'aria-live': 'polite', 'aria-relevant': 'additions', tabindex: '0', testid: 'message-list' },
    historyStatus, items);
  const jump = h('button', { type: 'button', class: 'jump-latest', hidden: true, testid: 'jump-latest', on: { click: () => toLatest() } }, icon('down'), h('span', { text: 'Latest' }));
  const typing = h('div', { class: 'typing', testid: 'typing-indicator', 'aria-live': 'polite', hidden: true });

  const actions = {
    react: (m, anchor) => openEmojiPicker(anchor, (emoji) => store.toggleReaction(m, emoji)),
    reply: (m) => composer.reply(m),
    edit: (m) => composer.edit(m),
    remove: async (m) => {
      if (await confirmDialog('Delete message?', 'The message will be removed for everyone in this conversation.', 'Delete', { danger: true })) {
        try { await store.deleteMessage(m); } catch (e) { showToast(e.message, 'error'); }
      }
    },
    toggleReaction: (m, emoji) => store.toggleReaction(m, emoji),
    retry: (cid) => store.retrySend(cid),
    discard: (cid) => store.discardSend(cid),
    jumpTo: (id) => jumpTo(id),
  };
  // Where "New messages" starts: my read pointer when the conversation was opened.
  const c0 = store.conv(convId);
  const ctx = { convId, actions, unreadFrom: c0 && c0.unread_count > 0 ? (c0.my_last_read_id || 0) : null };

  const composer = mountComposer(convId, { onSent: () => { stick = true; renderMessages(); } });
  const wrap = h('div', { class: 'conv', testid: 'conversation', dataset: { convId } },
    head, h('div', { class: 'messages-wrap' }, list, jump), typing, composer.el);
  replaceChildren(pane, wrap);

  let stick = true;
  let initialScrolled = false;

  const nearBottom = () => list.scrollHeight - list.scrollTop - list.clientHeight < BOTTOM_SLACK_PX;

  let headSig = null;
  function renderHeader() {
    const c = store.conv(convId);
    if (!c) return;
    const title = store.convTitle(c);
    let sub = '';
    let av;
    let u = null;
    if (c.kind === 'direct') {
      const o = store.otherMember(c);
      u = o ? store.user(o.user_id) : null;
      sub = u ? [presenceText(u), u.status_text].filter(Boolean).join(' · ') : '';
    } else {
      const n = c.member_count || (c.members ? c.members.length : 0);
      sub = [c.kind === 'channel' ? 'Channel' : 'Group', `${n} member${n === 1 ? '' : 's'}`, c.topic].filter(Boolean).join(' · ');
    }
    const sig = JSON.stringify([title, sub, c.muted, u && u.online, u && u.display_name]);
    if (sig === headSig) return;
    headSig = sig;
    av = u ? avatar(u, { size: 'md', presence: true }) : convAvatar(c.kind, title, c.id);
    preserveFocus(head, () => replaceChildren(head,
      iconButton('menu', 'Show conversations', { class: 'drawer-btn', testid: 'open-drawer', on: { click: openDrawer } }),
      av,
      h('div', { class: 'conv-head-text' },
        h('h1', { class: 'conv-head-title', testid: 'conversation-title', text: title }),
        h('p', { class: 'conv-head-sub', testid: 'conversation-subtitle', text: sub })),
      iconButton(c.muted ? 'belloff' : 'bell', c.muted ? 'Unmute conversation' : 'Mute conversation', {
        testid: 'toggle-mute', 'aria-pressed': c.muted ? 'true' : 'false',
        on: { click: () => store.setMuted(convId, !c.muted).catch((e) => showToast(e.message, 'error')) },
      }),
      iconButton('settings', 'Conversation details', { testid: 'conversation-settings', on: { click: () => openSettings(convId) } })));
  }

  function renderHistoryStatus() {
    const w = store.state.msgs.get(convId);
    let text = '';
    if (!w || w.initial || (w.loading && !w.items.length)) text = 'Loading messages…';
    else if (w.loading) text = 'Loading earlier messages…';
    else if (!w.hasMoreBefore) text = w.items.length ? 'This is the beginning of the conversation.' : 'No messages yet. Say hello!';
    historyStatus.textContent = text;
  }

  function renderMessages() {
    const w = store.state.msgs.get(convId);
    // Anchor on the first message in view so history loading above does not move the page.
    let anchor = null;
    let anchorTop = 0;
    if (!stick) {
      for (const el of items.children) {
        if (el.offsetTop + el.offsetHeight > list.scrollTop) { anchor = el; anchorTop = el.offsetTop - list.scrollTop; break; }
      }
    }
    renderHistoryStatus();
    reconcile(items, buildEntries(ctx));
    let firstUnread = null;
    if (w && !w.initial && !initialScrolled && !(w.loading && !w.items.length)) {
      initialScrolled = true;
      stick = true;
      // Open at the first unread message when the backlog is longer than a screen.
      const sep = items.querySelector('.new-sep');
      if (sep && sep.offsetTop > list.clientHeight / 3 && list.scrollHeight - sep.offsetTop > list.clientHeight) firstUnread = sep;
    }
    if (firstUnread) { list.scrollTop = Math.max(0, firstUnread.offsetTop - 48); stick = nearBottom(); }
    else if (stick) list.scrollTop = list.scrollHeight;
    else if (anchor && anchor.isConnected) list.scrollTop = anchor.offsetTop - anchorTop;
    afterScroll();
  }

  function afterScroll() {
    const w = store.state.msgs.get(convId);
    jump.hidden = nearBottom() && !(w && w.hasMoreAfter);
    if (!w || w.initial) return;
    if (list.scrollTop < LOAD_OLDER_PX && w.hasMoreBefore && !w.loading) store.loadOlder(convId);
    if (nearBottom() && w.hasMoreAfter && !w.loading) store.loadNewer(convId);
    maybeMarkRead();
  }

  function maybeMarkRead() {
    if (document.visibilityState !== 'visible') return;
    if (store.state.currentId !== convId) return;
    if (!nearBottom()) return;
    store.markRead(convId);
  }

  function renderTyping() {
    const ids = store.typingUsers(convId);
    if (!ids.length) { typing.hidden = true; typing.textContent = ''; return; }
    const names = ids.map((id) => displayName(store.user(id)));
    typing.textContent = names.length === 1 ? `${names[0]} is typing…`
      : names.length === 2 ? `${names[0]} and ${names[1]} are typing…` : 'Several people are typing…';
    typing.hidden = false;
  }

  function toLatest() {
    const w = store.state.msgs.get(convId);
    stick = true;
    if (w && w.hasMoreAfter) store.loadLatest(convId);
    else list.scrollTop = list.scrollHeight;
    afterScroll();
  }

  async function jumpTo(messageId) {
    await store.whenLoaded(convId);
    let el = items.querySelector(`[data-id="${messageId}"]`);
    if (!el) {
      try { await store.loadAround(convId, messageId); } catch (e) { showToast(e.message, 'error'); return; }
      stick = false;
      renderMessages();
      el = items.querySelector(`[data-id="${messageId}"]`);
    }
    if (!el) return;
    stick = false;
    el.scrollIntoView({ block: 'center' });
    el.classList.remove('flash');
    void el.offsetWidth;
    el.classList.add('flash');
    el.focus({ preventScroll: true });
  }

  list.addEventListener('scroll', () => { stick = nearBottom(); afterScroll(); }, { passive: true });

  // Keyboard: arrows move between messages (each shows its actions while focused,
  // reachable with Tab); Escape goes back to the composer.
  list.addEventListener('keydown', (e) => {
    const msgs = [...items.querySelectorAll('.msg')];
    if (!msgs.length) return;
    const cur = e.target.closest ? e.target.closest('.msg') : null;
    const i = cur ? msgs.indexOf(cur) : -1;
    let next = null;
    if (e.key === 'ArrowUp' && (e.target === list || e.target === cur)) next = i < 0 ? msgs[msgs.length - 1] : msgs[Math.max(0, i - 1)];
    else if (e.key === 'ArrowDown' && (e.target === list || e.target === cur)) next = i < 0 ? msgs[msgs.length - 1] : msgs[Math.min(msgs.length - 1, i + 1)];
    else if (e.key === 'Home' && e.target !== list) next = msgs[0];
    else if (e.key === 'End' && e.target !== list) next = msgs[msgs.length - 1];
    else if (e.key === 'Escape' && cur) { e.preventDefault(); composer.focus(); return; }
    if (next) {
      e.preventDefault();
      next.focus();
      next.scrollIntoView({ block: 'nearest' });
      stick = nearBottom();
    }
  });
  const ro = new ResizeObserver(() => { if (stick) list.scrollTop = list.scrollHeight; });
  ro.observe(items);
  ro.observe(list);
  const onVisible = () => maybeMarkRead();
  document.addEventListener('visibilitychange', onVisible);
  window.addEventListener('focus', onVisible);

  renderHeader();
  renderMessages();
  renderTyping();

  const unsub = store.subscribe((ch) => {
    if (ch.has('convs') || ch.has('users')) renderHeader();
    if (ch.has(`msgs:${convId}`) || ch.has('users') || ch.has('outbox') || ch.has('convs')) renderMessages();
    if (ch.has('typing') || ch.has('users')) renderTyping();
  });
  const dayTimer = setInterval(renderMessages, 5 * 60_000); // "Today" rolls over

  if (window.matchMedia('(min-width: 721px)').matches) composer.focus();

  return {
    jumpTo,
    focusComposer: () => composer.focus(),
    destroy() {
      unsub();
      ro.disconnect();
      clearInterval(dayTimer);
      document.removeEventListener('visibilitychange', onVisible);
      window.removeEventListener('focus', onVisible);
      composer.destroy();
    },
  };
}
