/**
 * One service `vncdispatch up` runs (the agent or the controller): a node program from dist/, its log lines relayed
 * to the up's output, its `listening` line awaited, and its end observed.
 *
 * A child must never outlive `up`, even when `up` itself is killed with SIGKILL and runs no code at all. So every
 * child is started through `setpriv --pdeathsig TERM` (util-linux, which the agent already needs): the kernel sends
 * the child SIGTERM the moment `up` dies (PR_SET_PDEATHSIG, kept across setpriv's exec of node), and both daemons
 * shut down cleanly on SIGTERM. That needs no code in the daemons (a parent-pid watch would put a development-only
 * timer into both), and it covers what a process group cannot: nobody is left to signal a group once `up` is gone.
 * The children still get a process group of their own, so a Ctrl-C on the terminal reaches only `up`, which then
 * ends the desktops through the controller before it stops the services.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { UpOutput } from './up-output.js';

const dist = new URL('../../', import.meta.url).pathname; // dist/ (or the source root under a TS runner)

export class UpChild {
  readonly name: string;
  readonly #child: ChildProcess;
  /** Resolves with the exit code (or the signal's name) once the process has exited. */
  readonly exited: Promise<number | string>;
  #exited = false;
  /** How long the child gets to exit after SIGTERM before it is killed. */
  readonly #stopGraceMs: number;
  /** Resolves with the address from the child's `listening` line; rejects if it exits before. */
  readonly listening: Promise<string>;

  constructor(name: string, script: string, args: readonly string[], nodeFlags: readonly string[], output: UpOutput,
    stopGraceMs: number, env: Readonly<Record<string, string>> = {}) {
    this.name = name;
    this.#stopGraceMs = stopGraceMs;
    this.#child = spawn('setpriv', ['--pdeathsig', 'TERM', '--', process.execPath, ...nodeFlags, join(dist, script), ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      env: { ...process.env, ...env },
    });
    // setpriv execs node, so this pid is the service's own.
    if (this.#child.pid !== undefined) output.log.info({ child: name, childPid: this.#child.pid }, `${name} started`);
    this.exited = new Promise((resolve) => {
      this.#child.once('exit', (code, signal) => {
        this.#exited = true;
        resolve(code ?? signal ?? 'unknown');
      });
      // spawn failed (setpriv missing): no 'exit' follows.
      this.#child.once('error', (err) => {
        output.log.error({ err, child: name }, `could not start the ${name}`);
        this.#exited = true;
        resolve('spawn failed');
      });
    });
    this.listening = new Promise((resolve, reject) => {
      let address: string | null = null;
      createInterface({ input: this.#child.stdout! }).on('line', (line) => {
        output.line(name, line);
        if (address !== null) return;
        const found = listeningAddress(line);
        if (found !== null) {
          address = found;
          resolve(found);
        }
      });
      createInterface({ input: this.#child.stderr! }).on('line', (line) => output.line(name, line));
      void this.exited.then((how) => reject(new Error(`the ${name} exited (${how}) before it was listening`)));
    });
    // Observed by whoever awaits it; never an unhandled rejection when nobody does (start-up already failed).
    this.listening.catch(() => {});
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** SIGTERM, then SIGKILL after the grace period; resolves once the process has exited. */
  async stop(): Promise<void> {
    if (this.#exited) return;
    this.#child.kill('SIGTERM');
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), this.#stopGraceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/** The `address` of a pino `listening` line, or null. */
function listeningAddress(line: string): string | null {
  try {
    const rec = JSON.parse(line) as { msg?: unknown; address?: unknown };
    return rec.msg === 'listening' && typeof rec.address === 'string' ? rec.address : null;
  } catch {
    return null;
  }
}
