/** Signals only processes proven to be a session's own, so a recycled pid is never hit. */
import { readdirSync } from 'node:fs';
import { isSameProcess, readProcStat, readProcUid } from './proc.js';

function trySignal(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

/** Signals `pid` if it is still the process that started at `startTime`. */
export function signalProcess(pid: number, startTime: number, signal: NodeJS.Signals): void {
  if (isSameProcess(pid, startTime)) trySignal(pid, signal);
}

/**
 * Pids of live processes in session `sid` owned by `uid`. The session script runs in its own session (setsid), so
 * this finds what it started even after it exited; a reused id would also need the same owner to match.
 */
export function sessionMembers(sid: number, uid: number): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    const st = readProcStat(pid);
    if (st && st.session === sid && st.state !== 'Z' && readProcUid(pid) === uid) found.push(pid);
  }
  return found;
}

/** Signals every process of session `sid` owned by `uid`; returns how many were signalled. */
export function signalSession(sid: number, uid: number, signal: NodeJS.Signals): number {
  const pids = sessionMembers(sid, uid);
  for (const pid of pids) trySignal(pid, signal);
  return pids.length;
}
