// Main layout: sidebar (a drawer on phones), connection banner, conversation pane.

import { h, replaceChildren } from '../dom.js';
import * as store from '../store.js';
import { mountSidebar } from './sidebar.js';
import { mountConversation } from './conversation.js';
import { openDirectory, openNewConversation } from './people.js';
import { openChannelBrowser } from './channels.js';
import { openConversationSettings } from './settings.js';
import { openProfile } from './profile.js';
import { icon, showToast } from './common.js';
import { closeEmojiPicker } from './emoji.js';

/** On plain HTTP (not a secure context) a line leads to the trust page. */
function secureBanner() {
  if (window.isSecureContext) return null;
  return h('div', { class: 'secure-banner', testid: 'secure-banner' },
    h('span', { text: 'This connection is not encrypted, and notifications are off. ' }),
    h('a', { href: '/trust', testid: 'trust-link' }, 'Turn on the secure connection'));
}

export function mountShell(root, { navigate, onLogout }) {
  const sidebar = h('aside', { class: 'sidebar', id: 'sidebar', testid: 'sidebar', 'aria-label': 'Conversations and tools' });
  const scrim = h('div', { class: 'scrim', hidden: true, on: { click: () => setDrawer(false) } });
  const banner = h('div', { class: 'conn-banner', role: 'status', testid: 'conn-status', hidden: true });
  const pane = h('main', { class: 'pane', testid: 'message-pane', id: 'main' });
  const shell = h('div', { class: 'shell no-conv', testid: 'main-view' },
    h('a', { class: 'skip-link', href: '#main', on: { click: (e) => { e.preventDefault(); const t = pane.querySelector('textarea') || pane; t.focus(); } } }, 'Skip to conversation'),
    sidebar, scrim, h('div', { class: 'pane-col' }, secureBanner(), banner, pane));
  replaceChildren(root, shell);

  let view = null;
  let viewId = null;
  let page = null; // { cleanup } while a feature page (e.g. admin) fills the pane
  let pendingJump = null; // { convId, messageId } to show once that conversation is open

  const openConv = (id) => navigate(`#/c/${id}`);
  const actions = {
    profile: () => openProfile({ onLogout }),
    newConversation: () => openNewConversation({ onOpen: openConv }),
    channels: () => openChannelBrowser({ onOpen: openConv }),
    directory: () => openDirectory({ onOpen: openConv }),
    selected: () => setDrawer(false),
  };
  const unmountSidebar = mountSidebar(sidebar, actions);

  function setDrawer(open) {
    shell.classList.toggle('drawer-open', open);
    scrim.hidden = !open;
    if (open) {
      const first = sidebar.querySelector('.conv-item.active') || sidebar.querySelector('.conv-item, button');
      if (first) first.focus();
    }
  }

  document.addEventListener('keydown', onKey);
  function onKey(e) {
    if (e.key === 'Escape' && shell.classList.contains('drawer-open') && !document.querySelector('dialog[open]')) {
      setDrawer(false);
      const b = pane.querySelector('[data-testid="open-drawer"]');
      if (b) b.focus();
    }
  }

  function renderEmpty() {
    replaceChildren(pane, h('div', { class: 'empty-pane', testid: 'empty-pane' },
      h('img', { src: '/favicon.svg', alt: '', width: 64, height: 64 }),
      h('h1', { text: 'Welcome to lanchat' }),
      h('p', { class: 'muted', text: 'Pick a conversation, or start a new one.' }),
      h('div', { class: 'actions actions-center' },
        h('button', { type: 'button', class: 'btn btn-primary', on: { click: actions.newConversation } }, icon('plus'), ' New conversation'),
        h('button', { type: 'button', class: 'btn', on: { click: actions.channels } }, icon('hash'), ' Browse channels'),
        h('button', { type: 'button', class: 'btn', on: { click: actions.directory } }, icon('users'), ' People'))));
  }

  function closePage() {
    if (page && page.cleanup) page.cleanup();
    page = null;
  }

  /** Fill the pane with a feature page (node) or, with null, the welcome screen. */
  function showPage(node, cleanup) {
    if (view) { view.destroy(); view = null; }
    viewId = null;
    closePage();
    if (!node) { shell.classList.add('no-conv'); renderEmpty(); return; }
    page = { cleanup };
    shell.classList.remove('no-conv');
    replaceChildren(pane, node);
    setDrawer(false);
  }

  function show(id) {
    if (id === viewId && view) return;
    if (!id && page) return; // a feature page stays until a conversation is opened
    if (view) { view.destroy(); view = null; }
    closePage();
    viewId = id;
    const c = id ? store.conv(id) : null;
    shell.classList.toggle('no-conv', !c);
    if (!c) { renderEmpty(); return; }
    view = mountConversation(pane, id, {
      openSettings: (cid) => openConversationSettings(cid, { onOpenDirect: async (uid) => {
        try { const dm = await store.openDirect(uid); openConv(dm.id); } catch (e) { showToast(e.message, 'error'); }
      } }),
      openDrawer: () => setDrawer(true),
    });
    if (pendingJump && pendingJump.convId === id) { view.jumpTo(pendingJump.messageId); pendingJump = null; }
  }

  function renderBanner() {
    const s = store.state.conn;
    const pending = store.state.outbox.filter((p) => p.state === 'pending').length;
    if (s === 'reconnecting') {
      banner.textContent = pending ? `Reconnecting… ${pending} message${pending === 1 ? '' : 's'} will be sent when the connection is back.` : 'Reconnecting…';
      banner.hidden = false;
    } else if (s === 'connecting' && store.state.ready) {
      banner.textContent = 'Connecting…';
      banner.hidden = false;
    } else banner.hidden = true;
    banner.dataset.state = s;
  }

  const unsub = store.subscribe((ch) => {
    if (ch.has('conn') || ch.has('outbox')) renderBanner();
    if (ch.has('current') || ch.has('convs')) {
      const id = store.state.currentId;
      if (id !== viewId || (id && !view && store.conv(id)) || (view && !store.conv(id))) show(store.conv(id) ? id : null);
    }
  });
  renderBanner();
  show(store.state.currentId);

  return {
    showPage,
    jumpTo: (convId, messageId) => {
      if (view && viewId === convId) { view.jumpTo(messageId); return; }
      pendingJump = { convId, messageId };
      navigate(`#/c/${convId}`);
    },
    destroy() {
      closeEmojiPicker();
      for (const d of document.querySelectorAll('dialog')) { if (d.open) d.close(); d.remove(); }
      unsub();
      unmountSidebar();
      if (view) view.destroy();
      closePage();
      document.removeEventListener('keydown', onKey);
    },
  };
}
