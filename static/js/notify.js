// Desktop notifications (only in secure contexts, only while the tab is hidden)
// and the unread count in the document title.

import * as store from './store.js';
import * as api from './api.js';
import { displayName, snippet } from './format.js';

const BASE_TITLE = 'lanchat';
const notified = new Set();
let openConversation = () => {};

export const supported = () => window.isSecureContext && 'Notification' in window;
export const permission = () => (supported() ? Notification.permission : 'unsupported');

export async function requestPermission() {
  if (!supported()) return 'unsupported';
  try { return await Notification.requestPermission(); } catch { return Notification.permission; }
}

export function init({ onOpen }) {
  openConversation = onOpen;
  store.onEvent((f) => {
    if (f.type === 'message.created') consider(f.message, false);
    else if (f.type === 'mention') consider(f.message, true);
  });
  store.subscribe((changes) => {
    if (changes.has('convs') || changes.has('me')) updateTitle();
  });
  updateTitle();
}

export function updateTitle() {
  const n = store.state.me ? store.totalUnread() : 0;
  const name = store.state.serverName || BASE_TITLE;
  document.title = n > 0 ? `(${n > 99 ? '99+' : n}) ${name}` : name;
}

/** The sender, fetched first if this client has not met them yet (a new
 * conversation's first message), so the notification names them. */
async function sender(id) {
  const known = store.user(id);
  if (!known._placeholder) return known;
  try {
    const fetched = await api.get(`/users/${id}`);
    store.putUser(fetched);
    return fetched;
  } catch {
    return known;
  }
}

async function consider(m, isMention) {
  if (!m || !store.state.me || m.sender_id === store.state.me.id || m.kind === 'system') return;
  if (!document.hidden) return;
  if (permission() !== 'granted') return;
  const c = store.conv(m.conversation_id);
  const mentioned = isMention || (m.mentions || []).includes(store.state.me.id);
  if (c && c.muted && !mentioned) return;
  if (notified.has(`m:${m.id}`) || (!mentioned && notified.has(`n:${m.id}`))) return;
  notified.add(`${mentioned ? 'm' : 'n'}:${m.id}`);
  const from = displayName(await sender(m.sender_id));
  const where = c && c.kind !== 'direct' ? ` in ${store.convTitle(c)}` : '';
  const title = mentioned ? `${from} mentioned you${where}` : `${from}${where}`;
  try {
    const n = new Notification(title, {
      body: snippet(m.body || (m.attachments && m.attachments.length ? 'sent an attachment' : ''), 140),
      tag: `lanchat-msg-${m.id}`,
      icon: '/favicon.svg',
    });
    n.onclick = () => { window.focus(); openConversation(m.conversation_id); n.close(); };
  } catch { /* some platforms only allow notifications from a service worker */ }
}
