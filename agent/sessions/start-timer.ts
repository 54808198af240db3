/**
 * Where a StartSession's time went, phase by phase, for its "session started" log line: the figure an operator
 * needs to tell a slow NSS (lookup), a busy blade (queue: waiting for a start slot), a slow disk (intent, record) or a slow X server (xvnc) apart.
 */
import { performance } from 'node:perf_hooks';

export type StartPhase = 'lookup' | 'home' | 'queue' | 'intent' | 'files' | 'xvnc' | 'session' | 'settle' | 'record';

export class StartTimer {
  private readonly t0 = performance.now();
  private last = this.t0;
  private readonly marks: Partial<Record<StartPhase | 'total', number>> = {};

  /** Ends `phase`: the time since the previous mark (or the start). */
  mark(phase: StartPhase): void {
    const now = performance.now();
    this.marks[phase] = round(now - this.last);
    this.last = now;
  }

  /** Milliseconds per phase reached, and the total so far. */
  phases(): Partial<Record<StartPhase | 'total', number>> {
    return { ...this.marks, total: round(performance.now() - this.t0) };
  }
}

const round = (ms: number) => Math.round(ms * 10) / 10;
