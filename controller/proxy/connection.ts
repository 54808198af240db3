/**
 * One browser-to-desktop connection after the upgrade was accepted: reaches the desktop first (through its agent's
 * relay) and authenticates to Xvnc, and only then starts the browser's RFB handshake (security None), forwards the
 * browser's ClientInit, waits for the desktop's ServerInit (still under the handshake timeout), then becomes a byte
 * pipe. So a desktop that cannot be reached is a WebSocket close with a
 * code and a reason (1011, VD_ERR_VNC_...) before the browser has seen any RFB, not a half-done handshake that looks
 * like a dropped line. Whichever side ends, the other is closed, and the connection is logged once at open and once
 * at close.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { DesktopNotFoundError, DesktopUnreachableError, VncDispatchError, VncHandshakeError } from '../errors.js';
import { pipeBytes, VncReader, type ByteCounters } from './byte-pipe.js';
import type { CloseReason, ProxyMetrics } from './metrics.js';
import { RfbBrowserHandshake } from './rfb-browser-handshake.js';
import { RfbClientHandshake } from './rfb-handshake.js';
import type { ProxyTarget } from './target.js';

export interface ConnectionSettings {
  maxReadBytes: number;
  handshakeTimeoutMs: number;
  connectTimeoutMs: number;
  desktopGoneGraceMs: number;
  maxReasonLength: number;
}

/** WebSocket close codes (RFC 6455 §7.4.1) the proxy uses towards the browser. */
const WS_NORMAL = 1000;
const WS_GOING_AWAY = 1001;
const WS_UNSUPPORTED_DATA = 1003;
const WS_POLICY = 1008;
const WS_INTERNAL = 1011;

/** Bytes a browser may send between ClientInit and the end of the VNC handshake (it should send none). */
const MAX_EARLY_UPSTREAM = 64 * 1024;

export class ProxyConnection implements ByteCounters {
  down = 0;
  up = 0;
  /** Heartbeat: set by pong, cleared by each ping round. */
  alive = true;
  /** Idle tracking: byte total at the last sweep and when it last changed. */
  lastTotal = 0;
  lastActivityAt: number;
  readonly openedAt: number;
  private tcp: Socket | null = null;
  /** The relay said the desktop answered. */
  private desktopOpen = false;
  /** The desktop's socket closed before `desktopOpen` was known. */
  private desktopClosedEarly = false;
  private closed = false;
  private piping = false;
  private timer: NodeJS.Timeout | null = null;
  /** Set while the desktop is gone and the connection waits for its session's end (desktopGoneGraceMs). */
  private grace: NodeJS.Timeout | null = null;
  private vncHs: RfbClientHandshake | null;
  private browserHs: RfbBrowserHandshake | null = new RfbBrowserHandshake();
  private vncReady = false;
  private early: Buffer[] | null = null;
  private earlyBytes = 0;
  /** The desktop's ServerInit received so far, once ClientInit went to the desktop; null before and after. */
  private serverInit: Buffer | null = null;
  private readonly reader: VncReader;

  constructor(
    readonly target: ProxyTarget,
    readonly clientIp: string,
    private readonly ws: WebSocket,
    private readonly wsSocket: Duplex,
    private readonly settings: ConnectionSettings,
    private readonly log: Logger,
    private readonly metrics: ProxyMetrics,
    private readonly onClosed: (conn: ProxyConnection) => void,
  ) {
    this.openedAt = Date.now();
    this.lastActivityAt = this.openedAt;
    this.reader = new VncReader(settings.maxReadBytes, this.onVncHandshake);
    this.vncHs = new RfbClientHandshake({ password: target.password, maxReasonLength: settings.maxReasonLength });
  }

  /** Reaches the desktop and authenticates to it; the browser's handshake starts once that is done. */
  start(): void {
    const { target, ws } = this;
    this.log.info(this.describe(), 'desktop connection opened');
    this.timer = setTimeout(() => this.fail('handshake-timeout', new VncHandshakeError('RFB handshake timed out')), this.settings.handshakeTimeoutMs);

    ws.on('close', () => this.close('browser-closed'));
    ws.on('error', (err: Error & { code?: string }) => {
      // ws has already answered with the right close code (1009 for maxPayload, 1002 for bad frames).
      const reason: CloseReason = err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? 'payload-too-large' : 'protocol-error';
      this.close(reason, undefined, undefined, err);
    });
    ws.on('pong', () => {
      this.alive = true;
    });
    // The browser speaks only after our ProtocolVersion, which it gets once the desktop is authenticated.
    ws.on('message', this.onEarlyBrowserMessage);

    let stream;
    try {
      stream = target.desktop({ buffer: this.reader.buffer, callback: this.reader.onRead }, this.settings.connectTimeoutMs);
    } catch (err) {
      this.fail('connect-failed', toProxyError(err));
      return;
    }
    const tcp = stream.socket;
    this.tcp = tcp;
    tcp.on('error', (err) => {
      // The browser sees a documented code as the reason, like every other desktop-side failure.
      if (this.desktopOpen) this.close('vnc-error', WS_INTERNAL, DesktopUnreachableError.code, err);
    });
    tcp.on('close', () => {
      if (this.desktopOpen) this.onDesktopClosed();
      else this.desktopClosedEarly = true;
    });
    stream.opened.then(
      () => {
        this.desktopOpen = true;
        if (this.desktopClosedEarly) this.onDesktopClosed();
      },
      (err: unknown) => {
        const e = toProxyError(err);
        if (e instanceof DesktopNotFoundError || e instanceof DesktopUnreachableError) this.awaitSessionEnd(() => this.fail('connect-failed', e));
        else this.fail('connect-failed', e);
      },
    );
  }

  private onDesktopClosed(): void {
    if (this.piping) this.awaitSessionEnd(() => this.close('vnc-closed', WS_NORMAL, 'desktop closed the connection'));
    else this.fail('handshake-failed', new VncHandshakeError('desktop server closed the connection during the RFB handshake'));
  }

  /**
   * The desktop is gone. If its session is ending, the controller closes this connection within the grace period
   * (shutdown(), 1008 "session ended") and the viewer asks and hears "ended" at once; otherwise `thenClose` tells the
   * browser what happened to the desktop. What the browser sends meanwhile goes nowhere (the desktop's socket is
   * destroyed) and costs nothing.
   */
  private awaitSessionEnd(thenClose: () => void): void {
    if (this.closed || this.grace) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.grace = setTimeout(thenClose, this.settings.desktopGoneGraceMs);
  }

  private readonly onEarlyBrowserMessage = (): void => {
    this.close('protocol-error', WS_POLICY, 'the browser spoke before the server');
  };

  /** The desktop accepted our VNC authentication: now the browser's side of the handshake. */
  private startBrowserHandshake(): void {
    if (this.closed || !this.browserHs) return;
    this.ws.off('message', this.onEarlyBrowserMessage);
    this.ws.on('message', this.onBrowserHandshake);
    this.ws.send(this.browserHs.start());
  }

  /** Closes both sides. Idempotent; logs and counts once. */
  close(reason: CloseReason, code = WS_NORMAL, text = '', err?: unknown, detail?: string): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.grace) clearTimeout(this.grace);
    // Whatever paused the browser's socket (backpressure towards the desktop), its answer to our close frame must be
    // read, or the browser hears of the close only after its own timeout.
    this.ws.resume();
    this.tcp?.destroy();
    if (reason === 'heartbeat-timeout') this.ws.terminate();
    else if (this.ws.readyState === this.ws.OPEN || this.ws.readyState === this.ws.CONNECTING) this.ws.close(code, text);
    this.vncHs = null;
    this.browserHs = null;
    this.early = null;
    this.serverInit = null;
    const failedInHandshake = !this.piping && err instanceof VncDispatchError;
    const entry = {
      ...this.describe(),
      reason,
      ...(detail ? { detail } : {}),
      bytesDown: this.down,
      bytesUp: this.up,
      durationMs: Date.now() - this.openedAt,
      ...(err ? { err } : {}),
    };
    if (failedInHandshake) this.log.warn(entry, 'desktop connection closed: %s', (err as Error).message);
    else this.log.info(entry, 'desktop connection closed');
    if (failedInHandshake) this.metrics.handshakeFailed(err.code);
    this.metrics.connectionClosed(reason);
    this.onClosed(this);
  }

  /** A failure before the pipe is up: the browser gets 1011 with the error code as close reason. */
  private fail(reason: CloseReason, err: VncDispatchError, code = WS_INTERNAL): void {
    this.close(reason, code, err.code, err);
  }

  /** No bytes moved since the last sweep: let the reader give back its spare buffers. */
  quiet(): void {
    this.reader.trim();
  }

  /** One heartbeat round: terminate if the previous ping went unanswered, else ping again. */
  ping(): void {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    if (!this.alive) {
      this.close('heartbeat-timeout');
      return;
    }
    this.alive = false;
    this.ws.ping();
  }

  /** Close initiated by the proxy: shutdown (1001), idle (1000), session ended or token revoked (1008). */
  shutdown(reason: CloseReason, text: string, detail?: string): void {
    const code = reason === 'proxy-shutdown' ? WS_GOING_AWAY : reason === 'idle-timeout' ? WS_NORMAL : WS_POLICY;
    this.close(reason, code, text, undefined, detail);
  }

  private describe() {
    const t = this.target;
    return { sessionId: t.sessionId, user: t.username, blade: t.blade, clientIp: this.clientIp };
  }

  private readonly onVncHandshake = (chunk: Buffer): void => {
    if (this.closed) return;
    if (this.serverInit) {
      this.onServerInit(chunk);
      return;
    }
    if (!this.vncHs) return;
    try {
      const out = this.vncHs.feed(chunk);
      for (const b of out.send) this.tcp!.write(b);
      if (out.done) {
        // Hold anything further from Xvnc until the browser has caught up; it all belongs to the byte pipe.
        this.tcp!.pause();
        this.vncReady = true;
        this.startBrowserHandshake();
      }
    } catch (err) {
      this.fail('handshake-failed', toProxyError(err));
    }
  };

  private readonly onBrowserHandshake = (data: Buffer, isBinary: boolean): void => {
    if (this.closed) return;
    if (!isBinary) {
      this.close('protocol-error', WS_UNSUPPORTED_DATA, 'binary frames only');
      return;
    }
    if (this.early) {
      // ClientInit already received; Xvnc has not finished yet. A well-behaved browser sends nothing here.
      this.earlyBytes += data.length;
      if (this.earlyBytes > MAX_EARLY_UPSTREAM) this.close('protocol-error', WS_POLICY, 'too much data before ServerInit');
      else this.early.push(data);
      return;
    }
    try {
      const out = this.browserHs!.feed(data);
      for (const b of out.send) this.ws.send(b);
      if (out.clientInit) {
        this.early = [out.clientInit];
        this.earlyBytes = out.clientInit.length;
        this.maybeStartPipe();
      }
    } catch (err) {
      const reply = (err as { reply?: Buffer }).reply;
      if (reply) this.ws.send(reply);
      const e = toProxyError(err);
      this.close('handshake-failed', WS_POLICY, e.code, e);
    }
  };

  /**
   * Both security phases are done and the browser sent ClientInit: it goes to the desktop, and the handshake ends
   * with the desktop's ServerInit, still under the handshake timeout (a desktop that never sends it, or sends half of
   * one, ends in 1011 VD_ERR_VNC_HANDSHAKE instead of a viewer waiting forever).
   */
  private maybeStartPipe(): void {
    if (!this.vncReady || !this.early || this.closed || this.serverInit) return;
    const tcp = this.tcp!;
    const rest = this.vncHs!.takeRest();
    this.vncHs = null;
    const clientInit = this.early;
    // Anything further from the browser (a well-behaved one sends nothing) waits for the pipe, as before.
    this.early = [];
    this.earlyBytes = 0;
    for (const b of clientInit) {
      this.up += b.length;
      tcp.write(b);
    }
    this.serverInit = Buffer.alloc(0);
    if (rest.length > 0) this.onServerInit(rest);
    if (!this.closed && !this.piping) tcp.resume();
  }

  /** ServerInit (RFC 6143 §7.3.2): 24 bytes, the last a name length, then the name (bounded like a reason). */
  private onServerInit(chunk: Buffer): void {
    const buf = Buffer.concat([this.serverInit!, chunk]);
    if (buf.length < 24) {
      this.serverInit = buf;
      return;
    }
    const nameLength = buf.readUInt32BE(20);
    if (nameLength > this.settings.maxReasonLength) {
      this.fail('handshake-failed', new VncHandshakeError(`desktop sent a ${nameLength}-byte name (limit ${this.settings.maxReasonLength})`));
      return;
    }
    if (buf.length < 24 + nameLength) {
      this.serverInit = buf;
      return;
    }
    this.serverInit = null;
    this.startPipe(buf);
  }

  /** The handshake is over: `first` (ServerInit and anything after it) goes to the browser, then bytes flow. */
  private startPipe(first: Buffer): void {
    const tcp = this.tcp!;
    const early = this.early ?? [];
    this.browserHs = null;
    this.early = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.ws.off('message', this.onBrowserHandshake);
    this.piping = true;
    for (const b of early) {
      this.up += b.length;
      tcp.write(b);
    }
    this.down += first.length;
    this.ws.send(first);
    pipeBytes(this.ws, this.wsSocket, tcp, this.reader, this, {
      onTextFrame: () => this.close('protocol-error', WS_UNSUPPORTED_DATA, 'binary frames only'),
    });
    tcp.resume();
  }
}

function toProxyError(err: unknown): VncDispatchError {
  return err instanceof VncDispatchError ? err : new VncHandshakeError('unexpected error in the RFB handshake', { cause: err });
}
