/**
 * A global cap on the controller's open TCP connections, HTTP and WebSocket alike, so a flood of connections cannot
 * exhaust memory or file descriptors, and cannot shut the door on real requests either.
 *
 * Node's own `server.maxConnections` refuses every new connection once the cap is reached, so a flood of idle
 * connections (opened, then silent) would lock out `/healthz` and every browser until the header timeout frees them.
 * Here a new connection over the cap instead evicts the oldest IDLE connection: one with no request in progress and
 * no WebSocket on it (a silent or half-sent request, or a kept-alive connection between requests). Only when every
 * connection is busy is the newcomer itself closed. A flood of idle connections thus keeps only the newest `max`,
 * while requests that arrive are served.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from './log.js';

interface Tracked {
  /** Requests in progress on this connection (HTTP/1.1 pipelining may queue more than one). */
  busy: number;
  /** Upgraded to a WebSocket (or being upgraded): never idle. */
  upgraded: boolean;
}

export class ConnectionGate {
  /** Open connections, oldest first (Map keeps insertion order). */
  private readonly open = new Map<Socket, Tracked>();
  private evictedSinceLog = 0;
  private refusedSinceLog = 0;
  private lastLogAt = 0;

  constructor(
    server: Server,
    private readonly max: number,
    private readonly log: Logger,
  ) {
    if (!Number.isSafeInteger(max) || max < 1) throw new TypeError('ConnectionGate: max must be a positive integer');
    server.on('connection', (socket: Socket) => this.onConnection(socket));
    server.on('request', (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res));
    // Registered before the proxy's listener (app.ts builds the gate first), so an upgrading socket is never evicted.
    server.on('upgrade', (req: IncomingMessage) => {
      const t = this.open.get(req.socket);
      if (t) t.upgraded = true;
    });
  }

  /** Open connections now. */
  get size(): number {
    return this.open.size;
  }

  private onConnection(socket: Socket): void {
    if (this.open.size >= this.max && !this.evictOldestIdle()) {
      this.refusedSinceLog++;
      this.note();
      socket.destroy();
      return;
    }
    this.open.set(socket, { busy: 0, upgraded: false });
    socket.once('close', () => this.open.delete(socket));
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const t = this.open.get(req.socket);
    if (!t) return;
    t.busy++;
    res.once('close', () => {
      t.busy--;
    });
  }

  private evictOldestIdle(): boolean {
    for (const [socket, t] of this.open) {
      if (t.busy > 0 || t.upgraded) continue;
      this.open.delete(socket);
      socket.destroy();
      this.evictedSinceLog++;
      this.note();
      return true;
    }
    return false;
  }

  /** One log line per second at most while the cap is being hit, with the counts since the last one. */
  private note(): void {
    const now = Date.now();
    if (now - this.lastLogAt < 1000) return;
    this.lastLogAt = now;
    this.log.warn({ max: this.max, evictedIdle: this.evictedSinceLog, refused: this.refusedSinceLog },
      'connection cap reached: closing idle connections');
    this.evictedSinceLog = 0;
    this.refusedSinceLog = 0;
  }
}
