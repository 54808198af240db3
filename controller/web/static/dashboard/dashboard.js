// The operators' dashboard: blades and live sessions pushed by GET /api/v1/events (server-sent events, no polling),
// ended sessions as a paged history, filters, and actions that each ask for confirmation and say what failed.
//
// Every value comes from the API and some of it from blades or users (hostnames, errors, usernames), so it reaches
// the page only through textContent / createElement, never innerHTML, and renders as text whatever it contains
// (threat 7). Badge classes come from fixed lists, never from the data. The API key lives in sessionStorage (this
// tab only) and is sent only to this origin, in a header.
import { ApiError, Unauthorized, request, streamEvents } from './api.js';
import { age, ago, bytes, duration, load, memory, time, toDate } from './format.js';

const STORAGE_KEY = 'vncdispatch.apiKey';
const HISTORY_PAGE = 20;
const BLADE_STATES = ['UP', 'DOWN', 'CORDONED', 'DRAINING'];
const SESSION_STATES = ['starting', 'running', 'ended'];

const $ = (id) => document.getElementById(id);
const statusEl = $('status');
const loginEl = $('login');
const keyEl = $('api-key');
const contentEl = $('content');
const signOutEl = $('sign-out');
const messageEl = $('message');
const bladesBody = document.querySelector('#blades tbody');
const sessionsBody = document.querySelector('#sessions tbody');
const historyBody = document.querySelector('#history tbody');
const confirmEl = $('confirm');

/** Live state, as the event stream last described it. */
const blades = new Map();
const sessions = new Map();
/** When each live session first appeared on this page (Date.now()), so tests can measure "shown within 1 s". */
const shownAt = new Map();
let historyOffset = 0;
let historyNext = null;
let stream = null;
let retryTimer = 0;
let retryMs = 500;
let ticker = 0;

function setStatus(state, text) {
  statusEl.dataset.state = state;
  statusEl.textContent = text;
}

function showMessage(kind, text) {
  messageEl.dataset.kind = kind;
  messageEl.textContent = text;
  messageEl.hidden = false;
}

const text = (value) => (value === null || value === undefined || value === '' ? '–' : String(value));

/** A cell's content: plain text, or a badge whose class comes from a fixed list, never from the raw value. */
function textCell(value, className = '') {
  return { text: text(value), className };
}

function badgeCell(value, known) {
  const t = typeof value === 'string' ? value : 'UNKNOWN';
  return { text: t, className: '', badge: known.includes(t) ? `state state-${t}` : 'state' };
}

function button(label, name, action) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.dataset.action = action;
  // The accessible name says what the button acts on ("Cordon blade-1"), not just "Cordon" ten times over.
  b.setAttribute('aria-label', `${label} ${name}`);
  return b;
}

/** Writes a cell spec into a <td>, touching the DOM only where something changed. */
function writeCell(td, spec) {
  if (td.className !== spec.className) td.className = spec.className;
  if (spec.badge) {
    let span = td.firstElementChild;
    if (!span || span.tagName !== 'SPAN') {
      span = document.createElement('span');
      td.replaceChildren(span);
    }
    if (span.className !== spec.badge) span.className = spec.badge;
    if (span.textContent !== spec.text) span.textContent = spec.text;
  } else if (td.textContent !== spec.text || td.firstElementChild) {
    td.textContent = spec.text;
  }
}

/**
 * Brings a table body in line with `items`, keyed by `rowKey`: existing rows are updated in place and new ones
 * added, so a button under the pointer or the keyboard focus is never replaced by a live update (a click would be
 * lost and focus thrown out of the table).
 */
function syncRows(body, items, rowKey, keyOf, cellsOf, actionsOf, emptyText, columns) {
  if (items.length === 0) {
    const only = body.rows.length === 1 ? body.rows[0] : null;
    const td = only && !only.dataset[rowKey] ? only.cells[0] : null;
    if (td && td.textContent === emptyText) return;
    const tr = document.createElement('tr');
    const empty = document.createElement('td');
    empty.className = 'empty';
    empty.colSpan = columns;
    empty.textContent = emptyText;
    tr.append(empty);
    body.replaceChildren(tr);
    return;
  }
  const existing = new Map();
  for (const tr of [...body.rows]) {
    if (tr.dataset[rowKey] === undefined) tr.remove();
    else existing.set(tr.dataset[rowKey], tr);
  }
  const keep = new Set();
  let before = body.firstElementChild;
  for (const item of items) {
    const key = String(keyOf(item));
    keep.add(key);
    let tr = existing.get(key);
    const cells = cellsOf(item);
    if (!tr) {
      tr = document.createElement('tr');
      tr.dataset[rowKey] = key;
      for (let i = 0; i < cells.length; i++) tr.append(document.createElement('td'));
      if (actionsOf) {
        const td = document.createElement('td');
        td.className = 'actions';
        tr.append(td);
      }
    }
    cells.forEach((spec, i) => writeCell(tr.cells[i], spec));
    if (actionsOf) actionsOf(item, tr.cells[cells.length], tr);
    if (tr !== before) body.insertBefore(tr, before);
    before = tr.nextElementSibling;
  }
  for (const [key, tr] of existing) if (!keep.has(key)) tr.remove();
}

function filters() {
  return {
    blade: $('filter-blade').value.trim().toLowerCase(),
    user: $('filter-user').value.trim().toLowerCase(),
    state: $('filter-state').value,
  };
}

const includes = (value, needle) => !needle || String(value ?? '').toLowerCase().includes(needle);

function bladeVisible(b, f) {
  return includes(b.name, f.blade) && (!f.state || !BLADE_STATES.concat('UNKNOWN').includes(f.state) || b.state === f.state);
}

function sessionVisible(s, f) {
  const sessionState = f.state && ['starting', 'running'].includes(f.state);
  return includes(s.blade, f.blade) && includes(s.username, f.user) && (!sessionState || s.state === f.state);
}

function bladeActions(b, td) {
  if (!td.firstElementChild) {
    td.append(button('Cordon', b.name, 'cordon'), button('Uncordon', b.name, 'uncordon'), button('Drain', b.name, 'drain'),
      button('Remove', b.name, 'remove'));
  }
  const admin = b.adminState;
  const [cordon, uncordon, drain] = td.children;
  cordon.disabled = admin === 'CORDONED';
  uncordon.disabled = admin === 'ACTIVE';
  drain.disabled = admin === 'DRAINING';
}

function renderBlades() {
  const f = filters();
  const list = [...blades.values()].filter((b) => bladeVisible(b, f)).sort((a, b) => (a.name < b.name ? -1 : 1));
  syncRows(bladesBody, list, 'blade', (b) => b.name, (b) => [
    textCell(b.name),
    textCell(b.hostname),
    textCell(b.address),
    textCell(b.version),
    badgeCell(b.state, BLADE_STATES),
    textCell(`${b.sessions ?? '?'} / ${b.capacity ?? '?'}`, 'num'),
    textCell(load(b), 'num'),
    textCell(memory(b), 'num'),
    textCell(ago(b.lastSeen)),
    textCell(b.lastError, 'error'),
  ], bladeActions, blades.size ? 'No blade matches the filters.' : 'No blades registered.', 11);
}

function renderSessions() {
  const f = filters();
  const list = [...sessions.values()].filter((s) => sessionVisible(s, f))
    .sort((a, b) => (toDate(b.createdAt)?.getTime() ?? 0) - (toDate(a.createdAt)?.getTime() ?? 0));
  syncRows(sessionsBody, list, 'sessionId', (s) => s.id, (s) => [
    textCell(s.username),
    textCell(s.blade),
    badgeCell(s.state, SESSION_STATES),
    textCell(age(s.createdAt)),
    textCell(s.viewers ?? 0, 'num'),
    textCell(bytes(s.bytesDown ?? 0), 'num'),
    textCell(bytes(s.bytesUp ?? 0), 'num'),
    textCell(Array.isArray(s.viewerIps) && s.viewerIps.length ? s.viewerIps.join(', ') : s.clientIp),
    textCell(s.id, 'id'),
  ], (s, td, tr) => {
    tr.dataset.shownAt = String(shownAt.get(s.id) ?? '');
    if (!td.firstElementChild) td.append(button('End', `session of ${s.username}`, 'end'));
  }, sessions.size ? 'No session matches the filters.' : 'No live sessions.', 10);
}

async function loadHistory() {
  const key = sessionStorage.getItem(STORAGE_KEY);
  if (!key) return;
  const f = filters();
  const q = new URLSearchParams({ state: 'ended', limit: String(HISTORY_PAGE), offset: String(historyOffset) });
  // The API matches blade and user exactly; the live tables above match substrings as you type.
  if (f.blade) q.set('blade', $('filter-blade').value.trim());
  if (f.user) q.set('user', $('filter-user').value.trim());
  try {
    const body = await request(key, 'GET', `sessions?${q}`);
    const list = body && Array.isArray(body.sessions) ? body.sessions : [];
    historyNext = body && typeof body.nextOffset === 'number' ? body.nextOffset : null;
    syncRows(historyBody, list, 'sessionId', (s) => s.id, (s) => {
      const start = toDate(s.createdAt);
      const end = toDate(s.endedAt);
      return [
        textCell(s.username),
        textCell(s.blade),
        textCell(time(s.createdAt)),
        textCell(time(s.endedAt)),
        textCell(start && end ? duration(end.getTime() - start.getTime()) : null, 'num'),
        textCell(s.endReason),
        textCell(s.id, 'id'),
      ];
    }, null, 'No ended sessions.', 7);
    const page = Math.floor(historyOffset / HISTORY_PAGE) + 1;
    $('history-page').textContent = `Page ${page}`;
    $('history-prev').disabled = historyOffset === 0;
    $('history-next').disabled = historyNext === null;
  } catch (err) {
    if (err instanceof Unauthorized) return refused();
    if (err instanceof ApiError) showMessage('error', `Could not load ended sessions: ${err.code}: ${err.message}`);
  }
}

function applyEvent(type, data) {
  if (!data || typeof data !== 'object') return;
  if (type === 'snapshot') {
    blades.clear();
    sessions.clear();
    for (const b of Array.isArray(data.blades) ? data.blades : []) blades.set(b.name, b);
    for (const s of Array.isArray(data.sessions) ? data.sessions : []) {
      sessions.set(s.id, s);
      if (!shownAt.has(s.id)) shownAt.set(s.id, Date.now());
    }
    setStatus('ok', 'Live');
    retryMs = 500;
  } else if (type === 'blade') {
    blades.set(data.name, data);
  } else if (type === 'blade-removed') {
    blades.delete(data.name);
  } else if (type === 'session') {
    if (!sessions.has(data.id) && !shownAt.has(data.id)) shownAt.set(data.id, Date.now());
    sessions.set(data.id, data);
  } else if (type === 'session-ended') {
    sessions.delete(data.id);
    shownAt.delete(data.id);
    document.body.dataset.lastEndedAt = String(Date.now());
    if (historyOffset === 0) void loadHistory();
  } else {
    return;
  }
  document.body.dataset.events = String(Number(document.body.dataset.events ?? 0) + 1);
  renderBlades();
  renderSessions();
}

function connect() {
  const key = sessionStorage.getItem(STORAGE_KEY);
  if (!key) return;
  stream?.abort();
  const controller = new AbortController();
  stream = controller;
  streamEvents(key, controller.signal, applyEvent).then(
    () => retry(controller, 'The event stream ended'),
    (err) => {
      if (controller.signal.aborted) return;
      if (err instanceof Unauthorized) return refused();
      retry(controller, err instanceof ApiError ? `${err.code}: ${err.message}` : 'network error');
    },
  );
}

function retry(controller, why) {
  if (stream !== controller || controller.signal.aborted) return;
  setStatus('stale', `Not live (${why}); reconnecting…`);
  clearTimeout(retryTimer);
  retryTimer = setTimeout(connect, retryMs);
  retryMs = Math.min(retryMs * 2, 15_000);
}

function refused() {
  sessionStorage.removeItem(STORAGE_KEY);
  signedOut('The API key was refused.');
}

function ask(title, text, confirmLabel) {
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = confirmLabel;
  confirmEl.returnValue = '';
  return new Promise((resolve) => {
    confirmEl.addEventListener('close', () => resolve(confirmEl.returnValue === 'ok'), { once: true });
    confirmEl.showModal();
    $('confirm-cancel').focus();
  });
}

/** Runs one confirmed action and reports its outcome in #message; the change itself arrives through the stream. */
async function act(title, text, confirmLabel, method, path, body, done) {
  if (!(await ask(title, text, confirmLabel))) return false;
  const key = sessionStorage.getItem(STORAGE_KEY);
  if (!key) return false;
  try {
    await request(key, method, path, body);
    showMessage('ok', done);
    return true;
  } catch (err) {
    if (err instanceof Unauthorized) {
      refused();
      return false;
    }
    const detail = err instanceof ApiError ? `${err.code}: ${err.message}` : 'the controller could not be reached';
    showMessage('error', `${title} failed: ${detail}`);
    return err;
  }
}

const BLADE_ACTIONS = {
  cordon: ['Cordon blade', (n) => `Cordon ${n}? No new sessions will be placed on it; running ones continue.`, 'Cordon'],
  uncordon: ['Uncordon blade', (n) => `Uncordon ${n}? New sessions may be placed on it again.`, 'Uncordon'],
  drain: ['Drain blade', (n) => `Drain ${n}? No new sessions will be placed on it; it is empty once its sessions end.`, 'Drain'],
};

bladesBody.addEventListener('click', async (e) => {
  const b = e.target instanceof HTMLElement ? e.target.closest('button[data-action]') : null;
  const name = b?.closest('tr')?.dataset.blade;
  if (!b || name === undefined) return;
  const path = `blades/${encodeURIComponent(name)}`;
  const action = b.dataset.action;
  if (BLADE_ACTIONS[action]) {
    const [title, text, label] = BLADE_ACTIONS[action];
    await act(title, text(name), label, 'POST', `${path}/${action}`, undefined, `${label}: ${name} done.`);
  } else if (action === 'remove') {
    const sessionsOn = blades.get(name)?.sessions ?? 0;
    const result = await act('Remove blade', `Remove ${name} from the controller? It will no longer be watched or used.`,
      'Remove', 'DELETE', path, undefined, `Removed ${name}.`);
    if (result instanceof ApiError && result.status === 409) {
      await act('Remove blade with live sessions', `${name} still has live sessions (${sessionsOn}). Remove it anyway? `
        + 'Its desktops are ended and their viewers disconnected.', 'Remove anyway', 'DELETE', `${path}?force=true`,
        undefined, `Removed ${name} and ended its sessions.`);
    }
  }
});

sessionsBody.addEventListener('click', async (e) => {
  const b = e.target instanceof HTMLElement ? e.target.closest('button[data-action="end"]') : null;
  const id = b?.closest('tr')?.dataset.sessionId;
  if (!b || !id) return;
  const s = sessions.get(id);
  const who = s ? `${s.username} on ${s.blade ?? 'no blade yet'}` : id;
  await act('End session', `End the desktop session of ${who}? Its viewers are disconnected and unsaved work is lost.`,
    'End session', 'DELETE', `sessions/${encodeURIComponent(id)}`, undefined, `Ended the session of ${who}.`);
});

$('register').addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = $('register-name').value.trim();
  const address = $('register-address').value.trim();
  if (!name || !address) return;
  const ok = await act('Register blade', `Register blade ${name} at ${address}?`, 'Register', 'POST', 'blades',
    { name, address }, `Registered ${name}.`);
  if (ok === true) {
    $('register-name').value = '';
    $('register-address').value = '';
  }
});

$('filters').addEventListener('submit', (e) => e.preventDefault());
let filterTimer = 0;
$('filters').addEventListener('input', () => {
  renderBlades();
  renderSessions();
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => {
    historyOffset = 0;
    void loadHistory();
  }, 300);
});
$('history-prev').addEventListener('click', () => {
  historyOffset = Math.max(0, historyOffset - HISTORY_PAGE);
  void loadHistory();
});
$('history-next').addEventListener('click', () => {
  if (historyNext === null) return;
  historyOffset = historyNext;
  void loadHistory();
});

function signedOut(message) {
  stream?.abort();
  stream = null;
  clearTimeout(retryTimer);
  clearInterval(ticker);
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
  setStatus('loading', 'Connecting…');
  connect();
  void loadHistory();
  // Ages and "last seen" are relative to now: redraw them even when nothing changes.
  clearInterval(ticker);
  ticker = setInterval(() => {
    renderBlades();
    renderSessions();
  }, 10_000);
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
