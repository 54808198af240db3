/** Reads what the kernel says about a process, to tell a live session from a dead or recycled pid. */
import { readFileSync, readlinkSync } from 'node:fs';
import { basename } from 'node:path';

export interface ProcStat {
  /** One-letter state; Z (zombie) and X (dead) count as gone. */
  state: string;
  pgrp: number;
  session: number;
  /** Field 22: clock ticks after boot at which the process started. With the pid it names one process for good. */
  startTime: number;
}

/** /proc/PID/stat, or undefined if there is no such process. */
export function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  // comm (field 2) may contain spaces and parentheses: split after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); field N is rest[N - 3].
  return { state: rest[0]!, pgrp: Number(rest[2]), session: Number(rest[3]), startTime: Number(rest[19]) };
}

/** Real uid of a process (first value of the Uid: line of /proc/PID/status), or undefined. */
export function readProcUid(pid: number): number | undefined {
  try {
    const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Base name of the process's executable, or undefined if unreadable (gone, or a kernel thread). */
export function readProcExeName(pid: number): string | undefined {
  try {
    return basename(readlinkSync(`/proc/${pid}/exe`)).replace(/ \(deleted\)$/, '');
  } catch {
    return undefined;
  }
}

/** True if `pid` is running and is still the process that started at `startTime`. */
export function isSameProcess(pid: number, startTime: number): boolean {
  if (!Number.isInteger(pid) || pid <= 1) return false;
  const st = readProcStat(pid);
  return st !== undefined && st.state !== 'Z' && st.state !== 'X' && st.startTime === startTime;
}
