/**
 * Figures about a running process that benchmarks and load tests print, so a slow answer can be told apart: CPU
 * starvation (its main thread waited on a run queue) or a blocked event loop.
 */
import { readFileSync } from 'node:fs';

/** CPU seconds (user + system) a process has used, from /proc/PID/stat (clock ticks of 1/100 s). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** CPU time the process's main thread has run and waited on a run queue so far, in ms (schedstat is in ns). */
export function mainThreadSched(pid: number): { ran: number; waited: number } {
  const [ran, waited] = readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'latin1').split(' ').map(Number);
  return { ran: ran! / 1e6, waited: waited! / 1e6 };
}

/**
 * One of prom-client's event-loop delay series (`p99`, `max`, …) from a /metrics text, in ms; NaN if absent.
 * `prefix` is the registry's (vncdispatch_controller, vncdispatch_agent). prom-client resets the series on each scrape.
 */
export function eventLoopLagMs(metrics: string, prefix: string, stat: string): number {
  const m = new RegExp(`^${prefix}_nodejs_eventloop_lag_${stat}_seconds (\\S+)`, 'm').exec(metrics);
  return Number(m?.[1] ?? NaN) * 1000;
}
