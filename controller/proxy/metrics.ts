/**
 * Prometheus metrics of the proxy. Byte totals are plain per-connection numbers on the hot path and summed only when
 * scraped (a `collect` hook adds the difference), so moving data costs an addition, not a label lookup.
 */
import { Counter, Gauge, type Registry } from 'prom-client';

/** Why a connection ended; a bounded set so it can be a metric label. */
export type CloseReason =
  | 'browser-closed'
  | 'vnc-closed'
  | 'vnc-error'
  | 'connect-failed'
  | 'handshake-failed'
  | 'handshake-timeout'
  | 'payload-too-large'
  | 'protocol-error'
  | 'idle-timeout'
  | 'heartbeat-timeout'
  | 'revoked'
  | 'session-closed'
  | 'proxy-shutdown';

/** What the proxy reports at scrape time. */
export interface ProxyStats {
  open: number;
  /** Bytes relayed so far by open and closed connections. */
  bytesDown: number;
  bytesUp: number;
}

export class ProxyMetrics {
  private readonly closed: Counter<'reason'>;
  private readonly refusals: Counter<'code'>;
  private readonly handshakeFailures: Counter<'code'>;

  constructor(registry: Registry | undefined, stats: () => ProxyStats) {
    const registers = registry ? [registry] : [];
    new Gauge({
      name: 'vncdispatch_proxy_connections_open',
      help: 'Desktop WebSocket connections open now (including those still in the RFB handshake).',
      registers,
      collect() {
        this.set(stats().open);
      },
    });
    this.closed = new Counter({
      name: 'vncdispatch_proxy_connections_total',
      help: 'Desktop WebSocket connections accepted and since closed, by close reason.',
      labelNames: ['reason'],
      registers,
    });
    let reportedDown = 0;
    let reportedUp = 0;
    new Counter({
      name: 'vncdispatch_proxy_bytes_total',
      help: 'Bytes relayed by the proxy; direction=downstream is desktop to browser, upstream is browser to desktop.',
      labelNames: ['direction'],
      registers,
      collect() {
        const { bytesDown, bytesUp } = stats();
        this.inc({ direction: 'downstream' }, bytesDown - reportedDown);
        this.inc({ direction: 'upstream' }, bytesUp - reportedUp);
        reportedDown = bytesDown;
        reportedUp = bytesUp;
      },
    });
    this.handshakeFailures = new Counter({
      name: 'vncdispatch_proxy_handshake_failures_total',
      help: 'Connections that ended in the RFB handshake or while connecting to the desktop, by error code.',
      labelNames: ['code'],
      registers,
    });
    this.refusals = new Counter({
      name: 'vncdispatch_proxy_refusals_total',
      help: 'WebSocket upgrades refused before any desktop connection was opened, by error code.',
      labelNames: ['code'],
      registers,
    });
  }

  connectionClosed(reason: CloseReason): void {
    this.closed.inc({ reason });
  }

  handshakeFailed(code: string): void {
    this.handshakeFailures.inc({ code });
  }

  refused(code: string): void {
    this.refusals.inc({ code });
  }
}
