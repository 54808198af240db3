import { isIP } from 'node:net';

/**
 * Canonical text form of an IP address, or null if `ip` is not one. IPv4-mapped IPv6 (`::ffff:1.2.3.4`, as a
 * dual-stack socket reports IPv4 peers) becomes plain IPv4, and IPv6 is lower-cased and compressed, so one client
 * always compares equal to itself whichever way its address was written.
 */
export function normalizeIp(ip: string): string | null {
  const family = isIP(ip);
  if (family === 4) return ip;
  if (family !== 6) return null;
  if (ip.includes('%')) return ip.toLowerCase(); // zone ids (fe80::1%eth0) are left as given
  // The WHATWG URL parser serializes IPv6 canonically (RFC 5952): lower case, longest zero run compressed.
  const canonical = new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(canonical);
  if (mapped) {
    const hi = parseInt(mapped[1]!, 16);
    const lo = parseInt(mapped[2]!, 16);
    return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  }
  return canonical;
}

/** True if both are the same address once normalized; false if either is not an IP address. */
export function sameIp(a: string, b: string): boolean {
  const na = normalizeIp(a);
  return na !== null && na === normalizeIp(b);
}
