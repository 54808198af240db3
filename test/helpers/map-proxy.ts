/**
 * A VncProxy on a loopback HTTP server for the proxy's Node-level tests, with authorize() a plain Map lookup standing
 * in for the controller's token store (unknown token: 401 TEST_TOKEN_UNKNOWN) and revalidate() keeping every
 * connection. Records the proxy's side of each upgraded browser socket.
 */
import { createServer, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { VncDispatchError } from '../../controller/errors.js';
import { VncProxy, type ProxyOptions, type ProxyTarget } from '../../controller/proxy/index.js';

export interface MapProxy {
  proxy: VncProxy;
  /** ws://127.0.0.1:PORT */
  base: string;
  /** The proxy's side of each browser socket, newest last. */
  browserSockets: Duplex[];
  close(): Promise<void>;
}

export async function startMapProxy(
  targets: ReadonlyMap<string, ProxyTarget>,
  options: Omit<ProxyOptions, 'authorize' | 'revalidate'>,
): Promise<MapProxy> {
  const proxy = new VncProxy({
    ...options,
    async authorize(token) {
      const t = targets.get(token);
      if (!t) throw new VncDispatchError('TEST_TOKEN_UNKNOWN', 401, 'unknown');
      return t;
    },
    async revalidate(ts) {
      return new Set(ts.map((t) => t.tokenHash));
    },
  });
  const browserSockets: Duplex[] = [];
  const server: Server = createServer();
  server.on('upgrade', (req, socket, head) => {
    browserSockets.push(socket);
    proxy.handleUpgrade(req, socket, head);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    proxy,
    base: `ws://127.0.0.1:${(server.address() as { port: number }).port}`,
    browserSockets,
    close: async () => {
      await proxy.close();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
