// Client state: users, conversations, loaded message windows, the outbox of
// pending sends, typing indicators. Applies REST results and WebSocket events,
// and tells subscribers which parts changed (batched).

import * as api from './api.js';
import { Socket } from './ws.js';
import { uuid, displayName } from './format.js';

export const state = {
  me: null,
  users: new Map(),     // id -> User
  convs: new Map(),     // id -> Conversation (+ local fields: _mentioned)
  msgs: new Map(),      // conversation id -> { items, hasMoreBefore, hasMoreAfter, loading }
  outbox: [],           // pending sends, persisted
  typing: new Map(),    // conversation id -> Map(user id -> timeout handle)
  conn: 'connecting',   // connecting | open | reconnecting | closed
  currentId: null,
  serverName: null,
  ready: false,
  serverVersion: null,
};

// ---------------------------------------------------------------- change feed

const listeners = new Set();
const eventHooks = new Set();
let dirty = new Set();
let flushTimer = null;

/** fn(changes: Set<string>) — tags: me, users, convs, conn, outbox, typing, current, msgs:<id> */
export function subscribe(fn) { listeners.add(fn); return () => listeners.delete(fn); }

/** Observe raw server events after they were applied (notifications, extensions). */
export function onEvent(fn) { eventHooks.add(fn); return () => eventHooks.delete(fn); }

export function changed(...tags) {
  for (const t of tags) dirty.add(t);
  if (!flushTimer) flushTimer = setTimeout(flush, 0);
}

function flush() {
  flushTimer = null;
  const d = dirty;
  dirty = new Set();
  for (const fn of listeners) {
    try { fn(d); } catch (e) { console.error(e); }
  }
}

const toastHandlers = new Set();
export function onToast(fn) { toastHandlers.add(fn); }
export function toast(text, kind = 'info') { for (const fn of toastHandlers) fn(text, kind); }

// ---------------------------------------------------------------- persistence

const key = (what) => `lanchat.${what}.${state.me ? state.me.id : api.sessionUserId()}`;

function loadJSON(k, dflt) {
  try { const v = JSON.parse(localStorage.getItem(k) || 'null'); return v === null ? dflt : v; } catch { return dflt; }
}

// Client ids this tab saw settled or discarded, so that merging with what other
// tabs of the same user stored does not bring them back.
const settledIds = new Set();

function saveOutbox() {
  try {
    const mine = new Set(state.outbox.map((p) => p.client_id));
    const others = loadJSON(key('outbox'), []).filter((p) => p && !mine.has(p.client_id) && !settledIds.has(p.client_id));
    localStorage.setItem(key('outbox'), JSON.stringify(others.concat(state.outbox)));
  } catch { /* quota */ }
}

let drafts = {};
export function getDraft(convId) { return drafts[convId] || ''; }
export function setDraft(convId, text) {
  drafts = loadJSON(key('drafts'), {}); // change only this conversation's draft: other tabs keep theirs
  if (text) drafts[convId] = text; else delete drafts[convId];
  try { localStorage.setItem(key('drafts'), JSON.stringify(drafts)); } catch { /* quota */ }
}

// ---------------------------------------------------------------- users

const pendingUserFetch = new Set();
let userFetchTimer = null;

export function user(id) {
  const u = state.users.get(id);
  if (u) return u;
  if (id !== null && id !== undefined && !pendingUserFetch.has(id)) {
    pendingUserFetch.add(id);
    clearTimeout(userFetchTimer);
    userFetchTimer = setTimeout(fetchPendingUsers, 20);
  }
  return { id, username: `user${id}`, display_name: '…', online: false, _placeholder: true };
}

async function fetchPendingUsers() {
  const ids = [...pendingUserFetch];
  await Promise.all(ids.map(async (id) => {
    try {
      putUser(await api.get(`/users/${id}`));
    } catch { /* unknown or gone: keep the placeholder */ }
    pendingUserFetch.delete(id);
  }));
  changed('users');
}

/** Re-reads users who just became contacts: the server pushes presence only
 *  between people who share a conversation, so what we knew of them may be stale. */
function refreshUsers(ids) {
  for (const id of ids) {
    if (id !== null && id !== undefined && !(state.me && id === state.me.id)) pendingUserFetch.add(id);
  }
  if (!pendingUserFetch.size) return;
  clearTimeout(userFetchTimer);
  userFetchTimer = setTimeout(fetchPendingUsers, 20);
}

function memberIds(c) {
  return c && Array.isArray(c.members) ? c.members.map((m) => m.user_id) : [];
}

export function putUser(u) {
  if (!u || u.id === undefined) return;
  const old = state.users.get(u.id);
  state.users.set(u.id, old ? { ...old, ...u } : u);
  if (state.me && u.id === state.me.id) { state.me = { ...state.me, ...u }; changed('me'); }
  changed('users');
}

export async function loadDirectory(q = '', maxPages = 10) {
  const out = [];
  let cursor = null;
  for (let i = 0; i < maxPages; i++) {
    const page = await api.get('/users', { q, cursor, limit: 100 });
    for (const u of page.items || []) { putUser(u); out.push(u); }
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return out;
}

// ---------------------------------------------------------------- conversations

function normalizeConv(c, old) {
  const conv = old ? { ...old } : { unread_count: 0, my_last_read_id: 0, muted: false, last_message: null, members: null };
  const personal = ['unread_count', 'my_last_read_id', 'muted', 'my_role'];
  for (const [k, v] of Object.entries(c)) {
    if (v === undefined) continue;
    if (old && personal.includes(k)) continue; // kept locally, moved by our own events
    if (k === 'last_message') {
      if (v && (!conv.last_message || v.id >= conv.last_message.id)) conv.last_message = v;
      continue;
    }
    conv[k] = v;
  }
  if (Array.isArray(conv.members) && state.me) {
    const mine = conv.members.find((m) => m.user_id === state.me.id);
    if (mine) {
      if (!conv.my_role) conv.my_role = mine.role;
      if (!old && !(conv.my_last_read_id > 0) && mine.last_read_id) conv.my_last_read_id = mine.last_read_id;
    }
    if (typeof conv.member_count !== 'number') conv.member_count = conv.members.length;
  }
  return conv;
}

export function upsertConv(c, { replacePersonal = false } = {}) {
  goneConvs.delete(c.id);
  const old = state.convs.get(c.id);
  const conv = normalizeConv(c, replacePersonal ? null : old);
  if (replacePersonal && old) {
    // Our own read pointer may be ahead of the server's snapshot (read frame in flight).
    if ((old.my_last_read_id || 0) > (conv.my_last_read_id || 0)) {
      conv.my_last_read_id = old.my_last_read_id;
      if (!conv.last_message || conv.my_last_read_id >= conv.last_message.id) conv.unread_count = 0;
    }
    // A snapshot older than what we already applied (buffered event after a REST load).
    if (old.last_message && (!conv.last_message || old.last_message.id > conv.last_message.id)) {
      conv.last_message = old.last_message;
      conv.unread_count = old.unread_count;
    }
    conv._mentioned = old._mentioned && conv.unread_count > 0;
  }
  if (replacePersonal && old && !c.members && old.members) conv.members = old.members;
  // Receipts only move forward: keep pointers that events already advanced.
  if (old && Array.isArray(old.members) && Array.isArray(conv.members) && conv.members !== old.members) {
    const prev = new Map(old.members.map((m) => [m.user_id, m]));
    conv.members = conv.members.map((m) => {
      const p = prev.get(m.user_id);
      return p ? { ...m, last_read_id: Math.max(m.last_read_id || 0, p.last_read_id || 0), last_delivered_id: Math.max(m.last_delivered_id || 0, p.last_delivered_id || 0) } : m;
    });
  }
  state.convs.set(c.id, conv);
  changed('convs');
  return conv;
}

export function conv(id) { return state.convs.get(id) || null; }

export function otherMember(c) {
  if (!c || !Array.isArray(c.members) || !state.me) return null;
  return c.members.find((m) => m.user_id !== state.me.id) || null;
}

export function convTitle(c) {
  if (!c) return '';
  if (c.kind === 'direct') {
    const o = otherMember(c);
    return o ? displayName(user(o.user_id)) : (c.title || 'Direct message');
  }
  return c.title || (c.kind === 'channel' ? 'channel' : 'Group');
}

export function activityOf(c) {
  let t = c.last_message ? c.last_message.created_at : c.created_at || 0;
  for (const p of state.outbox) if (p.conversation_id === c.id && p.created_at > t) t = p.created_at;
  return t;
}

export function sortedConvs() {
  return [...state.convs.values()].sort((a, b) => activityOf(b) - activityOf(a) || b.id - a.id);
}

export function totalUnread() {
  let n = 0;
  for (const c of state.convs.values()) if (!c.muted || c._mentioned) n += c.unread_count || 0;
  return n;
}

async function fetchConv(id) {
  try {
    const c = await api.get(`/conversations/${id}`);
    return upsertConv(c, { replacePersonal: true });
  } catch (e) {
    if (e.status === 404 || e.status === 403) dropConv(id);
    return null;
  }
}
export { fetchConv as refreshConv };

// Conversations we left or were removed from: late events for them are ignored
// instead of fetching a conversation we can no longer see (a 404).
const goneConvs = new Set();

function dropConv(id) {
  goneConvs.add(id);
  state.convs.delete(id);
  state.msgs.delete(id);
  if (state.currentId === id) { state.currentId = null; changed('current'); }
  changed('convs');
}

// ---------------------------------------------------------------- messages

function win(id) { return state.msgs.get(id); }

function setWindow(id, page, how) {
  let w = win(id);
  if (!w || how === 'replace') {
    w = { items: [], hasMoreBefore: false, hasMoreAfter: false, loading: false };
    state.msgs.set(id, w);
  }
  const items = page.items || [];
  if (how === 'replace') {
    w.items = items.slice();
    w.hasMoreBefore = !!page.has_more_before;
    w.hasMoreAfter = !!page.has_more_after;
  } else if (how === 'older') {
    const first = w.items.length ? w.items[0].id : Infinity;
    w.items = items.filter((m) => m.id < first).concat(w.items);
    w.hasMoreBefore = !!page.has_more_before;
  } else if (how === 'newer') {
    const last = w.items.length ? w.items[w.items.length - 1].id : 0;
    w.items = w.items.concat(items.filter((m) => m.id > last));
    w.hasMoreAfter = !!page.has_more_after;
  }
  for (const m of items) if (m.client_id) settleOutbox(m);
  changed('msgs:' + id);
  return w;
}

const inflight = new Map(); // conversation id -> Promise of the newest-page load

/** Resolves once the conversation's first page (if being loaded) has arrived. */
export function whenLoaded(id) { return inflight.get(id) || Promise.resolve(); }

export function loadLatest(id) {
  const w = win(id);
  if (w && w.loading) return whenLoaded(id);
  if (w) { w.loading = true; changed('msgs:' + id); }
  const p = (async () => {
    try {
      const page = await api.get(`/conversations/${id}/messages`, { limit: 50 });
      setWindow(id, page, 'replace');
    } catch (e) {
      if (w) { w.loading = false; w.initial = false; changed('msgs:' + id); }
      if (e.status === 404) dropConv(id); else toast(e.message, 'error');
    } finally {
      inflight.delete(id);
    }
  })();
  inflight.set(id, p);
  return p;
}

export async function loadOlder(id) {
  const w = win(id);
  if (!w || w.loading || !w.hasMoreBefore || !w.items.length) return;
  w.loading = true;
  changed('msgs:' + id);
  try {
    const page = await api.get(`/conversations/${id}/messages`, { before: w.items[0].id, limit: 50 });
    w.loading = false;
    setWindow(id, page, 'older');
  } catch (e) {
    w.loading = false;
    changed('msgs:' + id);
    toast(e.message, 'error');
  }
}

export async function loadNewer(id) {
  const w = win(id);
  if (!w || w.loading || !w.hasMoreAfter || !w.items.length) return;
  w.loading = true;
  try {
    const page = await api.get(`/conversations/${id}/messages`, { after: w.items[w.items.length - 1].id, limit: 50 });
    w.loading = false;
    setWindow(id, page, 'newer');
  } catch (e) {
    w.loading = false;
    toast(e.message, 'error');
  }
}

/** Load a window centred on a message (jump-to from search, issue 6). */
export async function loadAround(id, messageId) {
  const page = await api.get(`/conversations/${id}/messages`, { around: messageId, limit: 50 });
  setWindow(id, page, 'replace');
}

export function messageById(convId, id) {
  const w = win(convId);
  if (!w) return null;
  return w.items.find((m) => m.id === id) || null;
}

function insertMessage(m) {
  const w = win(m.conversation_id);
  if (!w) return false;
  const items = w.items;
  const last = items.length ? items[items.length - 1] : null;
  if (w.hasMoreAfter && last && m.id > last.id) return false; // outside the loaded window
  let i = items.length;
  while (i > 0 && items[i - 1].id > m.id) i--;
  if (i > 0 && items[i - 1].id === m.id) items[i - 1] = m;
  else if (!(items.length && m.id < items[0].id && w.hasMoreBefore)) items.splice(i, 0, m);
  changed('msgs:' + m.conversation_id);
  return true;
}

function patchMessage(convId, messageId, fn) {
  const w = win(convId);
  if (w) {
    const idx = w.items.findIndex((m) => m.id === messageId);
    if (idx >= 0) { w.items[idx] = fn({ ...w.items[idx] }); changed('msgs:' + convId); }
  }
  const c = conv(convId);
  if (c && c.last_message && c.last_message.id === messageId) {
    c.last_message = fn({ ...c.last_message });
    changed('convs');
  }
}

/** A message arrived (event, ack or REST): store it, move counters. */
function receiveMessage(m, { live = true } = {}) {
  const c = conv(m.conversation_id);
  const mine = state.me && m.sender_id === state.me.id;
  if (m.client_id && mine) settleOutbox(m);
  if (!c) { if (!goneConvs.has(m.conversation_id)) fetchConv(m.conversation_id); return; }
  const known = c.last_message && c.last_message.id >= m.id;
  insertMessage(m);
  if (!c.last_message || m.id >= c.last_message.id) c.last_message = m;
  if (mine) {
    if (m.id > (c.my_last_read_id || 0)) c.my_last_read_id = m.id;
  } else if (!known && live && m.id > (c.my_last_read_id || 0) && m.kind !== 'system') {
    c.unread_count = (c.unread_count || 0) + 1;
    if (state.me && (m.mentions || []).includes(state.me.id)) c._mentioned = true;
  }
  clearTypingFor(m.conversation_id, m.sender_id);
  changed('convs');
}

// ---------------------------------------------------------------- outbox (pending sends)

export function pendingFor(convId) {
  return state.outbox.filter((p) => p.conversation_id === convId);
}

function settleOutbox(m) {
  settledIds.add(m.client_id);
  const before = state.outbox.length;
  state.outbox = state.outbox.filter((p) => p.client_id !== m.client_id);
  if (state.outbox.length !== before) { saveOutbox(); changed('outbox', 'convs', 'msgs:' + m.conversation_id); }
}

export function sendMessage(convId, body, { replyTo = null, attachments = [] } = {}) {
  const item = {
    client_id: uuid(),
    conversation_id: convId,
    body,
    reply_to: replyTo,
    attachment_ids: attachments.map((a) => a.id),
    attachments,
    created_at: Date.now(),
    state: 'pending',
  };
  state.outbox.push(item);
  saveOutbox();
  changed('outbox', 'convs', 'msgs:' + convId);
  transmit(item);
  return item;
}

function transmit(item) {
  const frame = { type: 'message.send', conversation_id: item.conversation_id, body: item.body, client_id: item.client_id };
  if (item.reply_to) frame.reply_to = item.reply_to;
  if (item.attachment_ids && item.attachment_ids.length) frame.attachment_ids = item.attachment_ids;
  item.sent_at = Date.now();
  return socket ? socket.send(frame) : false;
}

function resendPending() {
  for (const item of state.outbox) if (item.state === 'pending') transmit(item);
}

// A send that got no ack while connected (frame lost?) is repeated; client_id keeps it idempotent.
setInterval(() => {
  if (!socket || !socket.isOpen()) return;
  const now = Date.now();
  for (const item of state.outbox) if (item.state === 'pending' && now - (item.sent_at || 0) > 20_000) transmit(item);
}, 10_000);

export function retrySend(clientId) {
  const item = state.outbox.find((p) => p.client_id === clientId);
  if (!item) return;
  item.state = 'pending';
  delete item.error;
  saveOutbox();
  changed('outbox', 'msgs:' + item.conversation_id);
  transmit(item);
}

export function discardSend(clientId) {
  settledIds.add(clientId);
  const item = state.outbox.find((p) => p.client_id === clientId);
  state.outbox = state.outbox.filter((p) => p.client_id !== clientId);
  saveOutbox();
  if (item) changed('outbox', 'convs', 'msgs:' + item.conversation_id);
}

function failOutbox(clientId, error) {
  const item = state.outbox.find((p) => p.client_id === clientId);
  if (!item) return;
  if (error && (error.code === 'rate_limited' || error.code === 'internal')) {
    // transient: try again a little later
    setTimeout(() => { if (item.state === 'pending') transmit(item); }, 3_000 + Math.random() * 2_000);
    return;
  }
  item.state = 'failed';
  item.error = (error && error.message) || 'Not sent';
  saveOutbox();
  changed('outbox', 'msgs:' + item.conversation_id);
}

// ---------------------------------------------------------------- message actions

export async function editMessage(m, body) {
  const updated = await api.patch(`/messages/${m.id}`, { body });
  if (updated && updated.id) patchMessage(m.conversation_id, m.id, () => updated);
}

export async function deleteMessage(m) {
  await api.del(`/messages/${m.id}`);
  patchMessage(m.conversation_id, m.id, (x) => ({ ...x, body: '', attachments: [], deleted_at: x.deleted_at || Date.now() }));
}

function reactionSet(m, emoji, userId, on) {
  const reactions = (m.reactions || []).map((r) => ({ emoji: r.emoji, user_ids: r.user_ids.slice() }));
  let r = reactions.find((x) => x.emoji === emoji);
  if (on) {
    if (!r) { r = { emoji, user_ids: [] }; reactions.push(r); }
    if (!r.user_ids.includes(userId)) r.user_ids.push(userId);
  } else if (r) {
    r.user_ids = r.user_ids.filter((u) => u !== userId);
  }
  return { ...m, reactions: reactions.filter((x) => x.user_ids.length) };
}

export async function toggleReaction(m, emoji) {
  const meId = state.me.id;
  const r = (m.reactions || []).find((x) => x.emoji === emoji);
  const on = !(r && r.user_ids.includes(meId));
  patchMessage(m.conversation_id, m.id, (x) => reactionSet(x, emoji, meId, on));
  try {
    if (on) await api.put(`/messages/${m.id}/reactions/${encodeURIComponent(emoji)}`);
    else await api.del(`/messages/${m.id}/reactions/${encodeURIComponent(emoji)}`);
  } catch (e) {
    patchMessage(m.conversation_id, m.id, (x) => reactionSet(x, emoji, meId, !on));
    toast(e.message, 'error');
  }
}

/** Move my read pointer to the newest loaded message of a conversation. */
export function markRead(convId) {
  const c = conv(convId);
  if (!c) return;
  const w = win(convId);
  let newest = c.last_message ? c.last_message.id : 0;
  if (w && w.items.length && !w.hasMoreAfter) newest = Math.max(newest, w.items[w.items.length - 1].id);
  else if (w && w.hasMoreAfter) newest = w.items.length ? w.items[w.items.length - 1].id : 0;
  if (!newest) return;
  const wasUnread = c.unread_count > 0 || c._mentioned;
  if (newest <= (c.my_last_read_id || 0)) {
    if (wasUnread && (!c.last_message || newest >= c.last_message.id)) { c.unread_count = 0; c._mentioned = false; changed('convs'); }
    return;
  }
  c.my_last_read_id = newest;
  if (!c.last_message || newest >= c.last_message.id) { c.unread_count = 0; c._mentioned = false; }
  if (Array.isArray(c.members) && state.me) {
    const mine = c.members.find((m) => m.user_id === state.me.id);
    if (mine && (mine.last_read_id || 0) < newest) mine.last_read_id = newest;
  }
  changed('convs');
  const frame = { type: 'read', conversation_id: convId, message_id: newest };
  if (!socket || !socket.send(frame)) {
    api.post(`/conversations/${convId}/read`, { message_id: newest }).catch(() => {});
  }
}

// ---------------------------------------------------------------- typing

const TYPING_TTL_MS = 7_000;

export function typingUsers(convId) {
  const m = state.typing.get(convId);
  return m ? [...m.keys()] : [];
}

function setTyping(convId, userId, on) {
  if (state.me && userId === state.me.id) return;
  let m = state.typing.get(convId);
  if (on) {
    if (!m) { m = new Map(); state.typing.set(convId, m); }
    clearTimeout(m.get(userId));
    m.set(userId, setTimeout(() => setTyping(convId, userId, false), TYPING_TTL_MS));
  } else if (m && m.has(userId)) {
    clearTimeout(m.get(userId));
    m.delete(userId);
    if (!m.size) state.typing.delete(convId);
  } else return;
  changed('typing');
}

function clearTypingFor(convId, userId) { setTyping(convId, userId, false); }

let myTyping = { convId: null, lastStart: 0, idleTimer: null };

/** Composer input happened: send typing start, renewed every ~3 s, stop after idle. */
export function noteTyping(convId, hasText) {
  if (!hasText) { stopTyping(); return; }
  const now = Date.now();
  if (myTyping.convId !== convId) { stopTyping(); myTyping.convId = convId; myTyping.lastStart = 0; }
  if (now - myTyping.lastStart >= 3_000) {
    if (socket && socket.send({ type: 'typing', conversation_id: convId, state: 'start' })) myTyping.lastStart = now;
  }
  clearTimeout(myTyping.idleTimer);
  myTyping.idleTimer = setTimeout(stopTyping, 4_000);
}

export function stopTyping() {
  clearTimeout(myTyping.idleTimer);
  if (myTyping.convId !== null && myTyping.lastStart) {
    if (socket) socket.send({ type: 'typing', conversation_id: myTyping.convId, state: 'stop' });
  }
  myTyping = { convId: null, lastStart: 0, idleTimer: null };
}

// ---------------------------------------------------------------- events

let socket = null;
let loadingAll = false;
let buffered = [];

function handleFrame(f) {
  switch (f.type) {
    case 'hello':
      if (f.user) putUser(f.user);
      state.serverVersion = f.server_version || null;
      resendPending();
      return;
    case 'resync_required':
      reloadAll();
      return;
    case 'ack':
      if (f.message) receiveMessage(f.message);
      return;
    case 'error':
      if (f.client_id) failOutbox(f.client_id, f.error);
      else if (f.error && f.error.code !== 'rate_limited') console.warn('server error frame', f.error);
      return;
    case 'pong':
      return;
  }
  if (loadingAll && typeof f.event_id === 'number') { buffered.push(f); return; }
  applyEvent(f);
}

function applyEvent(f) {
  const c = f.conversation_id !== undefined ? conv(f.conversation_id) : null;
  switch (f.type) {
    case 'message.created':
      receiveMessage(f.message);
      break;
    case 'message.updated': {
      const m = f.message;
      if (!insertMessage(m)) { /* not loaded */ }
      const cc = conv(m.conversation_id);
      if (cc && cc.last_message && cc.last_message.id === m.id) { cc.last_message = m; changed('convs'); }
      break;
    }
    case 'message.deleted':
      patchMessage(f.conversation_id, f.message_id, (x) => ({ ...x, body: '', attachments: [], deleted_at: x.deleted_at || Date.now() }));
      break;
    case 'reaction.added':
    case 'reaction.removed':
      patchMessage(f.conversation_id, f.message_id, (x) => reactionSet(x, f.emoji, f.user_id, f.type === 'reaction.added'));
      break;
    case 'conversation.created':
    case 'conversation.updated':
      // Events carry what every member sees alike; personal fields (unread count,
      // read pointer, mute, role) stay as this client tracks them.
      if (f.conversation) upsertConv(f.conversation);
      if (f.type === 'conversation.created') refreshUsers(memberIds(f.conversation));
      break;
    case 'member.added':
      if (state.me && f.user_id === state.me.id && !c) {
        goneConvs.delete(f.conversation_id);
        fetchConv(f.conversation_id).then((fetched) => refreshUsers(memberIds(fetched)));
        break;
      }
      refreshUsers([f.user_id]);
      if (c) {
        if (Array.isArray(c.members) && !c.members.some((m) => m.user_id === f.user_id)) {
          c.members = c.members.concat([{ user_id: f.user_id, role: f.role || 'member', joined_at: Date.now(), last_read_id: 0, last_delivered_id: 0 }]);
          c.member_count = (c.member_count || 0) + 1;
        } else if (!Array.isArray(c.members)) c.member_count = (c.member_count || 0) + 1;
        changed('convs');
      }
      break;
    case 'member.removed':
      if (state.me && f.user_id === state.me.id) { dropConv(f.conversation_id); break; }
      if (c) {
        if (Array.isArray(c.members)) c.members = c.members.filter((m) => m.user_id !== f.user_id);
        c.member_count = Math.max(0, (c.member_count || 1) - 1);
        changed('convs');
      }
      break;
    case 'member.updated':
      if (c) {
        if (Array.isArray(c.members)) c.members = c.members.map((m) => (m.user_id === f.user_id ? { ...m, role: f.role } : m));
        if (state.me && f.user_id === state.me.id) c.my_role = f.role;
        changed('convs');
      }
      break;
    case 'read':
      if (!c) break;
      if (state.me && f.user_id === state.me.id) {
        // my other device read up to here
        if (f.message_id > (c.my_last_read_id || 0)) {
          c.my_last_read_id = f.message_id;
          if (!c.last_message || f.message_id >= c.last_message.id) { c.unread_count = 0; c._mentioned = false; }
          else recountUnread(c);
        }
      } else if (Array.isArray(c.members)) {
        c.members = c.members.map((m) => (m.user_id === f.user_id
          ? { ...m, last_read_id: Math.max(m.last_read_id || 0, f.message_id), last_delivered_id: Math.max(m.last_delivered_id || 0, f.message_id) }
          : m));
      }
      changed('convs', 'msgs:' + f.conversation_id);
      break;
    case 'delivered':
      if (c && Array.isArray(c.members)) {
        c.members = c.members.map((m) => (m.user_id === f.user_id
          ? { ...m, last_delivered_id: Math.max(m.last_delivered_id || 0, f.message_id) } : m));
        changed('convs', 'msgs:' + f.conversation_id);
      }
      break;
    case 'mention':
      if (f.message) {
        const mc = conv(f.message.conversation_id);
        if (mc && f.message.id > (mc.my_last_read_id || 0)) { mc._mentioned = true; changed('convs'); }
      }
      break;
    case 'typing':
      setTyping(f.conversation_id, f.user_id, f.state === 'start');
      break;
    case 'presence': {
      const u = state.users.get(f.user_id);
      if (u) putUser({ ...u, online: f.online, last_seen_at: f.last_seen_at ?? u.last_seen_at });
      else user(f.user_id);
      break;
    }
    default:
      break;
  }
  for (const fn of eventHooks) {
    try { fn(f); } catch (e) { console.error(e); }
  }
}

function recountUnread(c) {
  const w = win(c.id);
  if (!w || !state.me) return;
  c.unread_count = w.items.filter((m) => m.id > c.my_last_read_id && m.sender_id !== state.me.id && m.kind !== 'system' && !m.deleted_at).length;
}

// ---------------------------------------------------------------- lifecycle

async function loadAllConversations() {
  const items = [];
  let cursor = null;
  for (let i = 0; i < 50; i++) {
    const page = await api.get('/conversations', { cursor });
    items.push(...((page && page.items) || []));
    cursor = page && page.next_cursor;
    if (!cursor) break;
  }
  return { items };
}

/** Load everything over REST. Events that arrive meanwhile are applied afterwards. */
export async function reloadAll() {
  if (loadingAll) return;
  loadingAll = true;
  try {
    const [me, list] = await Promise.all([
      api.get('/users/me'),
      loadAllConversations(),
    ]);
    putUser(me);
    state.me = { ...state.me, ...me };
    const seen = new Set();
    for (const c of list.items || []) { upsertConv(c, { replacePersonal: true }); seen.add(c.id); }
    for (const id of [...state.convs.keys()]) if (!seen.has(id)) dropConv(id);
    // Message windows may be stale: drop all but the open one, which reloads.
    for (const id of [...state.msgs.keys()]) if (id !== state.currentId) state.msgs.delete(id);
    if (state.currentId && state.convs.has(state.currentId)) await loadLatest(state.currentId);
    state.ready = true;
    changed('convs', 'me', 'current');
    loadDirectory().catch(() => {});
  } finally {
    loadingAll = false;
    const queue = buffered;
    buffered = [];
    for (const f of queue) applyEvent(f);
  }
}

export async function start(me) {
  state.me = me;
  putUser(me);
  state.outbox = loadJSON(key('outbox'), []).filter((p) => p && p.client_id && p.conversation_id);
  for (const p of state.outbox) if (p.state !== 'failed') p.state = 'pending';
  drafts = loadJSON(key('drafts'), {});
  socket = new Socket({
    getToken: async () => { await api.ensureFresh(30_000); return api.accessToken(); },
    onFrame: handleFrame,
    onStatus: (s) => { state.conn = s; changed('conn'); },
    onAuthProblem: () => api.get('/users/me').then(putUser),
  });
  api.onTokens(() => { if (socket && socket.status === 'reconnecting') socket.retryNow(); });
  loadingAll = false;
  const loaded = reloadAll();
  socket.start();
  await loaded;
}

export function stop() {
  stopTyping();
  if (socket) socket.stop();
  socket = null;
  state.me = null;
  state.users.clear();
  state.convs.clear();
  state.msgs.clear();
  state.outbox = [];
  state.typing.clear();
  state.currentId = null;
  state.ready = false;
}

/** Explicit sign-out: forget this user's local data on this device. */
export function forgetLocalData() {
  try {
    localStorage.removeItem(key('outbox'));
    localStorage.removeItem(key('drafts'));
  } catch { /* ignore */ }
}

export function setCurrent(id) {
  if (state.currentId === id) return;
  stopTyping();
  state.currentId = id;
  changed('current');
  if (id && !win(id)) {
    state.msgs.set(id, { items: [], hasMoreBefore: false, hasMoreAfter: false, loading: false, initial: true });
    loadLatest(id);
  }
}

// ---------------------------------------------------------------- conversation management

export async function openDirect(userId) {
  return upsertConv(await api.post('/conversations', { kind: 'direct', user_id: userId }), { replacePersonal: true });
}
export async function createGroup(title, memberIds) {
  return upsertConv(await api.post('/conversations', { kind: 'group', title, member_ids: memberIds }), { replacePersonal: true });
}
export async function createChannel(title, topic) {
  const body = { kind: 'channel', title };
  if (topic) body.topic = topic;
  return upsertConv(await api.post('/conversations', body), { replacePersonal: true });
}
export async function joinChannel(id) {
  const c = await api.post(`/conversations/${id}/join`);
  if (c && c.id) return upsertConv(c, { replacePersonal: true });
  return fetchConv(id);
}
export async function leaveConv(id) {
  await api.post(`/conversations/${id}/leave`);
  dropConv(id);
}
export async function updateConv(id, patchBody) {
  const c = await api.patch(`/conversations/${id}`, patchBody);
  if (c && c.id) upsertConv(c);
  else await fetchConv(id);
}
export async function addMembers(id, userIds) {
  await api.post(`/conversations/${id}/members`, { user_ids: userIds });
  await fetchConv(id);
}
export async function removeMember(id, userId) {
  await api.del(`/conversations/${id}/members/${userId}`);
  if (state.me && userId === state.me.id) dropConv(id); else await fetchConv(id);
}
export async function setRole(id, userId, role) {
  await api.patch(`/conversations/${id}/members/${userId}`, { role });
  await fetchConv(id);
}
export async function setMuted(id, muted) {
  if (muted) await api.put(`/conversations/${id}/mute`); else await api.del(`/conversations/${id}/mute`);
  const c = conv(id);
  if (c) { c.muted = muted; changed('convs'); }
}

export async function updateMe(patchBody) {
  const u = await api.patch('/users/me', patchBody);
  if (u && u.id) putUser(u);
  else putUser({ ...state.me, ...patchBody });
}
