// The trust page: shows the local CA and the steps for this device, and checks
// whether the HTTPS address is trusted yet (then goes there).

const $ = (sel) => document.querySelector(sel);
const byTest = (id) => document.querySelector(`[data-testid="${id}"]`);

/** The secure address of this same server: HTTPS is served on the same port. */
function httpsBase() {
  const port = location.port || (location.protocol === 'https:' ? '443' : '80');
  const host = location.hostname.includes(':') ? `[${location.hostname}]` : location.hostname;
  return `https://${host}${port === '443' ? '' : `:${port}`}`;
}

function platform() {
  const ua = navigator.userAgent;
  if (/iPhone|iPad|iPod/.test(ua) || (/Macintosh/.test(ua) && navigator.maxTouchPoints > 1)) return ['ios', 'iPhone or iPad'];
  if (/Android/.test(ua)) return ['android', 'Android'];
  if (/CrOS/.test(ua)) return ['chromeos', 'ChromeOS'];
  if (/Windows/.test(ua)) return ['windows', 'Windows'];
  if (/Macintosh|Mac OS X/.test(ua)) return ['mac', 'macOS'];
  if (/Linux/.test(ua)) return ['linux', 'Linux'];
  return [null, null];
}

function showPlatform() {
  const [key, label] = platform();
  const firefox = /Firefox\//.test(navigator.userAgent) && key !== 'ios' && key !== 'android';
  const open = new Set([key, firefox ? 'firefox' : null]);
  for (const d of document.querySelectorAll('details[data-platform]')) {
    if (open.has(d.dataset.platform)) {
      d.open = true;
      d.parentElement.insertBefore(d, $('#detected').nextSibling);
    }
  }
  $('#detected').textContent = label
    ? `This looks like ${label}${firefox ? ' with Firefox' : ''}: its steps are open below. The others are there for your other devices.`
    : 'Pick your device below.';
}

/** Whether the HTTPS address answers with a certificate this browser trusts. */
async function httpsTrusted() {
  if (location.protocol === 'https:') return true;
  try {
    // An opaque answer is enough: an untrusted certificate makes fetch fail.
    await fetch(`${httpsBase()}/healthz`, { mode: 'no-cors', cache: 'no-store' });
    return true;
  } catch {
    return false;
  }
}

function say(el, text, ok) {
  el.hidden = false;
  el.textContent = text;
  el.classList.toggle('ok', Boolean(ok));
}

async function check({ move }) {
  const result = byTest('trust-check-result');
  const button = byTest('trust-check');
  button.disabled = true;
  say(result, 'Checking…');
  const trusted = await httpsTrusted();
  button.disabled = false;
  if (trusted && location.protocol === 'https:') {
    say(result, 'This connection is secure.', true);
  } else if (trusted) {
    say(result, `Trusted. Taking you to ${httpsBase()}…`, true);
    if (move) location.assign(`${httpsBase()}/`);
  } else {
    say(result, 'Not trusted on this device yet. Follow the steps above (restart the browser after installing), then check again.');
  }
  return trusted;
}

async function load() {
  showPlatform();
  byTest('trust-https-url').textContent = `${httpsBase()}/`;
  byTest('trust-check').addEventListener('click', () => check({ move: true }));
  const status = byTest('trust-status');
  let info = null;
  try {
    const res = await fetch('/api/v1/tls', { cache: 'no-store' });
    if (res.ok) info = await res.json();
  } catch { /* shown below */ }
  if (!info) {
    say(status, 'The server did not answer. Reload this page to try again.');
    return;
  }
  if (info.mode === 'off') {
    say(status, 'This server does not offer a secure connection.');
    $('#get').hidden = true; $('#steps').hidden = true; $('#check-section').hidden = true;
    $('#none').hidden = false;
    $('#none-text').textContent = 'Its administrator can turn HTTPS on (tls.mode = "auto" in the configuration).';
    return;
  }
  if (info.ca) {
    byTest('trust-fingerprint').textContent = info.ca.fingerprint_sha256;
    byTest('trust-ca-name').textContent = info.ca.name;
  } else {
    // Mode "files": the certificate comes from the organisation's own authority.
    $('#get').hidden = true;
    $('#none').hidden = false;
    $('#none-text').textContent = 'This server uses a certificate from your organisation. If your device does not trust it, ask your IT department.';
  }
  if (location.protocol === 'https:') {
    say(status, 'You are connected securely. Nothing to do on this device.', true);
  } else if (await httpsTrusted()) {
    say(status, 'This device already trusts the server: use the secure address.', true);
  } else {
    say(status, 'This connection is not encrypted. Three steps, once per device:');
  }
}

load();
