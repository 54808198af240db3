/** HOST:PORT parsing for listen addresses and blade addresses. */
import { isIP } from 'node:net';
import { ConfigError } from './config-error.js';

/** An RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens. */
const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/**
 * Splits HOST:PORT (IPv6 as [ADDR]:PORT). The host must be an IPv4 address, a bracketed IPv6 address or a host name;
 * the port 0 to 65535. Throws ConfigError naming `what`.
 */
export function parseHostPort(value: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d+)$/.exec(value);
  const host = m?.[1] ?? m?.[2];
  if (!m || !host) {
    throw new ConfigError(`${what} must be HOST:PORT (IPv6 as [ADDR]:PORT), got ${JSON.stringify(value.slice(0, 300))}`);
  }
  const port = m[3]!.length <= 5 ? Number(m[3]) : NaN;
  if (!(port >= 0 && port <= 65535)) throw new ConfigError(`${what}: port must be between 0 and 65535, got ${m[3]}`);
  if (m[1] ? isIP(host) !== 6 : !(isIP(host) === 4 || HOSTNAME.test(host))) {
    throw new ConfigError(`${what}: ${JSON.stringify(host)} is not a host name or IP address`);
  }
  return { host, port };
}
