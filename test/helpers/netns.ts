/**
 * A blade on its own network: a network namespace joined to the root one by a veth pair on a private /30, so a test
 * can cut its link (`ip link set ... down` on the root side) or drop its packets with nftables rules inside the
 * namespace (this kernel has no `tc netem`). Names and the subnet derive from the test process's pid, so two runs
 * never share them; remove() takes everything down and never throws, so it can run in afterAll after any failure.
 */
import { execFileSync } from 'node:child_process';

export interface BladeNetns {
  /** Namespace name, for `ip netns exec NAME`. */
  name: string;
  /** The root namespace's end of the veth pair (the one a test takes down). */
  hostIf: string;
  /** Address of the root side, and of the namespace side (where the agent listens). */
  hostIp: string;
  bladeIp: string;
  /** The prefix that runs a command inside the namespace. */
  exec: readonly string[];
  /** Takes the link down or up from the root namespace. */
  setLink(up: boolean): void;
  /**
   * Drops `percent` % of the TCP packets to and from `port` inside the namespace (100: all of them), in an nftables
   * table of its own; replaces any drop set before. `only: 'out'` drops just what the namespace sends (its answers).
   */
  dropPackets(port: number, percent: number, only?: 'in' | 'out'): void;
  /** Removes the drop rules (the whole table). */
  clearDrops(): void;
  remove(): void;
}

const TABLE = 'vdtest';

function run(args: readonly string[], input?: string): string {
  return execFileSync(args[0]!, args.slice(1), { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], input: input ?? '' });
}

function tryRun(args: readonly string[]): void {
  try {
    run(args);
  } catch {
    // Already gone (or never made): clean-up must reach every step.
  }
}

/** Creates the namespace and its veth pair, both ends up with their addresses; loopback up inside. */
export function createBladeNetns(tag = String(process.pid)): BladeNetns {
  const n = Number(tag) || 0;
  const name = `vdpart${tag}`;
  const hostIf = `vdp${tag}h`;
  const nsIf = `vdp${tag}n`;
  // 10.231.A.B/30 with the /30 picked from the pid: 16,384 subnets inside 10.231.0.0/16.
  const base = (n % 16_384) * 4;
  const hostIp = `10.231.${base >> 8}.${(base & 255) + 1}`;
  const bladeIp = `10.231.${base >> 8}.${(base & 255) + 2}`;
  const exec = ['ip', 'netns', 'exec', name] as const;
  const ns: BladeNetns = {
    name, hostIf, hostIp, bladeIp, exec,
    setLink: (up) => void run(['ip', 'link', 'set', hostIf, up ? 'up' : 'down']),
    dropPackets: (port, percent, only) => {
      tryRun([...exec, 'nft', 'delete', 'table', 'inet', TABLE]);
      const match = percent >= 100 ? 'drop' : `numgen random mod 100 < ${percent} drop`;
      run([...exec, 'nft', '-f', '-'], [
        `table inet ${TABLE} {`,
        ...(only === 'out' ? [] : [`  chain in { type filter hook input priority 0; tcp dport ${port} ${match}; }`]),
        ...(only === 'in' ? [] : [`  chain out { type filter hook output priority 0; tcp sport ${port} ${match}; }`]),
        '}',
      ].join('\n'));
    },
    clearDrops: () => tryRun([...exec, 'nft', 'delete', 'table', 'inet', TABLE]),
    remove: () => {
      tryRun([...exec, 'nft', 'delete', 'table', 'inet', TABLE]);
      tryRun(['ip', 'link', 'del', hostIf]);
      tryRun(['ip', 'netns', 'del', name]);
    },
  };
  try {
    run(['ip', 'netns', 'add', name]);
    run(['ip', 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf]);
    run(['ip', 'link', 'set', nsIf, 'netns', name]);
    run(['ip', 'addr', 'add', `${hostIp}/30`, 'dev', hostIf]);
    run(['ip', 'link', 'set', hostIf, 'up']);
    run([...exec, 'ip', 'addr', 'add', `${bladeIp}/30`, 'dev', nsIf]);
    run([...exec, 'ip', 'link', 'set', nsIf, 'up']);
    run([...exec, 'ip', 'link', 'set', 'lo', 'up']);
  } catch (err) {
    ns.remove();
    throw err;
  }
  return ns;
}
