/**
 * Every process the agent starts is spawned by a small spawner process, never by the agent's own threads.
 *
 * Node's spawn() is synchronous until the child has exec'd: libuv fork()s, then waits on a pipe for the exec. On a
 * blade busy starting desktops the forked child waits for a CPU before it can exec, and the whole event loop waits
 * with it. Measured with `npm run bench:status` (50 concurrent StartSession, 2 cores): spawn() held the agent's loop
 * for 51 ms per getent and 64 ms per setpriv at the median, 11.5 s of a 15 s burst, and GetStatus answered after up
 * to 6 s. Spawning from worker threads of the agent is not enough: fork() write-locks the address space of the whole
 * process while it copies it, so the event loop's own page faults (every GC) wait behind a forking thread that the
 * scheduler has preempted (the loop still stalled for 0.5 to 2.5 s).
 *
 * So spawner processes (a few, started on first use, each a bare `node -e` with a small heap) fork and wait instead;
 * the agent only exchanges messages with them. A spawn waits for a CPU, not on one, so several spawners keep a burst
 * of starts from queueing behind each other's waits. A child's stdio fds that the agent holds (a desktop's log) are
 * opened by the spawner through /proc/AGENT_PID/fd/N, which names the agent's open file itself, never a path a user
 * could swap. Spawners exit when the agent does; the desktops they started keep running (they are in their own
 * sessions) and the agent's reaper watches them through /proc as it does after a restart. The spawner's code is plain
 * JavaScript text, so the same spawner runs from dist/ and under the test runner's TypeScript loader.
 */
import { EventEmitter } from 'node:events';
import { spawn, type ChildProcess } from 'node:child_process';
import { defaults } from '../config.js';

/** Where a child's stdin/stdout/stderr/fd 3 go: nowhere, a pipe to the agent, or an fd the agent holds open. */
export type StdioSlot = 'ignore' | 'pipe' | number;

export interface SpawnRequest {
  file: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
  /** Its own session (setsid), so it outlives the agent. */
  detached: boolean;
  /** stdin, stdout, stderr, and optionally fd 3. A stdin pipe carries `input`; an fd 3 pipe is read as 'data'. */
  stdio: [StdioSlot, StdioSlot, StdioSlot] | [StdioSlot, StdioSlot, StdioSlot, StdioSlot];
  /** Bytes written to a piped stdin, then closed (never argv: it may be a secret). */
  input?: Buffer | undefined;
  /** With stdout piped: keep at most this many bytes of it, given with 'close'. */
  maxOutput?: number | undefined;
}

interface SpawnerEvents {
  /** A chunk from the child's piped fd 3. */
  data: [Buffer];
  /** The child exited (its pipes may still be open). */
  exit: [number | null, NodeJS.Signals | null];
  /** The child exited and its piped stdout ended: what it wrote (up to maxOutput). */
  close: [number | null, NodeJS.Signals | null, string];
  /** The child could not be spawned, or a later error on it. */
  error: [Error];
}

/** A child process started by a spawner: what the agent needs of a ChildProcess. */
export class SpawnedProcess extends EventEmitter<SpawnerEvents> {
  pid: number | undefined;
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;

  constructor(private readonly spawner: Spawner, readonly id: number, readonly detached: boolean) {
    super();
  }

  /** Signals the child unless it has been seen to exit (the spawner checks again before it signals). */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.exitCode === null && this.signalCode === null) this.spawner.post({ op: 'kill', id: this.id, signal });
  }

  /** Closes the agent's end of a piped fd 3 (stops 'data'). */
  closePipe(): void {
    this.spawner.post({ op: 'close-pipe', id: this.id });
  }
}

/** The spawner's code. Messages in: spawn, kill, close-pipe. Messages out: spawned, data, exit, close, error. */
const SPAWNER_SOURCE = `
'use strict';
const { spawn } = require('node:child_process');
const { closeSync, constants, openSync } = require('node:fs');
// The nice value the agent was started with, if the agent raised its own (agent/priority.ts): what the spawner
// starts, desktops and helpers alike, runs at it, so the spawner goes back to it before it forks anything. (In the
// environment, not argv: node would take a negative number for one of its own options.)
const childNice = process.env.VNCDISPATCH_CHILD_NICE;
if (childNice !== undefined) { try { require('node:os').setPriority(Number(childNice)); } catch {} }
const children = new Map();
const post = (m) => { if (process.connected) process.send(m); };
// The agent is gone (exited, killed or restarting): so is its spawner; what it started keeps running.
process.on('disconnect', () => process.exit(0));
// A message to an agent that has just gone fails with EPIPE; the 'disconnect' above ends the spawner.
process.on('error', () => {});
process.on('message', (m) => {
  const child = children.get(m.id);
  if (m.op === 'kill') {
    if (child && child.exitCode === null && child.signalCode === null) { try { child.kill(m.signal); } catch {} }
    return;
  }
  if (m.op === 'close-pipe') {
    if (child && child.stdio[3]) child.stdio[3].destroy();
    return;
  }
  let c;
  const opened = [];
  try {
    const stdio = m.stdio.map((x) => {
      if (typeof x !== 'number') return x;
      const fd = openSync('/proc/' + m.agentPid + '/fd/' + x, constants.O_WRONLY | constants.O_APPEND | constants.O_NOCTTY);
      opened.push(fd);
      return fd;
    });
    c = spawn(m.file, m.args, { cwd: m.cwd, env: m.env, detached: m.detached, stdio });
  } catch (err) {
    post({ id: m.id, ev: 'error', message: String(err && err.message), code: err && err.code });
    return;
  } finally {
    for (const fd of opened) closeSync(fd);
  }
  children.set(m.id, c);
  let out = '';
  c.on('error', (err) => post({ id: m.id, ev: 'error', message: err.message, code: err.code }));
  if (c.stdout) {
    c.stdout.on('data', (chunk) => {
      if (out.length < m.maxOutput) out += chunk.toString('utf8').slice(0, m.maxOutput - out.length);
    });
  }
  if (c.stdio[3]) {
    c.stdio[3].on('error', () => {});
    c.stdio[3].on('data', (chunk) => post({ id: m.id, ev: 'data', chunk }));
  }
  if (c.stdin) {
    c.stdin.on('error', () => {});
    c.stdin.end(m.input ? Buffer.from(m.input) : undefined);
  }
  c.on('exit', (code, signal) => post({ id: m.id, ev: 'exit', code, signal }));
  c.on('close', (code, signal) => {
    children.delete(m.id);
    post({ id: m.id, ev: 'close', code, signal, out });
  });
  if (c.pid !== undefined) post({ id: m.id, ev: 'spawned', pid: c.pid });
  if (m.detached) c.unref();
});
`;

type FromSpawner =
  | { id: number; ev: 'spawned'; pid: number }
  | { id: number; ev: 'data'; chunk: Uint8Array }
  | { id: number; ev: 'exit'; code: number | null; signal: NodeJS.Signals | null }
  | { id: number; ev: 'close'; code: number | null; signal: NodeJS.Signals | null; out: string }
  | { id: number; ev: 'error'; message: string; code?: string };

type ToSpawner =
  | ({ op: 'spawn'; id: number; agentPid: number } & Omit<SpawnRequest, 'maxOutput'> & { maxOutput: number })
  | { op: 'kill'; id: number; signal: NodeJS.Signals }
  | { op: 'close-pipe'; id: number };

/** What `ps` shows for a spawner process. */
export const SPAWNER_ARGV0 = 'vncdispatch-spawner';

/** At most this many spawner processes (--spawners; set by startSpawners). */
let maxSpawners: number = defaults.spawners;
/** The nice value of the spawners and what they start, when the agent raised its own (set by startSpawners). */
let childNice: number | undefined;

class Spawner {
  private readonly child: ChildProcess;
  private readonly children = new Map<number, { proc: SpawnedProcess; started: (err?: Error) => void }>();
  private nextId = 1;
  /** Set once the spawner has gone (it never should): the next spawn uses another. */
  dead = false;
  /** Spawns posted and not yet answered: the spawner is waiting in fork/exec for these. */
  starting = 0;

  constructor() {
    // A small heap: the spawner holds a few messages at a time, and fork() copies its address space.
    this.child = spawn(process.execPath, ['--max-old-space-size=32', '-e', SPAWNER_SOURCE], {
      argv0: SPAWNER_ARGV0, cwd: '/', stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...(childNice !== undefined && { VNCDISPATCH_CHILD_NICE: String(childNice) }) },
      serialization: 'advanced' });
    this.idle();
    // Node emits every message of one read in a row, so a quick helper's 'spawned', 'exit' and 'close' can come
    // together: everything after 'spawned' waits until the code that awaited the spawn has attached its listeners.
    this.child.on('message', (m: FromSpawner) => {
      if (m.ev === 'spawned') this.onMessage(m);
      else setImmediate(() => this.onMessage(m));
    });
    // The spawner's code handles its own errors; if it ever dies, every child still waiting hears why.
    this.child.on('error', (err) => this.failAll(err));
    this.child.on('exit', () => {
      this.dead = true;
      this.failAll(new Error('the spawner process exited'));
    });
  }

  /**
   * While a spawn or a helper's run is waiting on this spawner, it keeps the process alive (a process with nothing
   * else to do would otherwise exit in the middle of, say, its start-up clean-up); idle, it never does.
   */
  private busy(): void {
    this.child.ref();
    this.child.channel?.ref();
  }

  private idle(): void {
    this.child.unref();
    this.child.channel?.unref();
  }

  private waited = 0;

  private settle(): void {
    if (this.waited > 0 && --this.waited === 0) this.idle();
  }

  post(m: ToSpawner): void {
    if (this.child.connected) this.child.send(m);
  }

  spawn(req: SpawnRequest): Promise<SpawnedProcess> {
    const id = this.nextId++;
    const proc = new SpawnedProcess(this, id, req.detached);
    return new Promise((resolve, reject) => {
      this.starting++;
      if (this.waited++ === 0) this.busy();
      this.children.set(id, { proc, started: (err) => {
        this.starting--;
        // A detached child (a desktop) is waited for no longer once it runs; a helper until it closes.
        if (err || req.detached) this.settle();
        if (err) reject(err);
        else resolve(proc);
      } });
      const { maxOutput, input, ...rest } = req;
      this.post({ op: 'spawn', id, agentPid: process.pid, ...rest, maxOutput: maxOutput ?? 64 * 1024,
        ...(input && { input }) });
    });
  }

  private onMessage(m: FromSpawner): void {
    const entry = this.children.get(m.id);
    if (!entry) return;
    const { proc } = entry;
    switch (m.ev) {
      case 'spawned':
        proc.pid = m.pid;
        entry.started();
        break;
      case 'data':
        proc.emit('data', Buffer.from(m.chunk));
        break;
      case 'exit':
        proc.exitCode = m.code;
        proc.signalCode = m.signal;
        proc.emit('exit', m.code, m.signal);
        break;
      case 'close':
        this.children.delete(m.id);
        if (!proc.detached) this.settle();
        proc.emit('close', m.code, m.signal, m.out);
        break;
      case 'error': {
        const err = Object.assign(new Error(m.message), m.code === undefined ? {} : { code: m.code });
        if (proc.pid === undefined) {
          this.children.delete(m.id);
          entry.started(err);
        } else if (proc.listenerCount('error') > 0) {
          proc.emit('error', err);
        }
        break;
      }
    }
  }

  private failAll(err: Error): void {
    for (const [id, { proc, started }] of this.children) {
      this.children.delete(id);
      if (proc.pid === undefined) started(err);
      else if (proc.listenerCount('error') > 0) proc.emit('error', err);
    }
    this.waited = 0;
    this.idle();
  }
}

let spawners: Spawner[] = [];

/**
 * Starts `count` spawners now (the agent does at start-up, with --spawners), so the first desktops do not wait for
 * them; later spawns use at most that many. With `nice`, the spawners and everything they start run at that nice
 * value (the one the agent was started with, before it raised its own: agent/priority.ts).
 */
export function startSpawners(count: number, nice?: number): void {
  maxSpawners = count;
  childNice = nice;
  spawners = spawners.filter((s) => !s.dead);
  while (spawners.length < maxSpawners) spawners.push(new Spawner());
}

/**
 * Spawns a process through a spawner (an idle one, else a new one, else the least busy); resolves once it runs
 * (with its pid), rejects if it could not start.
 */
export function spawnOffLoop(req: SpawnRequest): Promise<SpawnedProcess> {
  spawners = spawners.filter((s) => !s.dead);
  let spawner = spawners.find((s) => s.starting === 0);
  if (!spawner && spawners.length < maxSpawners) spawners.push(spawner = new Spawner());
  spawner ??= spawners.reduce((a, b) => (b.starting < a.starting ? b : a));
  return spawner.spawn(req);
}
