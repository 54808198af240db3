/**
 * A reverse proxy that serves the controller under a path prefix, as an operator's nginx would
 * (`location /desk/ { proxy_pass http://controller/; proxy_set_header Host $host; ... }`): requests under the prefix
 * are forwarded with the prefix stripped, WebSocket upgrades included, keeping the browser's Host header and adding
 * X-Forwarded-For. Anything outside the prefix is a 404, so a page that used an absolute path would break visibly.
 * On loopback only.
 */
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';

export interface PrefixProxy {
  /** http://127.0.0.1:PORT/PREFIX (no trailing slash). */
  base: string;
  /** Paths requested outside the prefix (they got 404). */
  readonly strays: string[];
  close(): Promise<void>;
}

/** Forwards `prefix` (e.g. '/desk') on a new loopback port to the controller at 127.0.0.1:`targetPort`. */
export async function startPrefixProxy(prefix: string, targetPort: number): Promise<PrefixProxy> {
  const strays: string[] = [];
  const tunnels = new Set<Socket>();
  const strip = (url: string | undefined): string | null =>
    url !== undefined && url.startsWith(`${prefix}/`) ? url.slice(prefix.length) : null;
  const headersFor = (req: IncomingMessage) => ({ ...req.headers, 'x-forwarded-for': req.socket.remoteAddress ?? '' });

  const server: Server = createServer((req, res) => {
    const path = strip(req.url);
    if (path === null) {
      strays.push(req.url ?? '');
      res.writeHead(404).end();
      return;
    }
    const upstream = request({ host: '127.0.0.1', port: targetPort, method: req.method, path, headers: headersFor(req) }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.on('upgrade', (req, socket, head) => {
    const path = strip(req.url);
    socket.on('error', () => {});
    if (path === null) {
      strays.push(req.url ?? '');
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
      return;
    }
    const up = connect({ host: '127.0.0.1', port: targetPort }, () => {
      const headers = Object.entries(headersFor(req)).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(', ') : v}\r\n`);
      up.write(`${req.method} ${path} HTTP/1.1\r\n${headers.join('')}\r\n`);
      if (head.length > 0) up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    up.on('error', () => socket.destroy());
    tunnels.add(up).add(socket as Socket);
    socket.on('close', () => {
      tunnels.delete(up);
      tunnels.delete(socket as Socket);
      up.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    base: `http://127.0.0.1:${port}${prefix}`,
    strays,
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of tunnels) t.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
