// Sidebar: me, tools, and the conversation list sorted by activity.

import { h, reconcile, replaceChildren } from '../dom.js';
import * as store from '../store.js';
import { displayName, listTime, snippet } from '../format.js';
import { avatar, convAvatar, presenceDot, iconButton, icon } from './common.js';
import { sidebarTools } from './hooks.js';
import * as notify from '../notify.js';

export function mountSidebar(el, actions) {
  const meBox = h('button', { type: 'button', class: 'me', testid: 'open-profile', title: 'Profile and settings', on: { click: actions.profile } });
  const list = h('ul', { class: 'conv-list', testid: 'conversation-list' });
  const empty = h('p', { class: 'muted conv-empty', hidden: true, testid: 'conversation-list-empty' },
    'No conversations yet. Start one with the ', h('strong', { text: '+' }), ' button, or browse channels.');
  const tools = h('div', { class: 'sidebar-tools' });
  const notifPrompt = h('div', { class: 'notif-prompt', hidden: true, testid: 'notification-prompt' },
    ...(window.isSecureContext
      ? [h('span', { text: 'Get desktop notifications for new messages.' }),
        h('button', { type: 'button', class: 'btn btn-small', on: { click: async () => { await notify.requestPermission(); renderPrompt(); } } }, 'Enable')]
      : [h('a', { href: '/trust', testid: 'notification-trust-link' }, 'Turn on the secure connection to get notifications')]),
    iconButton('close', 'Not now', { class: 'icon-btn-small', on: { click: () => { localStorage.setItem('lanchat.notif-dismissed', '1'); renderPrompt(); } } }));

  el.append(
    h('header', { class: 'sidebar-head' },
      meBox,
      iconButton('plus', 'New conversation', { testid: 'new-conversation', class: 'icon-btn-accent', on: { click: actions.newConversation } })),
    tools,
    notifPrompt,
    h('nav', { class: 'conv-nav', 'aria-label': 'Conversations' }, list, empty));

  function renderTools() {
    const me = store.state.me;
    const base = [
      { id: 'channels', label: 'Channels', icon: 'hash', testid: 'browse-channels', run: actions.channels },
      { id: 'people', label: 'People', icon: 'users', testid: 'open-directory', run: actions.directory },
    ];
    const extra = sidebarTools.filter((t) => !t.visible || t.visible(me));
    replaceChildren(tools, ...base.concat(extra).map((t) => h('button', { type: 'button', class: 'tool-btn', testid: t.testid, on: { click: t.run } },
      icon(t.icon), h('span', { text: t.label }))));
  }

  function renderPrompt() {
    const wanted = window.isSecureContext ? notify.permission() === 'default' : true;
    notifPrompt.hidden = !(wanted && !localStorage.getItem('lanchat.notif-dismissed'));
  }

  function renderMe() {
    const me = store.state.me;
    if (!me) return;
    replaceChildren(meBox,
      avatar(store.user(me.id), { size: 'md', presence: true }),
      h('span', { class: 'me-text' },
        h('span', { class: 'me-name', testid: 'me-name', text: displayName(me) }),
        h('span', { class: 'me-status', text: me.status_text || `@${me.username}` })));
  }

  function preview(c) {
    const typing = store.typingUsers(c.id);
    if (typing.length) return { text: typing.length === 1 ? `${displayName(store.user(typing[0]))} is typing…` : 'several people are typing…', typing: true };
    const pend = store.pendingFor(c.id);
    if (pend.length) {
      const p = pend[pend.length - 1];
      return { text: `${p.state === 'failed' ? 'Not sent' : 'Sending'}: ${snippet(p.body, 60)}` };
    }
    const m = c.last_message;
    if (!m) return { text: c.kind === 'channel' ? (c.topic || 'No messages yet') : 'No messages yet' };
    if (m.deleted_at) return { text: 'Message deleted' };
    let body = m.body ? snippet(m.body, 80) : (m.attachments && m.attachments.length ? `📎 ${m.attachments[0].name}` : '');
    if (m.kind === 'system') return { text: body };
    const me = store.state.me;
    if (me && m.sender_id === me.id) body = `You: ${body}`;
    else if (c.kind !== 'direct') body = `${displayName(store.user(m.sender_id))}: ${body}`;
    return { text: body };
  }

  function renderList() {
    const convs = store.sortedConvs();
    empty.hidden = !(store.state.ready && convs.length === 0);
    const current = store.state.currentId;
    reconcile(list, convs.map((c) => {
      const title = store.convTitle(c);
      const other = c.kind === 'direct' ? store.otherMember(c) : null;
      const otherUser = other ? store.user(other.user_id) : null;
      const pv = preview(c);
      const unread = c.unread_count || 0;
      const time = store.activityOf(c);
      const sig = JSON.stringify([title, c.kind, otherUser && otherUser.online, pv, unread, c._mentioned, c.muted, current === c.id, listTime(time)]);
      return {
        key: c.id,
        sig,
        build: () => h('li', null,
          h('a', {
            href: `#/c/${c.id}`,
            class: ['conv-item', current === c.id && 'active', unread && 'unread', c.muted && 'muted'],
            testid: 'conversation-item',
            dataset: { convId: c.id, kind: c.kind, title },
            'aria-current': current === c.id ? 'page' : null,
            on: { click: () => actions.selected(c.id) },
          },
          h('span', { class: 'conv-avatar' },
            otherUser ? avatar(otherUser, { size: 'md' }) : convAvatar(c.kind, title, c.id),
            otherUser ? presenceDot(otherUser) : null),
          h('span', { class: 'conv-text' },
            h('span', { class: 'conv-top' },
              h('span', { class: 'conv-title', testid: 'conversation-title-text', text: title }),
              c.muted ? icon('belloff', 'muted') : null,
              h('time', { class: 'conv-time', text: listTime(time) })),
            h('span', { class: 'conv-bottom' },
              h('span', { class: ['conv-preview', pv.typing && 'is-typing'], text: pv.text }),
              unread || c._mentioned
                ? h('span', { class: ['badge', c._mentioned && 'badge-mention'], testid: 'unread-badge', 'aria-label': `${unread} unread${c._mentioned ? ', mentioned' : ''}` }, c._mentioned && !unread ? '@' : (unread > 99 ? '99+' : String(unread)))
                : null))),
        ),
      };
    }));
  }

  renderTools();
  renderPrompt();
  renderMe();
  renderList();
  const timer = setInterval(renderList, 60_000); // relative times
  const unsub = store.subscribe((ch) => {
    if (ch.has('me') || ch.has('users')) { renderMe(); renderTools(); }
    if (ch.has('convs') || ch.has('users') || ch.has('typing') || ch.has('outbox') || ch.has('current')) renderList();
  });
  return () => { unsub(); clearInterval(timer); };
}
