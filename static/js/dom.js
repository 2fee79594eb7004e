// Tiny DOM helpers. Nothing here ever parses HTML: text always goes through
// textContent / text nodes, attributes through setAttribute / properties.

const PROPS = new Set(['value', 'checked', 'disabled', 'hidden', 'selected', 'readOnly', 'required', 'multiple', 'open']);

/**
 * h('button', { class: 'x', testid: 'send', on: { click: fn } }, 'Send')
 * attrs: class, text, testid, dataset {}, style {}, on {}, ref(fn), boolean props,
 * anything else -> setAttribute (null/undefined/false skipped, true -> "").
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = Array.isArray(v) ? v.filter(Boolean).join(' ') : v;
      else if (k === 'text') el.textContent = String(v);
      else if (k === 'testid') el.dataset.testid = v;
      else if (k === 'dataset') for (const [dk, dv] of Object.entries(v)) { if (dv !== undefined && dv !== null) el.dataset[dk] = String(dv); }
      else if (k === 'style') for (const [sk, sv] of Object.entries(v)) el.style.setProperty(sk, sv);
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
      else if (k === 'ref') v(el);
      else if (PROPS.has(k)) el[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false || c === true) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replaceChildren(el, ...children) {
  clear(el);
  return append(el, children);
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/**
 * Keyed reconciliation of a container's children.
 * items: [{ key, sig, build: () => Element }]. An element is reused when its key
 * and signature are unchanged; otherwise rebuilt. Elements are kept in order.
 */
export function reconcile(container, items) {
  const old = new Map();
  for (const child of Array.from(container.children)) {
    if (child.__key !== undefined) old.set(child.__key, child);
  }
  let cursor = container.firstElementChild;
  const keep = new Set();
  for (const item of items) {
    let el = old.get(item.key);
    if (!el || el.__sig !== item.sig) {
      const fresh = item.build();
      fresh.__key = item.key;
      fresh.__sig = item.sig;
      if (el) {
        const hadFocus = el.contains(document.activeElement);
        el.replaceWith(fresh);
        if (cursor === el) cursor = fresh;
        if (hadFocus) focusFirst(fresh);
      }
      el = fresh;
    }
    keep.add(el);
    if (el !== cursor) container.insertBefore(el, cursor);
    else cursor = cursor.nextElementSibling;
  }
  for (const child of Array.from(container.children)) {
    if (!keep.has(child)) child.remove();
  }
}

function focusFirst(el) {
  const f = el.matches('[tabindex],button,a,input,textarea,select') ? el
    : el.querySelector('[tabindex],button,a,input,textarea,select');
  if (f) f.focus({ preventScroll: true });
}

/** Visually hidden text for screen readers. */
export const sr = (text) => h('span', { class: 'sr-only', text });

/** Run a re-render of `container` and put focus back on the element with the same data-testid. */
export function preserveFocus(container, render) {
  const active = document.activeElement;
  const id = active && container.contains(active) && active.dataset ? active.dataset.testid : null;
  render();
  if (id) {
    const again = container.querySelector(`[data-testid="${CSS.escape(id)}"]`);
    if (again) again.focus({ preventScroll: true });
  }
}
