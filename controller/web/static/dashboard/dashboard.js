// The operators' dashboard: blades and sessions from the REST API, refreshed every few seconds.
//
// Every value comes from the API and some of it from blades or users (hostnames, errors, usernames), so it is put in
// the page only with textContent / createElement — never innerHTML — and renders as text whatever it contains
// (threat 7). The API key lives in sessionStorage (this tab only) and is sent only to this origin.

const STORAGE_KEY = 'vncdispatch.apiKey';
const REFRESH_MS = 5_000;

const statusEl = document.getElementById('status');
const loginEl = document.getElementById('login');
const keyEl = document.getElementById('api-key');
const contentEl = document.getElementById('content');
const signOutEl = document.getElementById('sign-out');
const bladesBody = document.querySelector('#blades tbody');
const sessionsBody = document.querySelector('#sessions tbody');

let timer = 0;

function setStatus(state, text) {
  statusEl.dataset.state = state;
  statusEl.textContent = text;
}

/** A <td> holding `value` as text. */
function cell(value, className) {
  const td = document.createElement('td');
  td.textContent = value === null || value === undefined || value === '' ? '–' : String(value);
  if (className) td.className = className;
  return td;
}

/** A <td> with a coloured badge; the class is derived from a fixed list, never from the raw value. */
function stateCell(value, known) {
  const td = document.createElement('td');
  const span = document.createElement('span');
  const text = typeof value === 'string' ? value : 'UNKNOWN';
  span.className = known.includes(text) ? `state state-${text}` : 'state';
  span.textContent = text;
  td.append(span);
  return td;
}

function emptyRow(columns, text) {
  const tr = document.createElement('tr');
  const td = cell(text, 'empty');
  td.colSpan = columns;
  tr.append(td);
  return tr;
}

function first(obj, ...names) {
  for (const n of names) if (obj && obj[n] !== undefined && obj[n] !== null) return obj[n];
  return null;
}

function asList(body, key) {
  if (Array.isArray(body)) return body;
  if (body && Array.isArray(body[key])) return body[key];
  return [];
}

function toDate(value) {
  if (value === null || value === undefined) return null;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

function ago(value) {
  const d = toDate(value);
  if (!d) return null;
  const s = Math.max(0, Math.round((Date.now() - d.getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
}

function age(value) {
  const d = toDate(value);
  if (!d) return null;
  const m = Math.max(0, Math.floor((Date.now() - d.getTime()) / 60000));
  return m < 60 ? `${m} min` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

function bytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return null;
  const gib = n / 2 ** 30;
  return gib >= 1 ? `${gib.toFixed(1)} GiB` : `${Math.round(n / 2 ** 20)} MiB`;
}

function memory(blade) {
  const m = first(blade, 'memory', 'status');
  const total = first(m, 'totalBytes', 'memoryTotalBytes') ?? first(blade, 'memoryTotalBytes');
  const avail = first(m, 'availableBytes', 'memoryAvailableBytes') ?? first(blade, 'memoryAvailableBytes');
  if (typeof total !== 'number' || typeof avail !== 'number') return null;
  return `${bytes(total - avail)} / ${bytes(total)} used`;
}

function load(blade) {
  const l = first(blade, 'load', 'load1');
  if (typeof l === 'number') return l.toFixed(2);
  const l1 = first(l, 'load1', 'one');
  return typeof l1 === 'number' ? l1.toFixed(2) : null;
}

function renderBlades(blades) {
  const rows = blades.map((b) => {
    const tr = document.createElement('tr');
    const sessions = first(b, 'sessions', 'liveSessions');
    const capacity = first(b, 'capacity');
    tr.append(
      cell(first(b, 'name')),
      cell(first(b, 'hostname')),
      cell(first(b, 'address')),
      stateCell(first(b, 'state'), ['UP', 'DOWN', 'CORDONED', 'DRAINING']),
      cell(`${sessions ?? '?'} / ${capacity ?? '?'}`, 'num'),
      cell(load(b), 'num'),
      cell(memory(b), 'num'),
      cell(ago(first(b, 'lastSeen', 'lastSeenAt'))),
      cell(first(b, 'lastError'), 'error'),
    );
    return tr;
  });
  bladesBody.replaceChildren(...(rows.length ? rows : [emptyRow(9, 'No blades registered.')]));
}

function renderSessions(sessions) {
  const rows = sessions.map((s) => {
    const tr = document.createElement('tr');
    tr.append(
      cell(first(s, 'username', 'user')),
      cell(first(s, 'blade')),
      cell(first(s, 'display') === null ? null : `:${first(s, 'display')}`, 'num'),
      stateCell(first(s, 'state'), ['starting', 'running', 'ended']),
      cell(age(first(s, 'createdAt', 'startedAt'))),
      cell(first(s, 'id')),
    );
    return tr;
  });
  sessionsBody.replaceChildren(...(rows.length ? rows : [emptyRow(6, 'No live sessions.')]));
}

class Unauthorized extends Error {}

async function getJson(path, key) {
  const res = await fetch(path, {
    headers: { authorization: `Bearer ${key}`, accept: 'application/json' },
    cache: 'no-store',
    credentials: 'omit',
  });
  if (res.status === 401) throw new Unauthorized();
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

async function refresh() {
  const key = sessionStorage.getItem(STORAGE_KEY);
  if (!key) return signedOut();
  try {
    const [blades, sessions] = await Promise.all([
      // Relative to /dashboard/: works under a reverse proxy's path prefix too.
      getJson('../api/v1/blades', key),
      getJson('../api/v1/sessions', key),
    ]);
    renderBlades(asList(blades, 'blades'));
    renderSessions(asList(sessions, 'sessions'));
    setStatus('ok', `Updated ${new Date().toLocaleTimeString()}`);
  } catch (err) {
    if (err instanceof Unauthorized) {
      sessionStorage.removeItem(STORAGE_KEY);
      signedOut('The API key was refused.');
      return;
    }
    setStatus('stale', `Could not refresh (${err instanceof Error ? err.message : 'network error'}); retrying.`);
  }
  clearTimeout(timer);
  timer = setTimeout(refresh, REFRESH_MS);
}

function signedOut(message) {
  clearTimeout(timer);
  contentEl.hidden = true;
  signOutEl.hidden = true;
  loginEl.hidden = false;
  setStatus(message ? 'error' : 'signed-out', message ?? 'Enter an API key to see blades and sessions.');
  keyEl.focus();
}

function signedIn() {
  loginEl.hidden = true;
  contentEl.hidden = false;
  signOutEl.hidden = false;
  setStatus('loading', 'Loading…');
  refresh();
}

loginEl.addEventListener('submit', (e) => {
  e.preventDefault();
  const key = keyEl.value.trim();
  if (!key) return;
  keyEl.value = '';
  sessionStorage.setItem(STORAGE_KEY, key);
  signedIn();
});

signOutEl.addEventListener('click', () => {
  sessionStorage.removeItem(STORAGE_KEY);
  signedOut();
});

if (sessionStorage.getItem(STORAGE_KEY)) signedIn();
else signedOut();
