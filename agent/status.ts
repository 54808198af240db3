/** What GetStatus reports about the blade. */
import { readFileSync } from 'node:fs';
import { availableParallelism, freemem, loadavg, totalmem } from 'node:os';
import type { GetStatusResponse } from '../proto/gen/vncdispatch/agent/v1/agent.js';

/** The host half of GetStatusResponse (the rest is the agent's own state). */
export type HostStatus = Pick<GetStatusResponse,
  'load1' | 'load5' | 'load15' | 'memoryTotalBytes' | 'memoryAvailableBytes' | 'cpus'>;

/** MemAvailable (what can be used without swapping), which is what capacity planning wants, not MemFree. */
function memAvailable(): number {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'latin1'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // Not Linux: fall back.
  }
  return freemem();
}

export function hostStatus(): HostStatus {
  const [load1, load5, load15] = loadavg() as [number, number, number];
  return { load1, load5, load15, memoryTotalBytes: totalmem(), memoryAvailableBytes: memAvailable(),
    cpus: availableParallelism() };
}
