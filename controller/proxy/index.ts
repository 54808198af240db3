/**
 * The WebSocket-to-VNC proxy: `GET /websockify?token=...` upgrades to a WebSocket that noVNC speaks RFB
 * over. Everything that can refuse a request happens BEFORE the upgrade and before any connection to a desktop:
 * path, per-IP back-off, Origin, per-IP connection cap, then the token via the injected `authorize()`. The desktop's
 * address and VNC password come only from authorize()'s result (the session record and its registered blade), never
 * from the request (README, Security: threat 4). Live connections are re-checked with `revalidate()` so a deleted session
 * or a revoked token closes its sockets within a second, even when another controller sharing the store did it.
 *
 * The controller wires it into its HTTP server: `server.on('upgrade', (req, socket, head) => proxy.handleUpgrade(...))`.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import proxyaddr from '@fastify/proxy-addr';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { WebSocketServer, type WebSocket } from 'ws';
import { PROXY_DEFAULTS } from '../config.js';
import { refuseRaw } from '../error-reply.js';
import {
  InternalError,
  OriginForbiddenError,
  ProxyUnavailableError,
  TokenRequiredError,
  TooManyBadTokensError,
  TooManyConnectionsError,
  VncDispatchError,
} from '../errors.js';
import { ProxyConnection } from './connection.js';
import type { ProxyTarget } from './target.js';
import { FixedWindowLimiter } from '../../shared/fixed-window.js';
import { ConnectionCounter } from './ip-limits.js';
import { ProxyMetrics } from './metrics.js';
import { normaliseOrigin, originAllowed } from './origin-check.js';
import { checkUpgradeRequest } from './upgrade-request.js';
import { withTimeout } from '../../shared/timeout.js';

export type { DesktopDialer, DesktopReads, DesktopStream, ProxyTarget } from './target.js';

export interface ProxyOptions {
  /** Resolves a token to its target; throws VncDispatchError (controller/errors.ts) with status 401/403 on refusal. Called BEFORE the upgrade. */
  authorize(token: string, clientIp: string): Promise<ProxyTarget>;
  /**
   * Called every `revalidateIntervalMs` with the open connections' targets (one per token); returns the tokenHashes
   * still allowed (session live, token not revoked). Connections not in the set are closed. If it throws, the error
   * is logged and connections stay open (a store outage should not cut every desktop).
   */
  revalidate(targets: ProxyTarget[]): Promise<Set<string>>;
  log: Logger;
  /** Metrics: connections open/total by close reason, bytes each way, handshake failures, refusals. */
  registry?: Registry;
  /** Upgrade path; other paths get 404. */
  path?: string;
  /** Exact origins allowed; [] means "the controller's own origin" (scheme + Host of the request). */
  allowedOrigins?: string[];
  /** Addresses/CIDRs (or 'loopback', ...) whose X-Forwarded-For / -Proto / -Host are trusted; default none. */
  trustProxy?: string[];
  /** Largest browser->server WebSocket message; larger ones close the connection with 1009. */
  maxPayload?: number;
  /** No bytes either way for this long closes the connection. */
  idleTimeoutMs?: number;
  /** Ping interval; a connection that has not answered the previous ping is terminated. */
  heartbeatMs?: number;
  /** Both RFB handshakes must finish within this (also bounds authorize()). */
  handshakeTimeoutMs?: number;
  /** Opening the desktop connection (target.desktop()) must succeed within this. */
  connectTimeoutMs?: number;
  /**
   * A connection whose desktop went away (it closed, or the agent says it is gone or does not answer) waits this long
   * for its session's end before telling the browser: a desktop that died is ended by the controller a moment later,
   * and the viewer should hear "session ended" (and say so at once), not "unreachable" followed by retries.
   */
  desktopGoneGraceMs?: number;
  maxConnectionsPerIp?: number;
  /**
   * Largest read from the desktop socket: the largest message sent to the browser, and the most a connection holds
   * of bytes towards the browser (reading pauses while the browser's socket has not taken the last read).
   */
  maxReadBytes?: number;
  /** After `limit` refused tokens from one IP within `windowMs`, that IP gets 429 until the window ends. */
  badTokenBackoff?: { limit: number; windowMs: number };
  /**
   * Whether a token could be valid at all (its format), checked without the store; used only while an address is in
   * bad-token back-off. Default: any non-empty token.
   */
  wellFormedToken?: (token: string) => boolean;
  /** How often revalidate() runs. */
  revalidateIntervalMs?: number;
  /** Longest failure-reason string accepted from a VNC server. */
  maxReasonLength?: number;
}

const DEFAULTS = {
  path: '/websockify',
  allowedOrigins: [] as string[],
  trustProxy: [] as string[],
  maxPayload: PROXY_DEFAULTS.maxPayload,
  idleTimeoutMs: PROXY_DEFAULTS.idleTimeoutSeconds * 1000,
  heartbeatMs: PROXY_DEFAULTS.heartbeatMs,
  handshakeTimeoutMs: PROXY_DEFAULTS.handshakeTimeoutMs,
  connectTimeoutMs: PROXY_DEFAULTS.connectTimeoutMs,
  desktopGoneGraceMs: PROXY_DEFAULTS.desktopGoneGraceMs,
  maxConnectionsPerIp: PROXY_DEFAULTS.maxConnectionsPerIp,
  maxReadBytes: PROXY_DEFAULTS.maxReadBytes,
  badTokenBackoff: { limit: PROXY_DEFAULTS.badTokenLimit, windowMs: PROXY_DEFAULTS.badTokenWindowMs },
  revalidateIntervalMs: PROXY_DEFAULTS.revalidateIntervalMs,
  maxReasonLength: 4096,
  wellFormedToken: (token: string): boolean => token.length > 0,
};

type Resolved = Omit<ProxyOptions, keyof typeof DEFAULTS> & typeof DEFAULTS;

/** Why the controller may close connections, as logged. */
const CLOSE_TEXT = 'session ended';

/** One session's open desktop connections on this controller (VncProxy.sessionStats). */
export interface SessionConnectionStats {
  viewers: number;
  bytesDown: number;
  bytesUp: number;
  viewerIps: string[];
}

export class VncProxy {
  private readonly options: Resolved;
  private readonly log: Logger;
  private readonly wss: WebSocketServer;
  private readonly trust: (addr: string, i: number) => boolean;
  private readonly allowedOrigins: ReadonlySet<string>;
  private readonly perIp: ConnectionCounter;
  private readonly backoff: FixedWindowLimiter;
  private readonly metrics: ProxyMetrics;
  private readonly live = new Set<ProxyConnection>();
  private readonly sweeper: NodeJS.Timeout;
  private readonly revalidator: NodeJS.Timeout;
  private readonly heartbeat: NodeJS.Timeout;
  private revalidating = false;
  private closing = false;
  private closedBytesDown = 0;
  private closedBytesUp = 0;

  constructor(options: ProxyOptions) {
    const o: Resolved = { ...DEFAULTS, ...options };
    for (const key of ['maxPayload', 'idleTimeoutMs', 'heartbeatMs', 'handshakeTimeoutMs', 'connectTimeoutMs', 'desktopGoneGraceMs', 'maxConnectionsPerIp', 'maxReadBytes', 'revalidateIntervalMs', 'maxReasonLength'] as const) {
      if (!Number.isFinite(o[key]) || o[key] <= 0) throw new TypeError(`VncProxy: ${key} must be a positive number`);
    }
    if (!o.path.startsWith('/')) throw new TypeError('VncProxy: path must start with /');
    this.options = o;
    this.log = o.log.child({ module: 'proxy' });
    this.allowedOrigins = new Set(
      o.allowedOrigins.map((origin) => {
        const n = normaliseOrigin(origin);
        if (n === null) throw new TypeError(`VncProxy: invalid allowed origin ${JSON.stringify(origin)}`);
        return n;
      }),
    );
    this.trust = proxyaddr.compile(o.trustProxy);
    this.perIp = new ConnectionCounter(o.maxConnectionsPerIp);
    this.backoff = new FixedWindowLimiter({ ...o.badTokenBackoff, maxKeys: 100_000 });
    this.metrics = new ProxyMetrics(o.registry, () => this.stats());
    this.wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      maxPayload: o.maxPayload,
      // RFB is already compressed where it matters (Tight/ZRLE); deflate would cost CPU and memory per connection.
      perMessageDeflate: false,
      // Only binary frames are relayed; text frames close the connection, so their UTF-8 is never looked at.
      skipUTF8Validation: true,
      // noVNC offers 'binary'; clients that offer nothing get no subprotocol; anything else gets none of theirs.
      handleProtocols: (protocols) => (protocols.has('binary') ? 'binary' : false),
    });

    const sweepMs = Math.min(1000, o.idleTimeoutMs);
    this.sweeper = setInterval(() => this.sweep(), sweepMs).unref();
    this.revalidator = setInterval(() => void this.revalidateNow(), o.revalidateIntervalMs).unref();
    this.heartbeat = setInterval(() => this.ping(), o.heartbeatMs).unref();
  }

  /** Open connection count (for /metrics and the dashboard). */
  get connections(): number {
    return this.live.size;
  }

  /**
   * For http.Server 'upgrade'. Never throws: a request it cannot make sense of is refused with a documented error and
   * one log line, and the process carries on. Checks run cheapest first and the token last, so a refused request
   * consumes no token; the per-IP slot taken before the token check is given back when the socket closes, whatever
   * closed it.
   */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    // A client that resets during authorize() must not become an uncaught 'error'.
    socket.on('error', noop);
    try {
      this.screen(req, socket, head);
    } catch (err) {
      this.log.error({ err }, 'desktop connection refused: unexpected error while checking the request');
      this.refuse(socket, new InternalError(), 'unexpected error', req.socket?.remoteAddress ?? '');
    }
  }

  private screen(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const peer = req.socket.remoteAddress ?? '';
    const checked = checkUpgradeRequest(req, this.options.path);
    if (checked instanceof VncDispatchError) {
      const headers = checked.message.includes('Sec-WebSocket-Version') ? { 'Sec-WebSocket-Version': '13, 8' } : undefined;
      this.refuse(socket, checked, 'not a WebSocket upgrade for the proxy', peer, undefined, { path: safeTarget(req.url) }, headers);
      return;
    }
    if (this.closing) {
      this.refuse(socket, new ProxyUnavailableError('The proxy is shutting down.'), 'shutting down', peer);
      return;
    }
    const peerIsTrustedProxy = peer !== '' && this.trust(peer, 0);
    const clientIp = proxyaddr(req, this.trust);
    if (!originAllowed(req, this.allowedOrigins, peerIsTrustedProxy)) {
      this.refuse(socket, new OriginForbiddenError(), 'origin not allowed', clientIp, undefined, { origin: String(req.headers.origin).slice(0, 200) });
      return;
    }
    const now = Date.now();
    const wait = this.backoff.blockedFor(clientIp, now);
    const { token } = checked;
    // In back-off only tokens that cannot be valid are refused unseen: a valid token from the same address (another
    // user behind the same NAT) still gets in, while junk costs no store lookup.
    if (token === null || (wait > 0 && !this.options.wellFormedToken(token))) {
      this.backoff.record(clientIp, now);
      if (wait > 0) this.refuse(socket, new TooManyBadTokensError(), 'bad-token back-off', clientIp, Math.ceil(wait / 1000));
      else this.refuse(socket, new TokenRequiredError(), 'no token', clientIp);
      return;
    }
    // Reserve the slot before authorize() so a refused excess request never consumes a single-use token.
    if (!this.perIp.acquire(clientIp)) {
      this.refuse(socket, new TooManyConnectionsError(), 'per-IP connection cap', clientIp, 5);
      return;
    }
    socket.once('close', () => this.perIp.release(clientIp));
    void this.admit(req, socket, head, token, clientIp, wait > 0);
  }

  /**
   * What this controller's proxy carries for each session with an open connection: viewers, bytes each way (of the
   * open connections) and the viewers' client addresses. Sessions without a connection here are absent.
   */
  sessionStats(): Map<string, SessionConnectionStats> {
    const out = new Map<string, SessionConnectionStats>();
    for (const c of this.live) {
      let s = out.get(c.target.sessionId);
      if (!s) out.set(c.target.sessionId, (s = { viewers: 0, bytesDown: 0, bytesUp: 0, viewerIps: [] }));
      s.viewers++;
      s.bytesDown += c.down;
      s.bytesUp += c.up;
      if (!s.viewerIps.includes(c.clientIp)) s.viewerIps.push(c.clientIp);
    }
    return out;
  }

  /** Closes every live connection of a session now; returns how many. */
  closeSession(sessionId: string, reason: string): number {
    let n = 0;
    for (const conn of [...this.live]) {
      if (conn.target.sessionId !== sessionId) continue;
      conn.shutdown('session-closed', CLOSE_TEXT, reason);
      n++;
    }
    return n;
  }

  /** Stops accepting, closes every connection (1001 to browsers) and waits briefly for them to go. */
  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.sweeper);
    clearInterval(this.revalidator);
    clearInterval(this.heartbeat);
    for (const conn of [...this.live]) conn.shutdown('proxy-shutdown', 'server shutting down');
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }

  private async admit(req: IncomingMessage, socket: Duplex, head: Buffer, token: string, clientIp: string, backingOff: boolean): Promise<void> {
    let target: ProxyTarget;
    try {
      target = await withTimeout(this.options.authorize(token, clientIp), this.options.handshakeTimeoutMs,
        () => new ProxyUnavailableError('The token check timed out.'));
    } catch (err) {
      if (err instanceof VncDispatchError && (err.statusCode === 401 || err.statusCode === 403)) {
        const now = Date.now();
        this.backoff.record(clientIp, now);
        if (backingOff) {
          const wait = Math.max(1, this.backoff.blockedFor(clientIp, now));
          this.refuse(socket, new TooManyBadTokensError(), 'bad-token back-off', clientIp, Math.ceil(wait / 1000), { refusedAs: err.code });
        } else {
          this.refuse(socket, err, 'token refused', clientIp);
        }
      } else {
        this.log.error({ err, clientIp }, 'token check failed');
        this.refuse(socket, err instanceof VncDispatchError ? err : new ProxyUnavailableError(), 'token check failed', clientIp);
      }
      return;
    }
    // Checked here too: ws destroys a socket that is no longer readable and writable without a word.
    if (this.closing || socket.destroyed || !socket.readable || !socket.writable) {
      socket.destroy();
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      socket.off('error', noop);
      const conn = new ProxyConnection(
        target,
        clientIp,
        ws,
        socket,
        this.options,
        this.log,
        this.metrics,
        (c) => {
          if (this.live.delete(c)) {
            this.closedBytesDown += c.down;
            this.closedBytesUp += c.up;
          }
        },
      );
      this.live.add(conn);
      conn.start();
    });
  }

  private refuse(socket: Duplex, err: VncDispatchError, why: string, clientIp: string, retryAfter?: number, extra?: object,
    headers?: Record<string, string>): void {
    this.metrics.refused(err.code);
    this.log.info({ clientIp, code: err.code, status: err.statusCode, ...extra }, `desktop connection refused: ${why}`);
    refuseRaw(socket, err, { ...(retryAfter !== undefined && { retryAfter }), ...(headers && { headers }) });
  }

  private stats() {
    let down = this.closedBytesDown;
    let up = this.closedBytesUp;
    for (const c of this.live) {
      down += c.down;
      up += c.up;
    }
    return { open: this.live.size, bytesDown: down, bytesUp: up };
  }

  /** Idle check (no bytes either way since the last change), buffers of quiet connections, back-off table pruning. */
  private sweep(): void {
    const now = Date.now();
    for (const conn of [...this.live]) {
      const total = conn.down + conn.up;
      if (total !== conn.lastTotal) {
        conn.lastTotal = total;
        conn.lastActivityAt = now;
      } else if (now - conn.lastActivityAt >= this.options.idleTimeoutMs) {
        conn.shutdown('idle-timeout', 'idle timeout');
      } else {
        conn.quiet();
      }
    }
    this.backoff.prune(now);
  }

  private ping(): void {
    for (const conn of [...this.live]) conn.ping();
  }

  private async revalidateNow(): Promise<void> {
    if (this.revalidating || this.live.size === 0) return;
    this.revalidating = true;
    const snapshot = [...this.live];
    const byToken = new Map<string, ProxyTarget>();
    for (const c of snapshot) byToken.set(c.target.tokenHash, c.target);
    try {
      const allowed = await this.options.revalidate([...byToken.values()]);
      for (const conn of snapshot) {
        if (!allowed.has(conn.target.tokenHash)) conn.shutdown('revoked', CLOSE_TEXT, 'token revoked or session ended');
      }
    } catch (err) {
      this.log.warn({ err }, 'revalidating open desktop connections failed; keeping them open');
    } finally {
      this.revalidating = false;
    }
  }
}

function noop(): void {}

/** The request target for a log line: bounded, and only the path (the query may hold a token). */
function safeTarget(target: string | undefined): string {
  return String(target ?? '').split('?')[0]!.slice(0, 200);
}

