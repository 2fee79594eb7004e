// Display of message attachments. Attachment URLs need the Bearer token, so
// bytes are fetched with it and shown through blob: URLs (allowed by the CSP).
// Uploading (composer button, drag and drop, paste) plugs in via hooks.js.

import { h } from '../dom.js';
import * as api from '../api.js';
import { formatBytes } from '../format.js';
import { icon, showToast } from './common.js';

const IMAGE_RE = /^image\/(png|jpeg|gif|webp|avif|bmp)$/;
const blobCache = new Map(); // url -> Promise<blob url>

function blobFor(url) {
  if (!blobCache.has(url)) {
    const p = api.blobUrl(url).catch((e) => { blobCache.delete(url); throw e; });
    blobCache.set(url, p);
  }
  return blobCache.get(url);
}

function attUrl(a) { return a.url || `${api.BASE}/attachments/${a.id}`; }

export function renderAttachments(list) {
  return h('div', { class: 'attachments', testid: 'attachments' }, list.map(renderOne));
}

function renderOne(a) {
  const url = attUrl(a);
  if (IMAGE_RE.test(a.mime || '')) {
    const img = h('img', { class: 'att-image', alt: a.name || 'image', loading: 'lazy', testid: 'attachment-image' });
    if (a.width && a.height) { img.width = Math.min(a.width, 320); img.height = Math.round(img.width * a.height / a.width); }
    blobFor(`${url}${url.includes('?') ? '&' : '?'}thumb=1`).then((u) => { img.src = u; }, () => { img.alt = `${a.name} (preview unavailable)`; });
    return h('button', { type: 'button', class: 'att att-image-btn', title: `Open ${a.name}`, on: { click: () => openBlob(a) } }, img);
  }
  if (/^(audio|video)\//.test(a.mime || '')) {
    const media = h(a.mime.startsWith('audio/') ? 'audio' : 'video', { class: 'att-media', controls: true, preload: 'none', testid: 'attachment-media' });
    const load = h('button', { type: 'button', class: 'btn btn-small', on: { click: async () => {
      load.disabled = true;
      try { media.src = await blobFor(url); load.remove(); media.play().catch(() => {}); } catch (e) { showToast(e.message, 'error'); load.disabled = false; }
    } } }, `Load ${a.mime.startsWith('audio/') ? 'audio' : 'video'}`);
    return h('div', { class: 'att att-media-box' }, h('div', { class: 'att-name', text: `${a.name} · ${formatBytes(a.size)}` }), media, load);
  }
  return h('button', { type: 'button', class: 'att att-file', testid: 'attachment-file', title: `Download ${a.name}`, on: { click: () => download(a) } },
    icon('file'), h('span', { class: 'att-file-text' }, h('span', { class: 'att-name', text: a.name }), h('span', { class: 'muted', text: formatBytes(a.size) })));
}

async function openBlob(a) {
  try {
    const u = await blobFor(attUrl(a));
    window.open(u, '_blank', 'noopener');
  } catch (e) { showToast(e.message, 'error'); }
}

async function download(a) {
  try {
    const u = await blobFor(attUrl(a));
    const link = h('a', { href: u, download: a.name || 'download' });
    document.body.appendChild(link);
    link.click();
    link.remove();
  } catch (e) { showToast(e.message, 'error'); }
}
