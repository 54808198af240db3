/**
 * The invariant every fault scenario ends with (checked against real processes, the store file and the API):
 *   1. every Xvnc of the scenario's users belongs to exactly one live session in the store;
 *   2. no user has two desktops;
 *   3. no live session points at a dead desktop for more than 1 s (`deadWithinMs`): watched for `watchMs`, every
 *      50 ms, from the store file and /proc; a desktop first seen dead at t must be ended in the store (its own
 *      ended_at) by t + 1 s. A desktop that died before the watch began is timed from the first sample, so the
 *      bound is checked from the moment the check can know it, never from a generous wait;
 *   4. the store passes SQLite's integrity check;
 *   5. the controller's resident memory is back near the baseline taken before the scenario.
 * "The machine" is scoped to the scenario's users: other suites may run desktops of their own users meanwhile.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { expect } from 'vitest';
import { SQLITE_FILE_NAME } from '../../controller/store/index.js';
import { alive, waitFor } from './agent-process.js';
import { api, xvncPidsOf } from './controller-checks.js';
import type { ControllerHandle } from './controller-process.js';
import { idsOf } from './users.js';

/** Resident set size of a process in bytes, from /proc (null if it is gone). */
export function rssBytes(pid: number): number | null {
  try {
    const m = /^VmRSS:\s*(\d+)\s*kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

export interface InvariantOptions {
  /** A controller answering the API (any one, when several share the store). */
  controller: ControllerHandle;
  /** The usernames this scenario used. */
  users: readonly string[];
  /** SQLite data dir to integrity-check (omit for MongoDB). */
  dataDir?: string;
  /** Controller pid and its RSS before the scenario: checked to come back within `rssSlackBytes`. */
  rss?: { pid: number; baseline: number };
  rssSlackBytes?: number;
  /** How long a session may still look live after its desktop is seen dead (default 1000 ms). */
  deadWithinMs?: number;
  /** How long to watch for live sessions pointing at dead desktops (default 2000 ms). */
  watchMs?: number;
}

interface LiveSession {
  id: string;
  username: string;
  state: string;
  blade: string;
}

async function liveSessions(c: ControllerHandle): Promise<LiveSession[]> {
  const r = await api(c, 'GET', '/api/v1/sessions?state=live&limit=1000');
  expect(r.status, `GET sessions: ${r.text}`).toBe(200);
  return r.body.sessions as LiveSession[];
}

/** Pid of each live session's Xvnc, straight from the store file (the API never shows pids). */
function storePids(dataDir: string): Map<string, number | null> {
  const db = new Database(join(dataDir, SQLITE_FILE_NAME), { readonly: true, fileMustExist: true });
  try {
    const rows = db.prepare(`SELECT id, pid FROM sessions WHERE state != 'ended'`).all() as { id: string; pid: number | null }[];
    return new Map(rows.map((r) => [r.id, r.pid]));
  } finally {
    db.close();
  }
}

interface StoreRow {
  id: string;
  username: string;
  state: string;
  pid: number | null;
  ended_at: number | null;
}

function storeRows(dataDir: string, ids?: readonly string[]): StoreRow[] {
  const db = new Database(join(dataDir, SQLITE_FILE_NAME), { readonly: true, fileMustExist: true });
  try {
    if (ids) {
      const q = db.prepare(`SELECT id, username, state, pid, ended_at FROM sessions WHERE id = ?`);
      return ids.map((id) => q.get(id) as StoreRow | undefined).filter((r): r is StoreRow => r !== undefined);
    }
    return db.prepare(`SELECT id, username, state, pid, ended_at FROM sessions WHERE state = 'running'`).all() as StoreRow[];
  } finally {
    db.close();
  }
}

/**
 * Watches the store and /proc for `watchMs`: returns each running session whose desktop was seen dead, with how long
 * after that first sight the store ended it (by its own ended_at), or null if it never did within the watch.
 */
async function watchDeadDesktops(dataDir: string, users: readonly string[], watchMs: number, boundMs: number):
  Promise<{ id: string; username: string; lateMs: number | null }[]> {
  const seenDead = new Map<string, { at: number; username: string }>();
  const end = Date.now() + watchMs;
  for (;;) {
    const now = Date.now();
    for (const r of storeRows(dataDir)) {
      if (!users.includes(r.username) || seenDead.has(r.id)) continue;
      if (r.pid === null || !alive(r.pid)) seenDead.set(r.id, { at: now, username: r.username });
    }
    const pending = [...seenDead].filter(([, d]) => now - d.at <= boundMs + 200);
    if (now >= end && pending.length === 0) break;
    if (now >= end + boundMs + 500) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const rows = new Map(storeRows(dataDir, [...seenDead.keys()]).map((r) => [r.id, r]));
  return [...seenDead].map(([id, d]) => {
    const r = rows.get(id);
    return { id, username: d.username, lateMs: r?.state === 'ended' && r.ended_at !== null ? r.ended_at - d.at : null };
  });
}

/** Runs the whole invariant; fails the test with what broke. */
export async function checkInvariants(o: InvariantOptions): Promise<void> {
  const uids = new Map(o.users.map((u) => [idsOf(u).uid, u]));
  const uidSet = new Set(uids.keys());
  const deadWithinMs = o.deadWithinMs ?? 1_000;

  // 3. A running session whose desktop is dead is ended within the bound, by the store's own timestamp.
  if (o.dataDir) {
    const dead = await watchDeadDesktops(o.dataDir, o.users, o.watchMs ?? 2_000, deadWithinMs);
    const late = dead.filter((d) => d.lateMs === null || d.lateMs > deadWithinMs);
    expect(late.map((d) => `${d.username}: ${d.lateMs === null ? 'still live' : `ended ${d.lateMs} ms`} after its `
      + 'desktop was seen dead'), `live sessions pointing at a dead desktop for more than ${deadWithinMs} ms`).toEqual([]);
  }

  // 1 and 2. Desktops and sessions match one to one, per user, once starts and stops in flight have settled
  // (orphans are stopped after the controller's grace).
  await waitFor(async () => {
    const live = (await liveSessions(o.controller)).filter((s) => o.users.includes(s.username));
    if (live.some((s) => s.state !== 'running')) return false;
    const xvnc = xvncPidsOf(uidSet);
    if (xvnc.length !== live.length) return false;
    if (!o.dataDir) return true;
    const pids = storePids(o.dataDir);
    const owned = new Set(live.map((s) => pids.get(s.id)));
    return xvnc.every((pid) => owned.has(pid));
  }, 'every Xvnc of the scenario to belong to exactly one live session', 30_000).catch(async (err: unknown) => {
    const live = (await liveSessions(o.controller)).filter((s) => o.users.includes(s.username));
    throw new Error(`${(err as Error).message}: ${xvncPidsOf(uidSet).length} Xvnc, live sessions `
      + JSON.stringify(live.map((s) => `${s.username}:${s.state}@${s.blade}`)));
  });
  const perUser = new Map<string, number>();
  for (const pid of xvncPidsOf(uidSet)) {
    const uid = Number(/^Uid:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
    const u = uids.get(uid)!;
    perUser.set(u, (perUser.get(u) ?? 0) + 1);
  }
  expect([...perUser].filter(([, n]) => n > 1), 'users with two desktops').toEqual([]);

  // 4. The store file is sound.
  if (o.dataDir) {
    const db = new Database(join(o.dataDir, SQLITE_FILE_NAME), { readonly: true, fileMustExist: true });
    try {
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
    } finally {
      db.close();
    }
  }

  // 5. Memory comes back: the scenario's buffers and sockets were released (a generous bound: V8 keeps some heap).
  if (o.rss) {
    const { pid, baseline } = o.rss;
    const slack = o.rssSlackBytes ?? 96 * 1024 * 1024;
    await waitFor(() => (rssBytes(pid) ?? 0) <= baseline + slack,
      `controller RSS back within ${slack >> 20} MiB of its ${baseline >> 20} MiB baseline`, 20_000)
      .catch((err: unknown) => {
        throw new Error(`${(err as Error).message} (now ${(rssBytes(pid) ?? 0) >> 20} MiB)`);
      });
  }
}
