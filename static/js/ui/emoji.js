// Small emoji picker popover for reactions.

import { h } from '../dom.js';
import { COMMON_EMOJI } from '../format.js';

let current = null;

export function closeEmojiPicker() {
  if (current) current();
}

export function openEmojiPicker(anchor, onPick) {
  closeEmojiPicker();
  const buttons = COMMON_EMOJI.map((e) => h('button', {
    type: 'button', class: 'emoji-btn', 'aria-label': `React with ${e}`, title: e, testid: 'emoji-option', dataset: { emoji: e },
    on: { click: () => { close(); onPick(e); } },
  }, e));
  const pop = h('div', { class: 'emoji-picker', role: 'dialog', 'aria-label': 'Pick a reaction', testid: 'emoji-picker' }, buttons);
  document.body.appendChild(pop);
  const r = anchor.getBoundingClientRect();
  const pw = pop.offsetWidth, ph = pop.offsetHeight;
  let top = r.top - ph - 6;
  if (top < 8) top = r.bottom + 6;
  let left = Math.min(window.innerWidth - pw - 8, Math.max(8, r.right - pw));
  pop.style.top = `${Math.round(top)}px`;
  pop.style.left = `${Math.round(left)}px`;
  buttons[0].focus();

  const onKey = (e) => {
    if (e.key === 'Escape') { e.preventDefault(); e.stopPropagation(); close(); anchor.focus(); return; }
    const i = buttons.indexOf(document.activeElement);
    if (i < 0) return;
    const cols = 8;
    const move = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols }[e.key];
    if (move) { e.preventDefault(); buttons[(i + move + buttons.length) % buttons.length].focus(); }
    if (e.key === 'Tab') { close(); }
  };
  const onDown = (e) => { if (!pop.contains(e.target) && e.target !== anchor) close(); };
  document.addEventListener('keydown', onKey, true);
  document.addEventListener('mousedown', onDown, true);
  window.addEventListener('resize', closeEmojiPicker, { once: true });
  function close() {
    document.removeEventListener('keydown', onKey, true);
    document.removeEventListener('mousedown', onDown, true);
    pop.remove();
    current = null;
  }
  current = close;
}
