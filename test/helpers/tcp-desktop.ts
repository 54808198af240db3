/**
 * A DesktopDialer that opens plain TCP to a VNC server on loopback. The proxy's own tests and the direct-TCP bench
 * path use it to stand in for the controller's real dialer (an agent's mutual-TLS relay, covered by the relay and
 * end-to-end tests), so they can put a fake or hostile VNC server right behind the proxy.
 */
import { connect } from 'node:net';
import { VncConnectError } from '../../controller/errors.js';
import type { DesktopDialer } from '../../controller/proxy/index.js';

export function tcpDesktop(host: string, port: number): DesktopDialer {
  return (reads, timeoutMs) => {
    const socket = connect({ host, port, noDelay: true, onread: reads });
    const opened = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new VncConnectError(`no connection to ${host}:${port} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve();
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(new VncConnectError(`cannot connect to ${host}:${port}`, { cause: err }));
      });
    });
    opened.catch(() => undefined);
    return { socket, opened };
  };
}
