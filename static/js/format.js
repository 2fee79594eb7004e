// Formatting helpers: names, initials, colours, dates. Pure functions.

export function displayName(user) {
  if (!user) return 'Unknown';
  return (user.display_name && user.display_name.trim()) || user.username || `user ${user.id}`;
}

export function initials(name) {
  const words = String(name || '?').trim().split(/[\s._-]+/).filter(Boolean);
  const chars = words.length >= 2 ? [words[0], words[words.length - 1]].map(firstChar) : [firstChar(words[0] || '?'), ''];
  return (chars.join('') || '?').toUpperCase();
}

function firstChar(w) { return Array.from(w)[0] || ''; }

/** Stable hue (0–359) for a user or conversation id. */
export function hueFor(id) {
  // golden angle: consecutive ids get well separated colours
  return Math.round(((Number(id) || 0) * 137.508) % 360);
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });
const shortDayFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
const weekdayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'short' });
const rtf = typeof Intl.RelativeTimeFormat === 'function' ? new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' }) : null;

export const timeShort = (ms) => timeFmt.format(new Date(ms));
export const fullDate = (ms) => fullFmt.format(new Date(ms));
export const isoDate = (ms) => new Date(ms).toISOString();

export function dayKey(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

function startOfDay(ms) { const d = new Date(ms); d.setHours(0, 0, 0, 0); return d.getTime(); }

export function dayLabel(ms) {
  const today = startOfDay(Date.now());
  const day = startOfDay(ms);
  if (day === today) return 'Today';
  if (day === startOfDay(today - 86_400_000 / 2)) return 'Yesterday';
  return dayFmt.format(new Date(ms));
}

/** Compact time for the sidebar: 14:05, Mon, 3 Mar. */
export function listTime(ms) {
  if (!ms) return '';
  const today = startOfDay(Date.now());
  if (ms >= today) return timeShort(ms);
  if (ms >= today - 6 * 86_400_000) return weekdayFmt.format(new Date(ms));
  return shortDayFmt.format(new Date(ms));
}

export function relative(ms) {
  if (!ms) return '';
  const diff = ms - Date.now();
  const abs = Math.abs(diff);
  if (!rtf) return fullDate(ms);
  if (abs < 60_000) return 'just now';
  if (abs < 3_600_000) return rtf.format(Math.round(diff / 60_000), 'minute');
  if (abs < 86_400_000) return rtf.format(Math.round(diff / 3_600_000), 'hour');
  return rtf.format(Math.round(diff / 86_400_000), 'day');
}

export function presenceText(user) {
  if (!user) return '';
  if (user.online) return 'online';
  if (user.last_seen_at) return 'last seen ' + relative(user.last_seen_at);
  return 'offline';
}

export function snippet(text, n = 80) {
  const s = String(text || '').replace(/\s+/g, ' ').trim();
  return s.length > n ? s.slice(0, n - 1) + '…' : s;
}

export function formatBytes(n) {
  if (!(n >= 0)) return '';
  const units = ['B', 'KB', 'MB', 'GB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n < 10 && i ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

/** RFC 4122 v4. crypto.randomUUID only exists in secure contexts; plain http on the LAN is not one. */
export function uuid() {
  if (window.isSecureContext && crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export const COMMON_EMOJI = ['👍', '❤️', '😂', '😮', '😢', '🎉', '🙏', '👀', '🔥', '✅', '👎', '😄', '🤔', '👏', '🚀', '💯'];
