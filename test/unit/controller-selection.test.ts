import { describe, expect, it } from 'vitest';
import { selectCandidates, type Candidate } from '../../controller/blades/selection.js';

const blade = (name: string, o: Partial<Candidate> = {}): Candidate =>
  ({ name, state: 'UP', sessions: 0, capacity: 10, load1: 0, ...o });
const names = (c: Candidate[]) => c.map((b) => b.name);

describe('selectCandidates', () => {
  it('skips DOWN, CORDONED, DRAINING, UNKNOWN and full blades under both policies', () => {
    const blades = [
      blade('down', { state: 'DOWN' }),
      blade('cordoned', { state: 'CORDONED' }),
      blade('draining', { state: 'DRAINING' }),
      blade('unknown', { state: 'UNKNOWN' }),
      blade('full', { sessions: 10, capacity: 10 }),
      blade('ok'),
    ];
    expect(names(selectCandidates(blades, 'least-loaded'))).toEqual(['ok']);
    for (let i = 1; i <= 3; i++) expect(names(selectCandidates(blades, 'round-robin', i))).toEqual(['ok']);
  });

  it('least-loaded orders by sessions per capacity, then 1-minute load, then name', () => {
    const blades = [
      blade('c', { sessions: 5, capacity: 10 }),
      blade('b', { sessions: 1, capacity: 10, load1: 3 }),
      blade('a', { sessions: 1, capacity: 10, load1: 1 }),
      blade('big', { sessions: 5, capacity: 100 }),
    ];
    expect(names(selectCandidates(blades, 'least-loaded'))).toEqual(['big', 'a', 'b', 'c']);
  });

  it('round-robin rotates through the eligible blades by the counter, starting at the first for counter 1', () => {
    const blades = [blade('c'), blade('a'), blade('b')];
    expect(names(selectCandidates(blades, 'round-robin', 1))).toEqual(['a', 'b', 'c']);
    expect(names(selectCandidates(blades, 'round-robin', 2))).toEqual(['b', 'c', 'a']);
    expect(names(selectCandidates(blades, 'round-robin', 3))).toEqual(['c', 'a', 'b']);
    expect(names(selectCandidates(blades, 'round-robin', 4))).toEqual(['a', 'b', 'c']);
    const firsts = Array.from({ length: 30 }, (_, i) => selectCandidates(blades, 'round-robin', i + 1)[0]!.name);
    expect(firsts.filter((n) => n === 'a')).toHaveLength(10);
  });

  it('returns nothing when no blade can serve, and does not mutate its input', () => {
    const blades = [blade('x', { state: 'DOWN' })];
    expect(selectCandidates(blades, 'least-loaded')).toEqual([]);
    expect(selectCandidates(blades, 'round-robin', 7)).toEqual([]);
    const input = [blade('b', { sessions: 3 }), blade('a')];
    selectCandidates(input, 'least-loaded');
    expect(names(input)).toEqual(['b', 'a']);
  });

  it('treats an unknown capacity (0) as unbounded', () => {
    expect(names(selectCandidates([blade('new', { capacity: 0, sessions: 50 })], 'least-loaded'))).toEqual(['new']);
  });
});
