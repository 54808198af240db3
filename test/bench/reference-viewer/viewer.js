// The desktop viewer. Opened at /viewer/#session=ID&token=T&key=K (the API's viewerUrl).
//
// - The token opens one WebSocket to this controller's /websockify; the controller's proxy does the VNC password
//   authentication itself and offers noVNC the security type None, so this page never asks for a password.
// - The key is a session-lifetime secret: when the connection drops, POST /viewer/reconnect trades it for a fresh
//   token while the session is live, and answers 410 once it has ended ("This desktop session has ended.").
// - Secrets leave the address bar at once (history.replaceState); the session id and key stay in sessionStorage
//   (this tab only) so a reload can reconnect.
// - Everything shown to the user is set with textContent: a desktop name is server-controlled text (threat 7).
// - Every URL is relative to this page (/viewer/), so the controller also works under a reverse proxy's path prefix.
import RFB from '../novnc/core/rfb.js';

const STORAGE_KEY = 'vncdispatch.viewer';
/** Reconnect attempts before giving up and offering a button. */
const MAX_ATTEMPTS = 8;
/** A connection that stayed up this long resets the attempt count, so a flapping link still backs off. */
const STABLE_MS = 10_000;
const MAX_DELAY_MS = 30_000;

const statusEl = document.getElementById('status');
const retryEl = document.getElementById('retry');
const screenEl = document.getElementById('screen');

let rfb = null;
let attempts = 0;
let connectedAt = 0;
/** 'ended' or 'error': no more reconnects. */
let finished = false;
let retryTimer = 0;
let credentials = null;
/** Completed connections, published as #status[data-connections]: a counter tests and monitors can wait on, where a
 *  state like 'disconnected' may last only a few milliseconds. */
let connections = 0;

/** data-state is what tests and styles read: connecting | connected | disconnected | ended | error. */
function setState(state, text) {
  statusEl.dataset.state = state;
  statusEl.textContent = text;
}

function showNotice(text) {
  for (const old of screenEl.querySelectorAll('.notice')) old.remove();
  const p = document.createElement('p');
  p.className = 'notice';
  p.textContent = text;
  screenEl.append(p);
}

function finish(state, text) {
  finished = true;
  clearTimeout(retryTimer);
  retryEl.hidden = true;
  setState(state, text);
  showNotice(text);
  if (state === 'ended') sessionStorage.removeItem(STORAGE_KEY);
  if (rfb) {
    const old = rfb;
    rfb = null;
    old.disconnect();
  }
}

/** The API's websocketPath ('/websockify?token=…') is relative to the controller's root, one folder up from here. */
function websocketUrl(path) {
  const url = new URL(`..${path}`, location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

function connect(websocketPath) {
  setState('connecting', 'Connecting…');
  retryEl.hidden = true;
  let r;
  try {
    r = new RFB(screenEl, websocketUrl(websocketPath), { shared: true });
  } catch {
    // noVNC can throw while opening the socket (e.g. the browser refuses the URL): treat it like a dropped connection.
    scheduleReconnect();
    return;
  }
  rfb = r;
  r.scaleViewport = true;
  r.resizeSession = false;
  r.focusOnClick = true;
  r.addEventListener('connect', () => {
    if (rfb !== r) return;
    connectedAt = Date.now();
    connections += 1;
    statusEl.dataset.connections = String(connections);
    setState('connected', 'Connected');
    r.focus();
  });
  r.addEventListener('disconnect', () => {
    if (rfb !== r) return;
    rfb = null;
    if (finished) return;
    if (connectedAt && Date.now() - connectedAt >= STABLE_MS) attempts = 0;
    connectedAt = 0;
    scheduleReconnect();
  });
  r.addEventListener('credentialsrequired', () => {
    // The proxy authenticates to the desktop; a password request means something is misconfigured. Never prompt.
    finish('error', 'The desktop asked for a password, which this viewer never sends. Please report this to support.');
  });
  r.addEventListener('securityfailure', (e) => {
    const reason = e.detail && typeof e.detail.reason === 'string' ? e.detail.reason : 'unknown reason';
    finish('error', `The desktop refused the connection (${reason}).`);
  });
  r.addEventListener('desktopname', (e) => {
    const name = e.detail && typeof e.detail.name === 'string' ? e.detail.name : '';
    document.title = name ? `${name} – Desktop` : 'Desktop';
  });
}

function delayFor(attempt) {
  // 0, 1, 2, 4, 8, 16, 30, 30 seconds: ask at once (it may just say "ended"), then back off.
  return attempt <= 1 ? 0 : Math.min(1000 * 2 ** (attempt - 2), MAX_DELAY_MS);
}

function scheduleReconnect(extraDelayMs = 0) {
  attempts += 1;
  if (attempts > MAX_ATTEMPTS) {
    setState('disconnected', 'Disconnected. The desktop could not be reached.');
    retryEl.hidden = false;
    return;
  }
  const delay = Math.max(delayFor(attempts), extraDelayMs);
  setState('disconnected', delay > 0
    ? `Connection lost. Reconnecting in ${Math.round(delay / 1000)} s…`
    : 'Connection lost. Reconnecting…');
  clearTimeout(retryTimer);
  retryTimer = setTimeout(reconnect, delay);
}

async function reconnect() {
  if (finished || !credentials) return;
  let res;
  try {
    res = await fetch('reconnect', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ session: credentials.session, key: credentials.key }),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch {
    scheduleReconnect(); // the controller is unreachable: try again later
    return;
  }
  if (finished) return;
  if (res.status === 410) {
    finish('ended', 'This desktop session has ended.');
    return;
  }
  if (res.status === 400) {
    finish('error', 'This desktop link is not valid. Please open the desktop again from the portal.');
    return;
  }
  if (!res.ok) {
    const retryAfter = Number(res.headers.get('retry-after'));
    scheduleReconnect(Number.isFinite(retryAfter) ? Math.min(retryAfter * 1000, MAX_DELAY_MS) : 0);
    return;
  }
  let body;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!body || typeof body.websocketPath !== 'string' || !body.websocketPath.startsWith('/websockify?')) {
    scheduleReconnect();
    return;
  }
  connect(body.websocketPath);
}

/** Reads #session=..&token=..&key=.. (or, after a reload, sessionStorage) and clears the secrets from the URL. */
function readCredentials() {
  const params = new URLSearchParams(location.hash.slice(1));
  const session = params.get('session');
  const token = params.get('token');
  const key = params.get('key');
  if (location.hash) history.replaceState(null, '', location.pathname + location.search);
  if (session && key) {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ session, key }));
    return { session, key, token };
  }
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? 'null');
    if (saved && typeof saved.session === 'string' && typeof saved.key === 'string') {
      return { session: saved.session, key: saved.key, token: null };
    }
  } catch {
    // fall through: no usable saved credentials
  }
  return null;
}

retryEl.addEventListener('click', () => {
  attempts = 0;
  retryEl.hidden = true;
  setState('connecting', 'Reconnecting…');
  reconnect();
});

credentials = readCredentials();
if (!credentials) {
  finish('error', 'This desktop link is incomplete. Please open the desktop again from the portal.');
} else if (credentials.token) {
  connect(`/websockify?token=${encodeURIComponent(credentials.token)}`);
} else {
  reconnect();
}
