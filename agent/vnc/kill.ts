/** Signals only processes proven to be a session's own, so a recycled pid is never hit. */
import { readdir } from 'node:fs/promises';
import { isSameProcess, readProcCmdline, readProcStat, readProcUid } from './proc.js';

function trySignal(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

/** Signals `pid` if it is still the process that started at `startTime`. */
export async function signalProcess(pid: number, startTime: number, signal: NodeJS.Signals): Promise<void> {
  if (await isSameProcess(pid, startTime)) trySignal(pid, signal);
}

async function procPids(): Promise<number[]> {
  return (await readdir('/proc')).filter((n) => /^\d+$/.test(n)).map(Number);
}

/**
 * Pids of live processes in session `sid` owned by `uid`. The session script runs in its own session (setsid), so
 * this finds what it started even after it exited; a reused id would also need the same owner to match.
 */
export async function sessionMembers(sid: number, uid: number): Promise<number[]> {
  return stillMembers(await procPids(), sid, uid);
}

/**
 * Which of `pids` are live members of session `sid` owned by `uid`. Given the processes found before, a look at those
 * only, where sessionMembers reads every process on the blade.
 */
export async function stillMembers(pids: readonly number[], sid: number, uid: number): Promise<number[]> {
  const live: number[] = [];
  for (const pid of pids) {
    const st = await readProcStat(pid);
    if (st && st.session === sid && st.state !== 'Z' && (await readProcUid(pid)) === uid) live.push(pid);
  }
  return live;
}

/** Signals each of `pids` (members found by sessionMembers or stillMembers), ignoring those already gone. */
export function signalPids(pids: readonly number[], signal: NodeJS.Signals): void {
  for (const pid of pids) trySignal(pid, signal);
}

/** Signals every process of session `sid` owned by `uid`; returns their pids. */
export async function signalSession(sid: number, uid: number, signal: NodeJS.Signals): Promise<number[]> {
  const pids = await sessionMembers(sid, uid);
  signalPids(pids, signal);
  return pids;
}

/**
 * Kills (SIGKILL) every process of `uid` whose argv names something inside `dir`, and every process in their
 * sessions: a desktop the agent spawned for a start it never finished recording (the agent died in between). Xvnc's
 * argv names its runtime directory (-rfbauth, -auth). Returns the pids it found.
 */
export async function killProcessesUsing(dir: string, uid: number): Promise<number[]> {
  const prefix = `${dir}/`;
  const found: number[] = [];
  for (const pid of await procPids()) {
    if ((await readProcUid(pid)) !== uid) continue;
    const argv = await readProcCmdline(pid);
    if (argv?.some((a) => a.startsWith(prefix))) found.push(pid);
  }
  for (const pid of found) {
    const st = await readProcStat(pid);
    trySignal(pid, 'SIGKILL');
    if (st && st.session === pid) await signalSession(pid, uid, 'SIGKILL');
  }
  return found;
}
