// The desktop viewer. Opened at /viewer/#session=ID&token=T&key=K (the API's viewerUrl).
//
// - The token opens one WebSocket to this controller's /websockify; the controller's proxy does the VNC password
//   authentication itself and offers noVNC the security type None, so this page never asks for a password.
// - First frame first: the WebSocket is opened before noVNC is even loaded (noVNC is a separate chunk the page
//   preloads in parallel); what the server sends meanwhile is kept and handed to noVNC when it attaches.
// - The key is a session-lifetime secret: when the connection drops, POST /viewer/reconnect trades it for a fresh
//   token while the session is live, and answers 410 once it has ended ("This desktop session has ended.").
// - Secrets leave the address bar at once (history.replaceState); the session id and key stay in sessionStorage
//   (this tab only) so a reload can reconnect.
// - Everything shown to the user is set with textContent: a desktop name or clipboard text is remote-controlled.
// - Every URL is relative to this page (/viewer/), so the controller also works under a reverse proxy's path prefix.
// - No event handler may throw: each one that calls into noVNC or a browser API that can refuse is guarded.
import { clipboardBytes, MAX_CLIPBOARD_BYTES } from './clipboard-limit.js';
import { keyCombo } from './keys.js';

const STORAGE_KEY = 'vncdispatch.viewer';
const PREFS_KEY = 'vncdispatch.viewer.prefs';
/** Reconnect attempts before giving up and offering a button (0, 0.25, 0.5, 1, 2 … 30 s: about 90 s in all). */
const MAX_ATTEMPTS = 10;
/** A connection that stayed up this long resets the attempt count, so a flapping link still backs off. */
const STABLE_MS = 10_000;
const MAX_DELAY_MS = 30_000;
/** How often the latency indicator measures, and how many samples its median covers. */
const PING_EVERY_MS = 5_000;
const PING_SAMPLES = 5;
/** An upload backlog this large means the link cannot keep up with input (a paste, a drag): quality is poor. */
const CONGESTED_BYTES = 256 * 1024;
/**
 * Why the desktop cannot be reached, in words, by the error code the controller gives: the reason of the WebSocket's
 * close (code 1011) or the code of a refused POST /viewer/reconnect (README: "WebSocket close codes", "Error codes").
 */
const WHY = {
  VD_ERR_BLADE_DOWN: 'The server running this desktop is not answering.',
  VD_ERR_RELAY_TIMEOUT: 'The server running this desktop did not answer in time.',
  VD_ERR_DESKTOP_UNREACHABLE: 'The desktop is not answering on its server.',
  VD_ERR_DESKTOP_NOT_FOUND: 'The desktop is no longer running on its server.',
  VD_ERR_VNC_CONNECT: 'The desktop cannot be reached.',
  VD_ERR_VNC_HANDSHAKE: 'The desktop did not answer as a desktop should.',
  VD_ERR_VNC_AUTH_FAILED: 'The desktop refused the connection.',
  VD_ERR_SESSION_STARTING: 'The desktop is still starting.',
  VD_ERR_STORE_UNAVAILABLE: 'The desktop service is having trouble.',
  VD_ERR_PROXY_UNAVAILABLE: 'The desktop service is having trouble.',
};

/** { code, text } for an error code the page knows, else null. */
function why(code) {
  return typeof code === 'string' && Object.hasOwn(WHY, code) ? { code, text: WHY[code] } : null;
}

const $ = (id) => document.getElementById(id);
const statusEl = $('status');
const retryEl = $('retry');
const screenEl = $('screen');
const latencyEl = $('latency');
const barEl = $('bar');
const hideEl = $('hide');
const scaleEl = $('scale');
const fullscreenEl = $('fullscreen');
const keysEl = $('keys');
const keysPanel = $('keys-panel');
const clipboardEl = $('clipboard');
const clipboardPanel = $('clipboard-panel');
const clipboardText = $('clipboard-text');
const clipboardNote = $('clipboard-note');

/** noVNC's RFB class once its chunk has loaded; a promise of it before. */
let RFBClass = null;
const rfbReady = import('./rfb-viewer.js').then((m) => {
  RFBClass = m.ViewerRFB;
  return RFBClass;
});
rfbReady.catch(() => finish('error', 'The viewer could not load. Please reload the page.'));

let rfb = null;
let socket = null;
let attempts = 0;
let connectedAt = 0;
/** 'ended' or 'error': no more reconnects. */
let finished = false;
/** The person pressed Disconnect: no automatic reconnect until they ask. */
let userClosed = false;
let retryTimer = 0;
let credentials = null;
/** Why the last connection failed (see why()), until a connection succeeds: the status keeps saying it meanwhile. */
let failure = null;
/** Completed connections, published as #status[data-connections]: a counter tests and monitors can wait on, where a
 *  state like 'disconnected' may last only a few milliseconds. */
let connections = 0;
/** Remembered in localStorage: scale instead of resizing the desktop; toolbar collapsed. */
const prefs = loadPrefs();
/** Text last exchanged with the desktop's clipboard, so focus changes do not send the same text again. */
let lastClipboard = null;

function loadPrefs() {
  try {
    const p = JSON.parse(localStorage.getItem(PREFS_KEY) ?? '{}');
    return { scale: p.scale === true, toolbarHidden: p.toolbarHidden === true };
  } catch {
    return { scale: false, toolbarHidden: false };
  }
}

function savePrefs() {
  try {
    localStorage.setItem(PREFS_KEY, JSON.stringify(prefs));
  } catch {
    // Storage may be full or disabled: the preference then lasts for this page only.
  }
}

/** data-state is what tests and styles read: connecting | connected | disconnected | ended | error. */
function setState(state, text) {
  statusEl.dataset.state = state;
  statusEl.textContent = text;
}

function showNotice(text) {
  for (const old of screenEl.querySelectorAll('.notice')) old.remove();
  if (!text) return;
  const p = document.createElement('p');
  p.className = 'notice';
  p.textContent = text;
  screenEl.append(p);
}

function dropConnection() {
  if (rfb) {
    const old = rfb;
    rfb = null;
    try {
      old.disconnect();
    } catch {
      // Already closing.
    }
  } else if (socket) {
    try {
      socket.ws.close();
    } catch {
      // Already closed.
    }
  }
  socket = null;
}

function finish(state, text) {
  finished = true;
  clearTimeout(retryTimer);
  retryEl.hidden = true;
  setState(state, text);
  showNotice(text);
  if (state === 'ended') sessionStorage.removeItem(STORAGE_KEY);
  dropConnection();
}

/** The API's websocketPath ('/websockify?token=…') is relative to the controller's root, one folder up from here. */
function websocketUrl(path) {
  const url = new URL(`..${path}`, location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

/**
 * Opens the WebSocket now and keeps every message that arrives before noVNC attaches (noVNC reads only what arrives
 * after it sets onmessage). `adopt()` stops keeping and returns what was kept, in order.
 */
function openSocket(path) {
  const url = websocketUrl(path);
  const pre = takeEarlySocket(url);
  const ws = pre ? pre.ws : new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  const early = pre ? pre.messages : [];
  const keep = (e) => early.push(e.data);
  // Same array, swapped in one step: nothing that arrived on the early socket is lost or reordered.
  if (pre) ws.removeEventListener('message', pre.keep);
  ws.addEventListener('message', keep);
  let settleClosed;
  const sock = {
    ws,
    /** The close's reason as an explanation (see WHY), once the socket has closed; null before or if none applies. */
    why: null,
    /** Resolves when the socket has closed (registered before noVNC's handler, so it runs first). */
    closed: new Promise((resolve) => {
      settleClosed = resolve;
    }),
    adopt() {
      ws.removeEventListener('message', keep);
      return early;
    },
  };
  const onClose = (e) => {
    sock.why = why(e.reason);
    settleClosed();
  };
  if (pre?.close) onClose(pre.close);
  else ws.addEventListener('close', onClose);
  return sock;
}

/**
 * The socket early-socket.js (inlined in the page's head) opened for `url` while the page loaded, once: the first
 * connection adopts it, every later one opens its own.
 */
function takeEarlySocket(url) {
  const pre = window.vdEarlySocket;
  delete window.vdEarlySocket;
  if (!pre || pre.url !== url || !(pre.ws instanceof WebSocket)) {
    safely(() => pre?.ws?.close());
    return null;
  }
  return pre;
}

function connect(websocketPath) {
  setState('connecting', failure ? `${failure.text} Reconnecting…` : 'Connecting…');
  retryEl.hidden = true;
  showNotice(failure ? failure.text : '');
  try {
    socket = openSocket(websocketPath);
  } catch {
    // The browser refused the URL: treat it like a dropped connection.
    scheduleReconnect();
    return;
  }
  const mine = socket;
  if (RFBClass) attach(mine);
  else void rfbReady.then(() => attach(mine), () => undefined);
}

function attach(sock) {
  if (sock !== socket || finished) return;
  let r;
  try {
    r = new RFBClass(screenEl, sock.ws, { shared: true });
    // What the server sent before noVNC was listening, replayed to noVNC's own handler in order.
    for (const data of sock.adopt()) sock.ws.dispatchEvent(new MessageEvent('message', { data }));
  } catch {
    // noVNC refuses a socket that closed while it loaded (a refused token, a dropped link, a desktop that cannot be
    // reached): say why, once the close has arrived, and ask for a new one.
    socket = null;
    const late = new Promise((resolve) => setTimeout(resolve, 1000));
    void Promise.race([sock.closed, late]).then(() => {
      if (!finished && !userClosed) scheduleReconnect(0, sock.why);
    });
    return;
  }
  rfb = r;
  applyResizeMode();
  r.focusOnClick = true;
  r.addEventListener('connect', () => {
    if (rfb !== r) return;
    connectedAt = Date.now();
    connections += 1;
    statusEl.dataset.connections = String(connections);
    failure = null;
    statusEl.dataset.reason = '';
    showNotice('');
    setState('connected', 'Connected');
    safely(() => r.focus());
    void measureLatency();
  });
  r.addEventListener('disconnect', () => {
    if (rfb !== r) return;
    rfb = null;
    socket = null;
    showLatency(null);
    if (finished) return;
    if (userClosed) {
      setState('disconnected', 'Disconnected.');
      retryEl.hidden = false;
      return;
    }
    if (connectedAt && Date.now() - connectedAt >= STABLE_MS) attempts = 0;
    connectedAt = 0;
    scheduleReconnect(0, sock.why);
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
  r.addEventListener('clipboard', (e) => {
    if (rfb !== r) return;
    const text = e.detail && typeof e.detail.text === 'string' ? e.detail.text : '';
    receiveClipboard(text);
  });
  r.addEventListener('remoteresize', () => {
    // Another viewer of this desktop set its size. Following our own window now would take it back, and theirs
    // would take it again: this viewer scales instead until its person chooses otherwise.
    if (rfb !== r || prefs.scale) return;
    setScale(true, false);
    clipboardNote.textContent = '';
    setState('connected', 'Connected. Another viewer resized the desktop; this window now scales it.');
  });
  // Remote size changes this viewer asked for and got, published as #status[data-resizes]: a counter to wait on.
  r.addEventListener('localresize', () => {
    statusEl.dataset.resizes = String(Number(statusEl.dataset.resizes ?? '0') + 1);
  });
}

function safely(fn) {
  try {
    fn();
  } catch {
    // A call into noVNC on a connection that is going away: nothing to do.
  }
}

function delayFor(attempt) {
  // 0, 0.25, 0.5, 1, 2, 4, 8, 16, 30, 30 seconds. Ask at once, and again soon: a desktop that has just died drops
  // the connection a moment before the controller has ended its session, and the page should say "ended" within a
  // second, not after a second back-off step. Then back off.
  return attempt <= 1 ? 0 : Math.min(125 * 2 ** (attempt - 1), MAX_DELAY_MS);
}

/**
 * The connection is gone, or could not be made: say why (`reason` from why(), or null for a plain drop) and try
 * again after the back-off. #status[data-reason] carries the error code for tests and monitors.
 */
function scheduleReconnect(extraDelayMs = 0, reason = null) {
  attempts += 1;
  failure = reason;
  statusEl.dataset.reason = reason ? reason.code : '';
  showNotice(reason ? reason.text : '');
  if (attempts > MAX_ATTEMPTS) {
    setState('disconnected', `Disconnected. ${reason ? reason.text : 'The desktop could not be reached.'}`);
    retryEl.hidden = false;
    return;
  }
  const delay = Math.max(delayFor(attempts), extraDelayMs);
  const lead = reason ? reason.text : 'Connection lost.';
  setState('disconnected', delay >= 1000 ? `${lead} Reconnecting in ${Math.round(delay / 1000)} s…` : `${lead} Reconnecting…`);
  clearTimeout(retryTimer);
  retryTimer = setTimeout(reconnect, delay);
}

async function reconnect() {
  if (finished || userClosed || !credentials) return;
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
  if (finished || userClosed) return;
  if (res.status === 410) {
    const code = await res.json().then((b) => b?.error?.code, () => null);
    statusEl.dataset.reason = typeof code === 'string' ? code : '';
    if (code === 'VD_ERR_SESSION_START_FAILED') {
      finish('ended', 'This desktop could not be started. Please open it again from the portal.');
    } else {
      finish('ended', 'This desktop session has ended.');
    }
    return;
  }
  if (res.status === 400) {
    finish('error', 'This desktop link is not valid. Please open the desktop again from the portal.');
    return;
  }
  if (res.status === 403) {
    // VD_ERR_RECONNECT_IP_MISMATCH: the link was issued for another network address; retrying cannot help.
    finish('error', 'This desktop link was issued for another network address. Please open the desktop again from the portal.');
    return;
  }
  if (!res.ok) {
    const retryAfter = Number(res.headers.get('retry-after'));
    let code = null;
    try {
      code = (await res.json())?.error?.code;
    } catch {
      // Not our JSON (a proxy's error page): no reason to show.
    }
    if (finished || userClosed) return;
    scheduleReconnect(Number.isFinite(retryAfter) ? Math.min(retryAfter * 1000, MAX_DELAY_MS) : 0, why(code));
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
    try {
      sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ session, key }));
    } catch {
      // No storage: a reload will need the portal's link again.
    }
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

// ---- Resize: the desktop follows this window (default), or keeps its size and is scaled ----

function applyResizeMode() {
  scaleEl.setAttribute('aria-pressed', String(prefs.scale));
  if (!rfb) return;
  safely(() => {
    // Scaling stays on in both modes: while a remote resize is under way, or if the server refuses one, the
    // desktop still fits the window instead of being cut off.
    rfb.scaleViewport = true;
    rfb.resizeSession = !prefs.scale;
  });
}

function setScale(scale, remember) {
  if (remember) {
    prefs.scale = scale;
    savePrefs();
  } else {
    prefs.scale = scale;
  }
  applyResizeMode();
}

scaleEl.addEventListener('click', () => {
  setScale(!prefs.scale, true);
  if (!prefs.scale && statusEl.dataset.state === 'connected') setState('connected', 'Connected');
});

// ---- Clipboard: noVNC's clipboard events, the async Clipboard API in a secure context, the panel everywhere ----

function note(text) {
  clipboardNote.textContent = text;
}

function receiveClipboard(text) {
  const bytes = clipboardBytes(text);
  if (bytes > MAX_CLIPBOARD_BYTES) {
    note(`The desktop copied ${Math.ceil(bytes / 1024)} KiB of text; only up to ${MAX_CLIPBOARD_BYTES / 1024} KiB is passed on.`);
    return;
  }
  lastClipboard = text;
  clipboardText.value = text;
  note('Copied from the desktop.');
  statusEl.dataset.clipboard = String(Number(statusEl.dataset.clipboard ?? '0') + 1);
  if (window.isSecureContext && navigator.clipboard?.writeText && document.hasFocus()) {
    navigator.clipboard.writeText(text).catch(() => undefined);
  }
}

/** Sends text to the desktop's clipboard; returns whether it went. */
function sendClipboard(text) {
  if (typeof text !== 'string' || text === lastClipboard || !rfb || statusEl.dataset.state !== 'connected') return false;
  const bytes = clipboardBytes(text);
  if (bytes > MAX_CLIPBOARD_BYTES) {
    note(`Not sent: ${Math.ceil(bytes / 1024)} KiB is more than the ${MAX_CLIPBOARD_BYTES / 1024} KiB a clipboard may carry.`);
    return false;
  }
  let sent = false;
  safely(() => {
    rfb.clipboardPasteFrom(text);
    sent = true;
  });
  if (sent) {
    lastClipboard = text;
    note('Sent to the desktop.');
  }
  return sent;
}

/** In a secure context, whatever the browser's clipboard holds goes to the desktop when the desktop gets the focus. */
async function syncLocalClipboard() {
  if (!window.isSecureContext || !navigator.clipboard?.readText || !document.hasFocus()) return;
  let text;
  try {
    text = await navigator.clipboard.readText();
  } catch {
    return; // not allowed (yet): the panel still works
  }
  if (text && sendClipboard(text)) clipboardText.value = text;
}

let clipboardInputTimer = 0;
clipboardText.addEventListener('input', () => {
  clearTimeout(clipboardInputTimer);
  clipboardInputTimer = setTimeout(() => sendClipboard(clipboardText.value), 250);
});
window.addEventListener('focus', () => void syncLocalClipboard());
screenEl.addEventListener('pointerenter', () => void syncLocalClipboard());
screenEl.addEventListener('focusin', () => void syncLocalClipboard());

// ---- Toolbar ----

function togglePanel(button, panel, open = panel.hidden) {
  const wasOpen = !panel.hidden;
  panel.hidden = !open;
  button.setAttribute('aria-expanded', String(open));
  if (open) panel.querySelector('textarea, button')?.focus();
  // A closed panel gives the keyboard back to the desktop, unless the focus is elsewhere in the toolbar.
  else if (wasOpen && rfb && (panel.contains(document.activeElement) || document.activeElement === document.body)) {
    safely(() => rfb.focus());
  }
}

keysEl.addEventListener('click', () => {
  togglePanel(clipboardEl, clipboardPanel, false);
  togglePanel(keysEl, keysPanel);
});
clipboardEl.addEventListener('click', () => {
  togglePanel(keysEl, keysPanel, false);
  togglePanel(clipboardEl, clipboardPanel);
});
for (const panel of [keysPanel, clipboardPanel]) {
  panel.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape') return;
    e.preventDefault();
    togglePanel(panel === keysPanel ? keysEl : clipboardEl, panel, false);
  });
}

function sendKeys(combo) {
  const keys = keyCombo(combo);
  if (!keys || !rfb) return;
  safely(() => {
    for (const k of keys) rfb.sendKey(k.keysym, k.code, true);
    for (const k of [...keys].reverse()) rfb.sendKey(k.keysym, k.code, false);
  });
}

$('cad').addEventListener('click', () => {
  if (rfb) safely(() => rfb.sendCtrlAltDel());
  if (rfb) safely(() => rfb.focus());
});
keysPanel.addEventListener('click', (e) => {
  const button = e.target instanceof Element ? e.target.closest('button[data-keys]') : null;
  if (!button) return;
  sendKeys(button.dataset.keys ?? '');
});

fullscreenEl.addEventListener('click', () => {
  const done = document.fullscreenElement ? document.exitFullscreen() : document.documentElement.requestFullscreen();
  Promise.resolve(done).catch(() => undefined);
});
document.addEventListener('fullscreenchange', () => {
  const on = Boolean(document.fullscreenElement);
  fullscreenEl.setAttribute('aria-pressed', String(on));
  // In full screen, Chromium lets a page take keys like Esc and Alt+Tab, so they reach the desktop.
  if (on) navigator.keyboard?.lock?.().catch(() => undefined);
  else navigator.keyboard?.unlock?.();
});

$('disconnect').addEventListener('click', () => {
  if (finished) return;
  userClosed = true;
  clearTimeout(retryTimer);
  dropConnection();
  showLatency(null);
  setState('disconnected', 'Disconnected.');
  retryEl.hidden = false;
  retryEl.focus();
});

retryEl.addEventListener('click', () => {
  attempts = 0;
  userClosed = false;
  retryEl.hidden = true;
  setState('connecting', 'Reconnecting…');
  void reconnect();
});

function setToolbarHidden(hidden) {
  prefs.toolbarHidden = hidden;
  savePrefs();
  barEl.classList.toggle('collapsed', hidden);
  hideEl.setAttribute('aria-expanded', String(!hidden));
  hideEl.textContent = hidden ? 'Toolbar' : 'Hide toolbar';
  if (hidden) {
    togglePanel(keysEl, keysPanel, false);
    togglePanel(clipboardEl, clipboardPanel, false);
  }
}
hideEl.addEventListener('click', () => setToolbarHidden(!prefs.toolbarHidden));
setToolbarHidden(prefs.toolbarHidden);

// Ctrl+Alt+Shift (Guacamole's chord) moves the keyboard to the toolbar from inside the desktop, where every other key
// belongs to the remote side. noVNC releases the keys it holds when its canvas loses the focus.
window.addEventListener('keydown', (e) => {
  if (!(e.ctrlKey && e.altKey && e.shiftKey) || !['Control', 'Alt', 'Shift'].includes(e.key)) return;
  if (prefs.toolbarHidden) setToolbarHidden(false);
  hideEl.focus();
}, true);

// ---- Connection quality: the round trip to the controller, and the upload backlog ----

function showLatency(ms) {
  if (ms === null) {
    latencyEl.dataset.quality = 'unknown';
    latencyEl.textContent = '–';
    latencyEl.title = 'Round trip to the server: not connected';
    return;
  }
  const backlog = socket?.ws?.bufferedAmount ?? 0;
  const quality = backlog > CONGESTED_BYTES || ms > 200 ? 'poor' : ms > 80 ? 'fair' : 'good';
  latencyEl.dataset.quality = quality;
  latencyEl.textContent = `${Math.round(ms)} ms`;
  latencyEl.title = `Round trip to the server: ${Math.round(ms)} ms (${quality} connection)`;
}

const samples = [];
async function measureLatency() {
  if (!rfb || document.hidden) return;
  const t0 = performance.now();
  try {
    const res = await fetch('ping', { cache: 'no-store', credentials: 'omit' });
    if (!res.ok) return;
  } catch {
    return;
  }
  samples.push(performance.now() - t0);
  if (samples.length > PING_SAMPLES) samples.shift();
  const sorted = [...samples].sort((a, b) => a - b);
  if (rfb) showLatency(sorted[Math.floor(sorted.length / 2)]);
}
setInterval(() => void measureLatency(), PING_EVERY_MS);

// ---- Start ----

credentials = readCredentials();
if (!credentials) {
  finish('error', 'This desktop link is incomplete. Please open the desktop again from the portal.');
} else if (credentials.token) {
  connect(`/websockify?token=${encodeURIComponent(credentials.token)}`);
} else {
  void reconnect();
}
