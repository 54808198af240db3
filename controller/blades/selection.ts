/**
 * Placement as a pure function (after undici's balanced-pool): given a snapshot of the blades, the policy and, for
 * round-robin, a counter value taken atomically from the store, return the blades to try, best first.
 */
import type { PlacementPolicy } from '../config.js';

/** What the API reports for a blade: liveness combined with the operator's admin state. */
export type BladeState = 'UP' | 'DOWN' | 'CORDONED' | 'DRAINING' | 'UNKNOWN';

export interface Candidate {
  name: string;
  state: BladeState;
  /** Live sessions on the blade (including starts in flight). */
  sessions: number;
  /** Most sessions the blade runs; 0 = not known yet (treated as unbounded). */
  capacity: number;
  load1: number;
}

/** True if the blade can take one more session. */
export function isEligible(b: Candidate): boolean {
  return b.state === 'UP' && (b.capacity === 0 || b.sessions < b.capacity);
}

function utilisation(b: Candidate): number {
  return b.capacity > 0 ? b.sessions / b.capacity : b.sessions;
}

/**
 * Orders the eligible blades (UP and not full) for a new session. `least-loaded`: lowest sessions/capacity, then
 * lowest 1-minute load, then name. `round-robin`: the eligible blades by name, rotated by `rrCounter` (the original
 * design's policy, minus its read-then-write race: the caller takes the counter from store.nextCounter()).
 */
export function selectCandidates<T extends Candidate>(blades: readonly T[], policy: PlacementPolicy, rrCounter = 0): T[] {
  const eligible = blades.filter(isEligible);
  if (policy === 'round-robin') {
    eligible.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    if (eligible.length === 0) return eligible;
    const start = (((rrCounter - 1) % eligible.length) + eligible.length) % eligible.length;
    return [...eligible.slice(start), ...eligible.slice(0, start)];
  }
  return eligible.sort((a, b) => utilisation(a) - utilisation(b) || a.load1 - b.load1 || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
