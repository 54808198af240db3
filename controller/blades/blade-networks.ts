/**
 * Where blades may be registered through the API (--blade-networks). Registering a blade makes the controller dial
 * its address and report UP or DOWN, so without a limit an API key turns the controller into a scanner of whatever
 * it can reach. Matching is node:net's BlockList (IPv4-mapped IPv6 included); nothing here does CIDR arithmetic.
 */
import { BlockList, isIP } from 'node:net';
import { ConfigError } from '../../shared/config-error.js';

/**
 * Loopback and the private ranges (RFC 1918, IPv6 unique local): blades live on the operator's own network. Public
 * addresses and link-local ones (169.254.169.254 is the cloud metadata service) are refused, so an API key cannot
 * make the controller probe the internet or its cloud. Operators should narrow it to their blade subnet.
 */
export const DEFAULT_BLADE_NETWORKS: readonly string[] = Object.freeze([
  '127.0.0.0/8', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '::1/128', 'fc00::/7',
]);

/** The allow-list of IP networks for blades registered through the API. */
export class BladeNetworks {
  readonly #list = new BlockList();

  /** `cidrs` as parseBladeNetworks returns them (ADDR/BITS, already checked). */
  constructor(readonly cidrs: readonly string[]) {
    for (const cidr of cidrs) {
      const [addr, bits] = cidr.split('/') as [string, string];
      this.#list.addSubnet(addr, Number(bits), isIP(addr) === 6 ? 'ipv6' : 'ipv4');
    }
  }

  /** True if `ip` (an IP literal) lies in one of the networks; false for anything else, host names included. */
  allows(ip: string): boolean {
    const family = isIP(ip);
    if (family === 0) return false;
    return this.#list.check(ip, family === 6 ? 'ipv6' : 'ipv4');
  }
}

/**
 * Parses --blade-networks values: each a comma-separated list of ADDR/BITS (a bare address is one host), or `none`
 * (no blade may be registered through the API). No value at all means DEFAULT_BLADE_NETWORKS.
 */
export function parseBladeNetworks(values: readonly string[]): readonly string[] {
  if (values.length === 0) return DEFAULT_BLADE_NETWORKS;
  const items = values.flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '');
  if (items.length === 1 && items[0] === 'none') return Object.freeze([]);
  return Object.freeze(items.map((item) => {
    const [addr = '', bits, extra] = item.split('/');
    const family = isIP(addr);
    const max = family === 6 ? 128 : 32;
    const prefix = bits === undefined ? max : /^\d{1,3}$/.test(bits) ? Number(bits) : NaN;
    if (!family || extra !== undefined || !(prefix >= 0 && prefix <= max) || addr.includes('%')) {
      throw new ConfigError(`--blade-networks takes ADDR/BITS[,ADDR/BITS...] or none, got ${JSON.stringify(item.slice(0, 100))}`);
    }
    return `${addr}/${prefix}`;
  }));
}
