// Rendering of the message list: day separators, grouping, bodies with
// mentions and links (always as text nodes), replies, reactions, receipts.

import { h } from '../dom.js';
import * as store from '../store.js';
import { displayName, timeShort, fullDate, isoDate, dayKey, dayLabel, snippet } from '../format.js';
import { avatar, icon } from './common.js';
import { renderAttachments } from './attachments.js';

const GROUP_GAP_MS = 5 * 60_000;
const TOKEN_RE = /(https?:\/\/[^\s<>"']+)|(@[A-Za-z0-9_.-]{3,32})/g;

/** Body text → nodes. Links (http/https only) and @mentions become elements; everything else text. */
export function richText(body, mentionNames, myUsername) {
  const out = [];
  let last = 0;
  TOKEN_RE.lastIndex = 0;
  let m;
  while ((m = TOKEN_RE.exec(body)) !== null) {
    let tok = m[0];
    if (m[1]) {
      const trail = tok.match(/[.,;:!?)\]'"]+$/);
      if (trail) tok = tok.slice(0, -trail[0].length);
    }
    if (m.index > last) out.push(body.slice(last, m.index));
    if (m[1]) {
      out.push(h('a', { href: tok, target: '_blank', rel: 'noopener noreferrer nofollow', text: tok }));
    } else {
      const name = tok.slice(1).toLowerCase().replace(/[.]+$/, '');
      const isMention = mentionNames.has(name);
      if (isMention) {
        const self = myUsername && name === myUsername.toLowerCase();
        out.push(h('span', { class: ['mention', self && 'mention-me'], testid: 'mention', text: tok }));
      } else out.push(tok);
    }
    last = m.index + tok.length;
    TOKEN_RE.lastIndex = last;
  }
  if (last < body.length) out.push(body.slice(last));
  return out;
}

function mentionNamesOf(m) {
  const names = new Set();
  for (const id of m.mentions || []) {
    const u = store.user(id);
    if (u && !u._placeholder) names.add(u.username.toLowerCase());
  }
  return names;
}

/** Receipt state of my message: pending | failed | sent | delivered | read (null: not shown). */
export function receiptOf(c, m) {
  if (m.pending) return m.failed ? 'failed' : 'pending';
  if (!c || !Array.isArray(c.members) || (c.kind !== 'direct' && c.kind !== 'group')) return 'sent';
  const others = c.members.filter((x) => x.user_id !== store.state.me.id);
  if (!others.length) return 'sent';
  if (others.every((x) => (x.last_read_id || 0) >= m.id)) return 'read';
  if (others.every((x) => Math.max(x.last_delivered_id || 0, x.last_read_id || 0) >= m.id)) return 'delivered';
  return 'sent';
}

const RECEIPT = {
  pending: { text: '🕓', label: 'Sending…' },
  failed: { text: '!', label: 'Not sent' },
  sent: { text: '✓', label: 'Sent' },
  delivered: { text: '✓✓', label: 'Delivered' },
  read: { text: '✓✓', label: 'Read' },
};

/**
 * Build the keyed entries for reconcile(): day separators + messages.
 * ctx: { convId, actions: { react, reply, edit, remove, toggleReaction, retry, discard, jumpTo } }
 */
export function buildEntries(ctx) {
  const c = store.conv(ctx.convId);
  const w = store.state.msgs.get(ctx.convId);
  const me = store.state.me;
  const items = w ? w.items.slice() : [];
  if (!w || !w.hasMoreAfter) {
    for (const p of store.pendingFor(ctx.convId)) {
      items.push({
        pending: true, failed: p.state === 'failed', error: p.error, client_id: p.client_id, id: null,
        conversation_id: p.conversation_id, sender_id: me.id, body: p.body, kind: 'text', reply_to: p.reply_to,
        attachments: p.attachments || [], reactions: [], mentions: [], created_at: p.created_at, edited_at: null, deleted_at: null,
      });
    }
  }
  const canModerate = c && (c.my_role === 'owner' || c.my_role === 'admin');
  const entries = [];
  let prev = null;
  let newShown = false;
  for (const m of items) {
    if (!newShown && ctx.unreadFrom !== null && ctx.unreadFrom !== undefined && m.id > ctx.unreadFrom
      && !m.pending && m.sender_id !== me.id && m.kind !== 'system') {
      newShown = true;
      entries.push({ key: 'new-sep', sig: 'new', build: () => h('li', { class: 'new-sep', testid: 'new-messages-separator', role: 'separator' }, h('span', { text: 'New messages' })) });
    }
    const dk = dayKey(m.created_at);
    if (!prev || dayKey(prev.created_at) !== dk) {
      const label = dayLabel(m.created_at);
      entries.push({ key: `day-${dk}`, sig: label, build: () => h('li', { class: 'day-sep', testid: 'day-separator', role: 'separator' }, h('span', { text: label })) });
    }
    const grouped = !!prev && prev.sender_id === m.sender_id && m.kind !== 'system' && prev.kind !== 'system'
      && dayKey(prev.created_at) === dk && m.created_at - prev.created_at < GROUP_GAP_MS && !m.reply_to;
    const mine = me && m.sender_id === me.id;
    const receipt = mine && m.kind !== 'system' && !m.deleted_at ? receiptOf(c, m) : null;
    const sender = store.user(m.sender_id);
    const replyTo = m.reply_to ? store.messageById(ctx.convId, m.reply_to) : null;
    const mentionNames = mentionNamesOf(m);
    const mentionsMe = me && (m.mentions || []).includes(me.id) && !mine;
    const sig = JSON.stringify([
      m.id, m.body, m.edited_at, m.deleted_at, m.reactions, grouped, receipt, m.failed, m.error,
      displayName(sender), replyTo && [replyTo.body, replyTo.deleted_at, displayName(store.user(replyTo.sender_id))],
      [...mentionNames], (m.attachments || []).map((a) => a.id), canModerate, timeShort(m.created_at),
    ]);
    entries.push({
      key: m.pending ? `p-${m.client_id}` : `m-${m.id}`,
      sig,
      build: () => renderMessage(ctx, { m, c, grouped, mine, receipt, sender, replyTo, mentionNames, mentionsMe, canModerate }),
    });
    prev = m;
  }
  return entries;
}

function renderMessage(ctx, { m, grouped, mine, receipt, sender, replyTo, mentionNames, mentionsMe, canModerate }) {
  const a = ctx.actions;
  if (m.kind === 'system') {
    return h('li', { class: 'msg msg-system', testid: 'message', dataset: { id: m.id, kind: 'system' }, tabindex: '-1' },
      h('span', { class: 'msg-system-text' }, richText(m.body || '', mentionNames, store.state.me.username)),
      h('time', { datetime: isoDate(m.created_at), title: fullDate(m.created_at), text: timeShort(m.created_at) }));
  }
  const deleted = !!m.deleted_at;
  const name = displayName(sender);
  const time = h('time', { class: 'msg-time', datetime: isoDate(m.created_at), title: fullDate(m.created_at), text: timeShort(m.created_at) });

  const main = h('div', { class: 'msg-main' });
  if (!grouped) {
    main.appendChild(h('div', { class: 'msg-meta' },
      h('span', { class: 'msg-sender', testid: 'message-sender', text: name }),
      time));
  }
  if (m.reply_to) {
    const quoteText = replyTo
      ? (replyTo.deleted_at ? 'Deleted message' : snippet(replyTo.body || (replyTo.attachments.length ? `📎 ${replyTo.attachments[0].name}` : ''), 120))
      : 'an earlier message';
    main.appendChild(h('button', {
      type: 'button', class: 'msg-reply', testid: 'reply-quote', title: 'Show the original message',
      on: { click: () => a.jumpTo(m.reply_to) },
    },
    icon('reply'),
    replyTo ? h('span', { class: 'msg-reply-name', text: displayName(store.user(replyTo.sender_id)) }) : null,
    h('span', { class: 'msg-reply-text', text: quoteText })));
  }
  if (deleted) {
    main.appendChild(h('p', { class: 'msg-body msg-deleted', testid: 'message-deleted', text: 'This message was deleted' }));
  } else {
    const body = h('div', { class: 'msg-body', testid: 'message-body' }, richText(m.body || '', mentionNames, store.state.me.username));
    if (m.edited_at) body.appendChild(h('span', { class: 'msg-edited', testid: 'message-edited', title: `Edited ${fullDate(m.edited_at)}`, text: ' (edited)' }));
    main.appendChild(body);
    if (m.attachments && m.attachments.length) main.appendChild(renderAttachments(m.attachments));
  }
  if (!deleted && m.reactions && m.reactions.length) {
    const meId = store.state.me.id;
    main.appendChild(h('div', { class: 'reactions', testid: 'reactions' },
      m.reactions.map((r) => {
        const minePressed = r.user_ids.includes(meId);
        const who = r.user_ids.map((id) => displayName(store.user(id))).join(', ');
        return h('button', {
          type: 'button', class: ['reaction', minePressed && 'mine'], testid: 'reaction', dataset: { emoji: r.emoji },
          'aria-pressed': minePressed ? 'true' : 'false', title: who, 'aria-label': `${r.emoji} ${r.user_ids.length}: ${who}`,
          disabled: m.pending, on: { click: () => a.toggleReaction(m, r.emoji) },
        }, h('span', { class: 'reaction-emoji', text: r.emoji }), h('span', { class: 'reaction-count', text: String(r.user_ids.length) }));
      })));
  }
  if (receipt) {
    const r = RECEIPT[receipt];
    const status = h('span', { class: ['receipt', `receipt-${receipt}`], testid: 'msg-status', dataset: { status: receipt }, title: r.label },
      h('span', { 'aria-hidden': 'true', text: r.text }), h('span', { class: 'sr-only', text: r.label }));
    main.appendChild(h('div', { class: ['msg-foot', m.failed && 'msg-foot-static'] },
      m.failed ? h('span', { class: 'msg-error', text: m.error || 'Not sent' }) : null,
      m.failed ? h('button', { type: 'button', class: 'link-btn', testid: 'retry-send', on: { click: () => a.retry(m.client_id) } }, 'Retry') : null,
      m.failed ? h('button', { type: 'button', class: 'link-btn', testid: 'discard-send', on: { click: () => a.discard(m.client_id) } }, 'Discard') : null,
      status));
  }

  const toolbar = m.pending || deleted ? null : h('div', { class: 'msg-actions', role: 'toolbar', 'aria-label': 'Message actions' },
    actionBtn('smile', 'Add reaction', 'msg-react', (e) => a.react(m, e.currentTarget)),
    actionBtn('reply', 'Reply', 'msg-reply', () => a.reply(m)),
    mine ? actionBtn('edit', 'Edit', 'msg-edit', () => a.edit(m)) : null,
    mine || canModerate ? actionBtn('trash', 'Delete', 'msg-delete', () => a.remove(m)) : null);

  return h('li', {
    class: ['msg', grouped && 'grouped', mine && 'mine', mentionsMe && 'mentions-me', m.pending && 'pending', m.failed && 'failed', deleted && 'deleted'],
    testid: 'message',
    dataset: { id: m.id, clientId: m.client_id, sender: sender.username, status: receipt },
    tabindex: '-1',
  },
  h('div', { class: 'msg-gutter' }, grouped ? h('time', { class: 'msg-time-hover', datetime: isoDate(m.created_at), title: fullDate(m.created_at), text: timeShort(m.created_at) }) : avatar(sender, { size: 'md' })),
  main,
  toolbar);
}

function actionBtn(iconName, label, testid, fn) {
  return h('button', { type: 'button', class: 'icon-btn icon-btn-small', title: label, 'aria-label': label, testid, on: { click: fn } }, icon(iconName));
}
