// First-run setup, login and registration screens.

import { h, replaceChildren } from '../dom.js';
import * as api from '../api.js';
import { showFormError } from './common.js';

const USERNAME_PATTERN = '[A-Za-z0-9_.\\-]{3,32}';

function field(label, input, hint) {
  const id = input.id || (input.id = `f-${input.name}`);
  return h('div', { class: 'field' },
    h('label', { for: id, text: label }),
    input,
    hint ? h('small', { class: 'hint', id: `${id}-hint`, text: hint }) : null);
}

function input(name, attrs = {}) {
  return h('input', { name, id: `f-${name}`, ...attrs });
}

let brandName = 'lanchat';

function card(title, subtitle, form, footer) {
  return h('main', { class: 'auth', testid: 'auth-screen' },
    h('section', { class: 'auth-card', 'aria-labelledby': 'auth-title' },
      h('div', { class: 'brand' },
        h('img', { src: '/favicon.svg', alt: '', width: 40, height: 40 }),
        h('span', { text: brandName })),
      h('h1', { id: 'auth-title', text: title }),
      subtitle ? h('p', { class: 'muted', text: subtitle }) : null,
      form,
      footer ? h('p', { class: 'auth-footer' }, footer) : null,
      window.isSecureContext ? null
        : h('p', { class: 'auth-secure', testid: 'auth-trust' },
          'This connection is not encrypted. ',
          h('a', { href: '/trust', testid: 'trust-link' }, 'Turn on the secure connection'))));
}

function submitting(form, busy) {
  const btn = form.querySelector('button[type="submit"]');
  if (btn) { btn.disabled = busy; btn.setAttribute('aria-busy', busy ? 'true' : 'false'); }
}

/**
 * renderAuth(root, mode, { onAuthed(resp), message })
 * mode: 'login' | 'register' | 'setup'
 */
export function renderAuth(root, mode, opts) {
  const { onAuthed, message, setupToken, serverName } = opts;
  const err = h('p', { class: 'form-error', role: 'alert', hidden: true, testid: 'auth-error' });
  const note = message ? h('p', { class: 'notice', role: 'status', text: message }) : null;

  async function run(form, fn) {
    showFormError(form, null);
    submitting(form, true);
    try {
      const resp = await fn(Object.fromEntries(new FormData(form)));
      api.setSession(resp);
      onAuthed(resp);
    } catch (e) {
      showFormError(form, e);
      submitting(form, false);
    }
  }

  brandName = serverName || 'lanchat';
  let view;
  if (mode === 'setup') {
    const form = h('form', { class: 'stack', testid: 'setup-form', novalidate: false, on: { submit: (e) => { e.preventDefault(); run(form, (v) => api.publicPost('/setup', { setup_token: v.setup_token.trim(), username: v.username.trim(), password: v.password })); } } },
      note,
      field('Setup token', input('setup_token', { required: true, autocomplete: 'off', spellcheck: 'false', value: setupToken || '', 'data-autofocus': !setupToken, testid: 'setup-token' }), 'Printed on the server console (and in its log) at start-up.'),
      field('Admin username', input('username', { required: true, autocomplete: 'username', pattern: USERNAME_PATTERN, autocapitalize: 'none', spellcheck: 'false', 'data-autofocus': !!setupToken, testid: 'setup-username' }), '3–32 characters: letters, digits, _ . -'),
      field('Password', input('password', { type: 'password', required: true, minlength: 8, autocomplete: 'new-password', testid: 'setup-password' }), 'At least 8 characters.'),
      err,
      h('button', { type: 'submit', class: 'btn btn-primary btn-block', testid: 'setup-submit' }, 'Create admin account'));
    view = card('Welcome to lanchat', 'This server has no administrator yet. Create the first admin account.', form,
      ['Not the administrator? ', h('a', { href: '#/login', testid: 'goto-login' }, 'Sign in'), ' or ', h('a', { href: '#/register', testid: 'goto-register' }, 'create an account')]);
  } else if (mode === 'register') {
    const form = h('form', { class: 'stack', testid: 'register-form', on: { submit: (e) => { e.preventDefault(); run(form, (v) => {
      const body = { username: v.username.trim(), password: v.password };
      if (v.display_name.trim()) body.display_name = v.display_name.trim();
      if (v.invite.trim()) body.invite = v.invite.trim();
      return api.publicPost('/auth/register', body).catch((e) => {
        if (e.status === 403 && !e.field && e.code !== 'validation_failed') e.message = body.invite ? 'That invite code is not valid (or has been used up).' : 'Registration on this server needs an invite code, or is closed. Ask an administrator.';
        throw e;
      });
    }); } } },
      note,
      field('Username', input('username', { required: true, autocomplete: 'username', pattern: USERNAME_PATTERN, autocapitalize: 'none', spellcheck: 'false', 'data-autofocus': true, testid: 'register-username' }), '3–32 characters: letters, digits, _ . -'),
      field('Display name (optional)', input('display_name', { maxlength: 64, autocomplete: 'name', testid: 'register-display-name' })),
      field('Password', input('password', { type: 'password', required: true, minlength: 8, autocomplete: 'new-password', testid: 'register-password' }), 'At least 8 characters.'),
      field('Invite code', input('invite', { autocomplete: 'off', spellcheck: 'false', testid: 'register-invite' }), 'Only needed when this server requires an invitation.'),
      err,
      h('button', { type: 'submit', class: 'btn btn-primary btn-block', testid: 'register-submit' }, 'Create account'));
    view = card('Create your account', null, form,
      ['Already have an account? ', h('a', { href: '#/login', testid: 'goto-login' }, 'Sign in')]);
  } else {
    const form = h('form', { class: 'stack', testid: 'login-form', on: { submit: (e) => { e.preventDefault(); run(form, (v) => api.publicPost('/auth/login', { username: v.username.trim(), password: v.password })); } } },
      note,
      field('Username', input('username', { required: true, autocomplete: 'username', autocapitalize: 'none', spellcheck: 'false', 'data-autofocus': true, testid: 'login-username' })),
      field('Password', input('password', { type: 'password', required: true, autocomplete: 'current-password', testid: 'login-password' })),
      err,
      h('button', { type: 'submit', class: 'btn btn-primary btn-block', testid: 'login-submit' }, 'Sign in'));
    view = card('Sign in', null, form,
      ['New here? ', h('a', { href: '#/register', testid: 'goto-register' }, 'Create an account')]);
  }
  replaceChildren(root, view);
  const auto = root.querySelector('[data-autofocus]');
  if (auto) auto.focus();
}
