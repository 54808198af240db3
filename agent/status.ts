/** What GetStatus reports about the blade, sampled in the background so that GetStatus itself only reads memory. */
import { readFile } from 'node:fs/promises';
import { availableParallelism, freemem, loadavg, totalmem } from 'node:os';
import type { GetStatusResponse } from '../proto/gen/vncdispatch/agent/v1/agent.js';

/** The host half of GetStatusResponse (the rest is the agent's own state). */
export type HostStatus = Pick<GetStatusResponse,
  'load1' | 'load5' | 'load15' | 'memoryTotalBytes' | 'memoryAvailableBytes' | 'cpus'>;

/** MemAvailable (what can be used without swapping), which is what capacity planning wants, not MemFree. */
async function memAvailable(): Promise<number> {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(await readFile('/proc/meminfo', 'latin1'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // Not Linux: fall back.
  }
  return freemem();
}

/** Keeps a recent HostStatus; `current()` never touches the filesystem. */
export class HostStatusSampler {
  private available = freemem();
  private timer?: NodeJS.Timeout;

  /** Samples now and then every `intervalMs` (the timer does not keep the process alive). */
  start(intervalMs: number): void {
    const sample = () => void memAvailable().then((m) => { this.available = m; }, () => undefined);
    sample();
    this.timer = setInterval(sample, intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  current(): HostStatus {
    const [load1, load5, load15] = loadavg() as [number, number, number];
    return { load1, load5, load15, memoryTotalBytes: totalmem(), memoryAvailableBytes: this.available,
      cpus: availableParallelism() };
  }
}
