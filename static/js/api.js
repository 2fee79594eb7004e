// REST client for /api/v1 with access-token refresh.
//
// Tokens live in localStorage ("lanchat.auth") so a reload keeps the session.
// Refresh tokens rotate and a reused one revokes the whole session, so refreshing
// is single-flight inside a tab and serialised across tabs (Web Locks where
// available, otherwise a short-lived localStorage lock), and a tab adopts tokens
// that another tab has just rotated instead of presenting the old one again.

export const BASE = '/api/v1';
const AUTH_KEY = 'lanchat.auth';
const LOCK_KEY = 'lanchat.refresh-lock';
const REFRESH_MARGIN_MS = 60_000; // refresh this long before the access token expires

export class ApiError extends Error {
  constructor(status, code, message, field, retryAfter) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || 'http_' + status;
    this.field = field || null;
    this.retryAfter = retryAfter || null;
  }
}

let tokens = readStored();
let refreshing = null;
let refreshTimer = null;
const authLostHandlers = new Set();
const tokenHandlers = new Set();

function readStored() {
  try {
    const t = JSON.parse(localStorage.getItem(AUTH_KEY) || 'null');
    return t && t.access_token && t.refresh_token ? t : null;
  } catch { return null; }
}

/** Expiry in ms: from expires_in, falling back to the JWT's own `exp` claim. */
function expiryOf(accessToken, expiresIn) {
  if (typeof expiresIn === 'number' && expiresIn > 0) return Date.now() + expiresIn * 1000;
  try {
    const part = accessToken.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part));
    if (claims.exp) return claims.exp * 1000;
  } catch { /* not a JWT we can read */ }
  return Date.now() + 5 * 60_000;
}

export function hasSession() { return !!tokens; }
export function accessToken() { return tokens ? tokens.access_token : null; }
export function sessionUserId() { return tokens ? tokens.user_id : null; }

/** Store an auth response ({user, access_token, refresh_token, expires_in}). */
export function setSession(resp) {
  const expiresAt = expiryOf(resp.access_token, resp.expires_in);
  tokens = {
    access_token: resp.access_token,
    refresh_token: resp.refresh_token,
    expires_at: expiresAt,
    lifetime: Math.max(1_000, expiresAt - Date.now()),
    user_id: resp.user ? resp.user.id : (tokens && tokens.user_id),
  };
  localStorage.setItem(AUTH_KEY, JSON.stringify(tokens));
  scheduleRefresh();
  for (const fn of tokenHandlers) fn(tokens);
}

export function clearSession() {
  tokens = null;
  clearTimeout(refreshTimer);
  localStorage.removeItem(AUTH_KEY);
}

/** Called once the session is definitely gone (refresh refused, logout elsewhere). */
export function onAuthLost(fn) { authLostHandlers.add(fn); return () => authLostHandlers.delete(fn); }
export function onTokens(fn) { tokenHandlers.add(fn); return () => tokenHandlers.delete(fn); }

function authLost() {
  const had = !!tokens;
  clearSession();
  if (had) for (const fn of authLostHandlers) fn();
}

// Another tab rotated or dropped the tokens.
window.addEventListener('storage', (e) => {
  if (e.key !== AUTH_KEY) return;
  const t = readStored();
  if (!t) { if (tokens) { tokens = null; clearTimeout(refreshTimer); for (const fn of authLostHandlers) fn(); } return; }
  tokens = t;
  scheduleRefresh();
  for (const fn of tokenHandlers) fn(tokens);
});

export function scheduleRefresh() {
  clearTimeout(refreshTimer);
  if (!tokens) return;
  const lifetime = tokens.expires_at - Date.now();
  const wait = Math.max(5_000, lifetime - Math.min(REFRESH_MARGIN_MS, lifetime / 5));
  refreshTimer = setTimeout(() => { refresh().catch(() => scheduleRetry()); }, wait);
}

function scheduleRetry() {
  clearTimeout(refreshTimer);
  if (tokens) refreshTimer = setTimeout(() => { refresh().catch(() => scheduleRetry()); }, 15_000);
}

/** Refresh unless the access token stays valid for at least `minValidityMs`. */
export async function ensureFresh(minValidityMs = 30_000) {
  if (!tokens) throw new ApiError(401, 'unauthorized', 'Not signed in');
  // Short-lived tokens (tests, strict configs): never ask for more than a quarter of their life.
  const want = Math.min(minValidityMs, (tokens.lifetime || Infinity) / 4);
  if (tokens.expires_at - Date.now() > want) return;
  await refresh();
}

/** Rotate the token pair. Single-flight per tab, serialised across tabs. */
export function refresh() {
  if (!refreshing) {
    const staleRefresh = tokens && tokens.refresh_token;
    refreshing = withCrossTabLock(() => doRefresh(staleRefresh)).finally(() => { refreshing = null; });
  }
  return refreshing;
}

async function doRefresh(staleRefresh) {
  // Another tab may have rotated while we waited for the lock.
  const stored = readStored();
  if (!stored) { authLost(); throw new ApiError(401, 'unauthorized', 'Signed out'); }
  if (stored.refresh_token !== staleRefresh && stored.expires_at - Date.now() > Math.min(30_000, (stored.lifetime || Infinity) / 4)) {
    tokens = stored;
    scheduleRefresh();
    for (const fn of tokenHandlers) fn(tokens);
    return;
  }
  let res;
  try {
    res = await fetch(BASE + '/auth/refresh', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ refresh_token: stored.refresh_token }),
    });
  } catch (e) {
    throw new ApiError(0, 'network', 'Server unreachable');
  }
  if (res.status === 401 || res.status === 403) { authLost(); throw await toError(res); }
  if (!res.ok) throw await toError(res);
  setSession(await res.json());
}

async function withCrossTabLock(fn) {
  if (navigator.locks && navigator.locks.request) {
    return navigator.locks.request('lanchat-refresh', fn);
  }
  // Fallback for insecure contexts (plain http on the LAN has no Web Locks).
  const me = Math.random().toString(36).slice(2);
  for (let i = 0; i < 40; i++) {
    const cur = JSON.parse(localStorage.getItem(LOCK_KEY) || 'null');
    if (!cur || Date.now() - cur.at > 10_000) {
      localStorage.setItem(LOCK_KEY, JSON.stringify({ id: me, at: Date.now() }));
      await sleep(30);
      const again = JSON.parse(localStorage.getItem(LOCK_KEY) || 'null');
      if (again && again.id === me) break;
    }
    await sleep(250);
  }
  try { return await fn(); } finally {
    const cur = JSON.parse(localStorage.getItem(LOCK_KEY) || 'null');
    if (cur && cur.id === me) localStorage.removeItem(LOCK_KEY);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function toError(res) {
  let code, message, field;
  try {
    const body = await res.json();
    if (body && body.error) ({ code, message, field } = body.error);
  } catch { /* not JSON */ }
  const ra = res.headers.get('Retry-After');
  return new ApiError(res.status, code, message || res.statusText, field, ra ? Number(ra) : null);
}

/**
 * request('GET', '/conversations') → parsed JSON (null for 204).
 * opts: { auth: true, query: {}, raw: false (return the Response) }
 */
export async function request(method, path, body, opts = {}) {
  const useAuth = opts.auth !== false;
  if (useAuth) {
    if (!tokens) throw new ApiError(401, 'unauthorized', 'Not signed in');
    try { await ensureFresh(10_000); } catch (e) { if (e.status === 401) throw e; /* offline: try anyway */ }
  }
  let url = BASE + path;
  if (opts.query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(opts.query)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
    const s = q.toString();
    if (s) url += (url.includes('?') ? '&' : '?') + s;
  }
  const headers = {};
  if (body !== undefined && !(body instanceof FormData)) headers['Content-Type'] = 'application/json';
  if (useAuth) headers.Authorization = 'Bearer ' + tokens.access_token;
  let res;
  try {
    res = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : (body instanceof FormData ? body : JSON.stringify(body)),
    });
  } catch (e) {
    throw new ApiError(0, 'network', 'Cannot reach the server');
  }
  if (res.status === 401 && useAuth && !opts._retried) {
    await refresh(); // throws (and signs out) when the session is gone
    return request(method, path, body, { ...opts, _retried: true });
  }
  if (!res.ok) throw await toError(res);
  if (opts.raw) return res;
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path, query) => request('GET', path, undefined, { query });
export const post = (path, body) => request('POST', path, body === undefined ? {} : body);
export const patch = (path, body) => request('PATCH', path, body);
export const put = (path) => request('PUT', path);
export const del = (path) => request('DELETE', path);
export const publicPost = (path, body) => request('POST', path, body, { auth: false });
export const publicGet = (path) => request('GET', path, undefined, { auth: false });

/** Fetch a protected resource (e.g. an attachment) as a blob: URL for <img>/<video>. */
export async function blobUrl(url) {
  const path = url.startsWith(BASE) ? url.slice(BASE.length) : url;
  const res = await request('GET', path, undefined, { raw: true });
  return URL.createObjectURL(await res.blob());
}

/**
 * Multipart upload with progress (hook for attachments, issue 6).
 * Resolves with the Attachment object.
 */
export async function upload(file, onProgress) {
  await ensureFresh(30_000);
  const attempt = () => new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', BASE + '/attachments');
    xhr.setRequestHeader('Authorization', 'Bearer ' + tokens.access_token);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total); };
    xhr.onerror = () => reject(new ApiError(0, 'network', 'Upload failed'));
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* ignore */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else {
        const e = body && body.error ? body.error : {};
        reject(new ApiError(xhr.status, e.code, e.message || 'Upload failed', e.field));
      }
    };
    const fd = new FormData();
    fd.append('file', file, file.name);
    xhr.send(fd);
  });
  try { return await attempt(); } catch (e) {
    if (e.status === 401) { await refresh(); return attempt(); }
    throw e;
  }
}
