/**
 * Reads what the kernel says about a process, to tell a live session from a dead or recycled pid. Asynchronous: the
 * reaper and adoption read /proc off the event loop's thread, so a call never waits behind a process scan.
 */
import { readFile, readlink } from 'node:fs/promises';
import { basename } from 'node:path';

export interface ProcStat {
  /** One-letter state; Z (zombie) and X (dead) count as gone. */
  state: string;
  pgrp: number;
  session: number;
  /** Field 22: clock ticks after boot at which the process started. With the pid it names one process for good. */
  startTime: number;
}

/** Parses the text of /proc/PID/stat. */
export function parseProcStat(text: string): ProcStat {
  // comm (field 2) may contain spaces and parentheses: split after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); field N is rest[N - 3].
  return { state: rest[0]!, pgrp: Number(rest[2]), session: Number(rest[3]), startTime: Number(rest[19]) };
}

/** /proc/PID/stat, or undefined if there is no such process. */
export async function readProcStat(pid: number): Promise<ProcStat | undefined> {
  try {
    return parseProcStat(await readFile(`/proc/${pid}/stat`, 'latin1'));
  } catch {
    return undefined;
  }
}

/** Real uid of a process (first value of the Uid: line of /proc/PID/status), or undefined. */
export async function readProcUid(pid: number): Promise<number | undefined> {
  try {
    const m = /^Uid:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Base name of the process's executable, or undefined if unreadable (gone, or a kernel thread). */
export async function readProcExeName(pid: number): Promise<string | undefined> {
  try {
    return basename(await readlink(`/proc/${pid}/exe`)).replace(/ \(deleted\)$/, '');
  } catch {
    return undefined;
  }
}

/** The process's argv, or undefined. */
export async function readProcCmdline(pid: number): Promise<string[] | undefined> {
  try {
    return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter((a) => a !== '');
  } catch {
    return undefined;
  }
}

/** True if `pid` is running and is still the process that started at `startTime`. */
export async function isSameProcess(pid: number, startTime: number): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 1) return false;
  const st = await readProcStat(pid);
  return st !== undefined && st.state !== 'Z' && st.state !== 'X' && st.startTime === startTime;
}
