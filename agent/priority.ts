/**
 * The agent runs at a higher CPU priority than everything it starts (--agent-nice), so it keeps answering GetStatus,
 * the relay and StopSession while the blade is saturated by the desktops it starts.
 *
 * Why: with 50 desktops starting at once on 2 cores, the agent's main thread had a CPU for 0.7 s of a 26 s burst and
 * waited on the run queue for 23 s (/proc/PID/task/PID/schedstat), so GetStatus took up to 1.9 s although the agent's
 * own work per start is a few milliseconds. The agent was not busy; it was outnumbered.
 *
 * Why raise the agent rather than lower the desktops: the agent uses little CPU (under 2 s of CPU for a whole burst of
 * 50 starts), so its precedence costs the desktops almost nothing, and the desktops keep their priority against
 * everything else on the blade. Lowering every desktop (tried first: nice 10 for the desktops and their groups) met
 * the target as well, but made users' desktops yield to any other process on the blade.
 *
 * Two levers, because Linux weighs CPU time at two levels:
 * - The process's nice value, which counts among processes in one scheduling group (a systemd unit with the cpu
 *   controller on, or autogroup off). On Linux it belongs to a thread: it is set on the main thread before the agent
 *   starts any thread or process of its own, so libuv's pool (created on first use) inherits it.
 * - The autogroup's nice value. With CONFIG_SCHED_AUTOGROUP (on in Debian's kernels) and processes in the root CPU
 *   cgroup, each session is a scheduling group, and groups share the CPUs by the group's nice value whatever their
 *   processes' are: each desktop (in a session of its own) would weigh as much as the whole agent. So the agent raises
 *   its session's group too, when the session is its own (systemd starts every service with setsid; by hand,
 *   `setsid vncdispatch-agent`). A session shared with a shell or a test runner is left alone: raising it would
 *   raise them too.
 *
 * Everything the agent starts goes back to the priority the agent was started with: the spawners reset their own
 * nice value before they fork anything (spawner.ts), and each desktop gets a session of its own, so a group of its
 * own at the default nice value.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';

export interface PriorityOutcome {
  /** The nice value the agent was started with: what everything it starts runs at. */
  startedNice: number;
  /** The nice value of the agent's main thread now. */
  nice: number;
  /**
   * Its autogroup: `raised` to `nice`; `shared` with the session that started it (left alone); `absent` (no
   * autogroup in this kernel, or --agent-nice 0); `failed` (the kernel refused; the message says why).
   */
  group: 'raised' | 'shared' | 'absent' | 'failed';
  /** Why the process or group could not be raised, if it could not. */
  error?: string;
}

/** True if this process leads its session (its autogroup is its own). */
export function leadsItsSession(): boolean {
  const stat = readFileSync('/proc/self/stat', 'latin1');
  // Field 6 (session); comm (field 2) may hold spaces and parentheses, so count after the last ')'.
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]) === process.pid;
}

/**
 * Raises the agent's own priority to nice value `nice` (-20 to 0; 0 changes nothing, and an agent already started
 * above it stays there). Call it first thing, before any other thread or child process exists. Never throws: an
 * agent that cannot raise itself still works, and the outcome says so for the log.
 */
export function raiseOwnPriority(nice: number): PriorityOutcome {
  const startedNice = getPriority();
  const target = Math.min(nice, startedNice);
  if (nice === 0) return { startedNice, nice: startedNice, group: 'absent' };
  let error: string | undefined;
  try {
    if (target !== startedNice) setPriority(target);
  } catch (err) {
    error = (err as Error).message;
  }
  const now = getPriority();
  let group: PriorityOutcome['group'] = 'absent';
  try {
    if (!leadsItsSession()) group = 'shared';
    else {
      writeFileSync('/proc/self/autogroup', String(target));
      group = 'raised';
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') {
      group = 'failed';
      error ??= (err as Error).message;
    }
  }
  return { startedNice, nice: now, group, ...(error !== undefined && { error }) };
}
