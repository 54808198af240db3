/**
 * The agent's one port. Every connection is mutual TLS (a client certificate signed by --tls-ca is required) unless
 * --insecure, and is then handed by its ALPN protocol either to gRPC ("h2") or to the desktop relay
 * ("vncdispatch-relay/1"); anything else is dropped before a byte of either is spoken. One port means one firewall
 * rule per blade and one address per blade for the controller, and both share the same certificates and checks.
 * In --insecure mode (no TLS, so no ALPN) the first byte decides: the relay's magic starts with 'V', HTTP/2's
 * preface with 'P'.
 */
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { ServerCredentials, type Server as GrpcServer } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { AgentConfig } from './config.js';
import type { DesktopRelay } from './relay/desktop-relay.js';
import { RELAY_ALPN, RELAY_MAGIC } from './relay/relay-wire.js';

export interface AgentPort {
  /** host:port actually bound ([v6]:port for IPv6). */
  address: string;
  port: number;
  /** Stops accepting connections (open ones are the gRPC server's and the relay's to end). */
  close(): Promise<void>;
}

export async function listenAgentPort(opts: { config: AgentConfig; grpc: GrpcServer; relay: DesktopRelay; log: Logger }):
  Promise<AgentPort> {
  const { config, grpc, relay } = opts;
  const log = opts.log.child({ module: 'listener' });
  // TLS ends here, so gRPC gets the decrypted connection.
  const injector = grpc.createConnectionInjector(ServerCredentials.createInsecure());
  let server: NetServer;
  if (config.insecure || !config.tls) {
    server = createNetServer((sock) => sniff(sock, (s) => injector.injectConnection(s), (s) => relay.handle(s)));
  } else {
    const tls = createTlsServer({
      key: config.tls.key,
      cert: config.tls.cert,
      ca: config.tls.ca,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
      ALPNProtocols: ['h2', RELAY_ALPN],
      handshakeTimeout: config.relayHandshakeTimeoutMs,
    });
    tls.on('secureConnection', (sock: TLSSocket) => {
      if (sock.alpnProtocol === 'h2') injector.injectConnection(sock);
      else if (sock.alpnProtocol === RELAY_ALPN) relay.handle(sock);
      else {
        log.info({ peer: sock.remoteAddress, alpn: sock.alpnProtocol }, 'connection without a known ALPN protocol dropped');
        sock.destroy();
      }
    });
    tls.on('tlsClientError', (err, sock) => {
      log.debug({ err, peer: sock.remoteAddress }, 'TLS handshake refused');
      sock.destroy();
    });
    server = tls;
  }
  server.on('error', (err) => log.error({ err }, 'listener error'));
  const host = config.listenHost;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: config.listenPort }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return {
    address: `${host.includes(':') ? `[${host}]` : host}:${port}`,
    port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Plain connections: the first byte says relay or gRPC; the byte is put back for whichever takes the socket. */
function sniff(sock: Socket, grpc: (s: Socket) => void, relay: (s: Socket) => void): void {
  sock.on('error', () => sock.destroy());
  const first = () => {
    const b = sock.read(1) as Buffer | null;
    if (b === null) {
      sock.once('readable', first);
      return;
    }
    sock.unshift(b);
    if (b[0] === RELAY_MAGIC[0]) relay(sock);
    else grpc(sock);
  };
  sock.once('readable', first);
}
