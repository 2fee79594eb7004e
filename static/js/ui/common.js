// Shared view pieces: icons, avatars, presence dots, toasts.

import { h } from '../dom.js';
import { initials, hueFor, displayName } from '../format.js';

const SVG = 'http://www.w3.org/2000/svg';
const PATHS = {
  plus: 'M12 5v14M5 12h14',
  hash: 'M5 9h14M4 15h14M10 3 8 21M16 3l-2 18',
  users: 'M16 21v-2a4 4 0 0 0-4-4H6a4 4 0 0 0-4 4v2M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8M22 21v-2a4 4 0 0 0-3-3.87M16 3.13a4 4 0 0 1 0 7.75',
  menu: 'M3 6h18M3 12h18M3 18h18',
  back: 'M15 18l-6-6 6-6',
  settings: 'M12 15a3 3 0 1 0 0-6 3 3 0 0 0 0 6zM19.4 15a1.65 1.65 0 0 0 .33 1.82l.06.06a2 2 0 1 1-2.83 2.83l-.06-.06a1.65 1.65 0 0 0-1.82-.33 1.65 1.65 0 0 0-1 1.51V21a2 2 0 1 1-4 0v-.09A1.65 1.65 0 0 0 9 19.4a1.65 1.65 0 0 0-1.82.33l-.06.06a2 2 0 1 1-2.83-2.83l.06-.06A1.65 1.65 0 0 0 4.68 15a1.65 1.65 0 0 0-1.51-1H3a2 2 0 1 1 0-4h.09A1.65 1.65 0 0 0 4.6 9a1.65 1.65 0 0 0-.33-1.82l-.06-.06a2 2 0 1 1 2.83-2.83l.06.06A1.65 1.65 0 0 0 9 4.68a1.65 1.65 0 0 0 1-1.51V3a2 2 0 1 1 4 0v.09a1.65 1.65 0 0 0 1 1.51 1.65 1.65 0 0 0 1.82-.33l.06-.06a2 2 0 1 1 2.83 2.83l-.06.06A1.65 1.65 0 0 0 19.4 9a1.65 1.65 0 0 0 1.51 1H21a2 2 0 1 1 0 4h-.09a1.65 1.65 0 0 0-1.51 1z',
  send: 'M22 2 11 13M22 2l-7 20-4-9-9-4 20-7z',
  close: 'M18 6 6 18M6 6l12 12',
  smile: 'M12 22a10 10 0 1 0 0-20 10 10 0 0 0 0 20zM8 14s1.5 2 4 2 4-2 4-2M9 9h.01M15 9h.01',
  reply: 'M9 17l-5-5 5-5M20 18v-2a4 4 0 0 0-4-4H4',
  edit: 'M12 20h9M16.5 3.5a2.12 2.12 0 0 1 3 3L7 19l-4 1 1-4z',
  trash: 'M3 6h18M8 6V4a2 2 0 0 1 2-2h4a2 2 0 0 1 2 2v2m3 0v14a2 2 0 0 1-2 2H7a2 2 0 0 1-2-2V6',
  bell: 'M18 8a6 6 0 0 0-12 0c0 7-3 9-3 9h18s-3-2-3-9M13.73 21a2 2 0 0 1-3.46 0',
  belloff: 'M13.73 21a2 2 0 0 1-3.46 0M18.63 13A17.9 17.9 0 0 1 18 8M6.26 6.26A5.9 5.9 0 0 0 6 8c0 7-3 9-3 9h14M18 8a6 6 0 0 0-9.33-5M1 1l22 22',
  search: 'M11 19a8 8 0 1 0 0-16 8 8 0 0 0 0 16zM21 21l-4.35-4.35',
  down: 'M12 5v14M19 12l-7 7-7-7',
  chat: 'M21 15a2 2 0 0 1-2 2H7l-4 4V5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2z',
  paperclip: 'M21.44 11.05l-9.19 9.19a6 6 0 0 1-8.49-8.49l9.19-9.19a4 4 0 0 1 5.66 5.66l-9.2 9.19a2 2 0 0 1-2.83-2.83l8.49-8.48',
  file: 'M14 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V8zM14 2v6h6',
  shield: 'M12 22s8-4 8-10V5l-8-3-8 3v7c0 6 8 10 8 10z',
};

export function icon(name, label) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const p = document.createElementNS(SVG, 'path');
  p.setAttribute('d', PATHS[name] || PATHS.chat);
  svg.appendChild(p);
  if (!label) return svg;
  return h('span', { class: 'icon-wrap' }, svg, h('span', { class: 'sr-only', text: label }));
}

/** Icon-only button with an accessible name and tooltip. */
export function iconButton(name, label, attrs = {}) {
  const { class: extra, ...rest } = attrs;
  return h('button', { type: 'button', title: label, 'aria-label': label, ...rest, class: ['icon-btn', extra] }, icon(name));
}

export function avatar(user, { size = 'md', presence = false } = {}) {
  const name = displayName(user);
  const el = h('span', { class: ['avatar', `avatar-${size}`], 'aria-hidden': 'true', style: { '--hue': String(hueFor(user && user.id)) } },
    initials(name));
  if (presence) el.appendChild(presenceDot(user));
  return el;
}

export function convAvatar(kind, title, id, { size = 'md' } = {}) {
  const text = kind === 'channel' ? '#' : initials(title);
  return h('span', { class: ['avatar', `avatar-${size}`, `avatar-${kind}`], 'aria-hidden': 'true', style: { '--hue': String(hueFor(id)) } }, text);
}

export function presenceDot(user) {
  const online = !!(user && user.online);
  return h('span', { class: ['presence', online ? 'online' : 'offline'], testid: 'presence-dot', dataset: { online: online ? '1' : '0' } });
}

// ---------------------------------------------------------------- toasts

export function showToast(text, kind = 'info', ms = 4000) {
  const box = document.getElementById('toasts');
  if (!box) return;
  const t = h('div', { class: ['toast', `toast-${kind}`], testid: 'toast' }, text);
  box.appendChild(t);
  setTimeout(() => t.remove(), ms);
}

/** Field-level + form-level error display for ApiError. */
export function showFormError(form, err) {
  for (const el of form.querySelectorAll('[aria-invalid="true"]')) el.removeAttribute('aria-invalid');
  const box = form.querySelector('.form-error');
  if (err && err.field) {
    const input = form.querySelector(`[name="${CSS.escape(err.field)}"]`);
    if (input) { input.setAttribute('aria-invalid', 'true'); input.focus(); }
  }
  if (box) {
    box.textContent = err ? errorText(err) : '';
    box.hidden = !err;
  }
}

export function errorText(err) {
  if (!err) return '';
  if (err.code === 'network') return 'Cannot reach the server. Check the connection and try again.';
  if (err.code === 'rate_limited') return `Too many attempts. Try again${err.retryAfter ? ` in ${err.retryAfter} s` : ' later'}.`;
  return err.message || 'Something went wrong.';
}
