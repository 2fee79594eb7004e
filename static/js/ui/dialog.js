// Modal dialogs on the native <dialog> element: top layer, focus handling,
// Escape closes (the 'cancel' event), a click on the backdrop closes.

import { h } from '../dom.js';
import { iconButton } from './common.js';

let seq = 0;

/**
 * openDialog({ title, testid, content: (api) => Node|Node[], className, onClose })
 * api = { close(), dialog }. Returns the same api.
 */
export function openDialog({ title, testid, content, className, onClose }) {
  const id = `dlg-title-${++seq}`;
  const returnFocus = document.activeElement;
  const body = h('div', { class: 'dlg-body' });
  const dialog = h('dialog', { class: ['dlg', className], 'aria-labelledby': id, testid },
    h('header', { class: 'dlg-head' },
      h('h2', { id, text: title }),
      iconButton('close', 'Close', { class: 'dlg-close', testid: 'dialog-close', on: { click: () => close() } })),
    body);
  const api = { dialog, close, body };
  let closed = false;
  function close() {
    if (closed) return;
    closed = true;
    if (dialog.open) dialog.close();
    dialog.remove();
    if (onClose) onClose();
    if (returnFocus && returnFocus.isConnected) returnFocus.focus({ preventScroll: true });
  }
  dialog.addEventListener('close', close);
  dialog.addEventListener('mousedown', (e) => {
    if (e.target !== dialog) return;
    const r = dialog.getBoundingClientRect();
    const inside = e.clientX >= r.left && e.clientX <= r.right && e.clientY >= r.top && e.clientY <= r.bottom;
    if (!inside) close();
  });
  const c = content(api);
  (Array.isArray(c) ? c : [c]).forEach((n) => n && body.appendChild(n));
  document.body.appendChild(dialog);
  dialog.showModal();
  const auto = dialog.querySelector('[autofocus]');
  if (auto) auto.focus();
  return api;
}

/** Promise<boolean> confirmation. */
export function confirmDialog(title, text, okLabel = 'OK', { danger = false } = {}) {
  return new Promise((resolve) => {
    let result = false;
    openDialog({
      title,
      testid: 'confirm-dialog',
      className: 'dlg-small',
      onClose: () => resolve(result),
      content: ({ close }) => h('form', { method: 'dialog', class: 'stack', on: { submit: (e) => { e.preventDefault(); result = true; close(); } } },
        h('p', { text }),
        h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'btn', on: { click: () => close() } }, 'Cancel'),
          h('button', { type: 'submit', class: ['btn', danger ? 'btn-danger' : 'btn-primary'], testid: 'confirm-ok', autofocus: true }, okLabel))),
    });
  });
}
