/**
 * VNC ports for new desktops. Xvnc picks its display itself (-displayfd), but it would listen on 5900 + display and
 * die if something else holds that port, and since it keeps picking the same lowest free display, one foreign
 * listener on 5901 would make every later start on the blade fail. So the agent picks the port: the first port of
 * `--vnc-ports` that none of its sessions holds, no start in flight has reserved, and nothing else on the host listens
 * on (checked by binding it), and passes it to Xvnc as -rfbport.
 */
import { createServer } from 'node:net';
import { AgentError } from '../errors.js';

export interface PortRange {
  first: number;
  last: number;
}

export class VncPorts {
  private readonly reserved = new Set<number>();

  /** @param listen the address Xvnc will listen on (`--vnc-listen`); undefined = all interfaces */
  constructor(
    private readonly range: PortRange,
    private readonly listen: string | undefined,
  ) {}

  /** Reserves a free port (release it once Xvnc holds it or failed). Throws VD_AGENT_NO_VNC_PORT. */
  async reserve(held: ReadonlySet<number>): Promise<number> {
    for (let port = this.range.first; port <= this.range.last; port++) {
      if (held.has(port) || this.reserved.has(port)) continue;
      // Reserved before the check, so a concurrent start skips it while it is being probed.
      this.reserved.add(port);
      if (await canListen(port, this.listen)) return port;
      this.reserved.delete(port);
    }
    throw new AgentError('VD_AGENT_NO_VNC_PORT', `no free VNC port in ${this.range.first}-${this.range.last} (--vnc-ports)`);
  }

  release(port: number): void {
    this.reserved.delete(port);
  }

  /** Whether nothing listens on `port` now (after a failed start: did someone else take it?). */
  isFree(port: number): Promise<boolean> {
    return canListen(port, this.listen);
  }
}

/** Whether a listener on `port` would succeed: all interfaces = dual-stack '::' (or 0.0.0.0 without IPv6). */
async function canListen(port: number, host: string | undefined): Promise<boolean> {
  const attempt = (h: string) =>
    new Promise<boolean | NodeJS.ErrnoException>((resolve) => {
      const server = createServer();
      server.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'EADDRINUSE' || err.code === 'EACCES' ? false : err));
      server.listen({ port, host: h, exclusive: true }, () => server.close(() => resolve(true)));
    });
  const first = await attempt(host ?? '::');
  if (typeof first === 'boolean') return first;
  if (host === undefined && (first.code === 'EAFNOSUPPORT' || first.code === 'EADDRNOTAVAIL')) {
    const second = await attempt('0.0.0.0');
    if (typeof second === 'boolean') return second;
  }
  return false;
}
