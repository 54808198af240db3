/**
 * The desktop relay: the only way to a desktop from outside the blade. A connection that the agent's port handed
 * over (already mutually authenticated by TLS unless --insecure) names a session in its RelayOpen; the agent
 * connects to that desktop's Unix socket and answers ok only once the desktop accepted, so the controller knows the
 * desktop is there before it starts the browser's RFB handshake. From then on bytes pass unchanged both ways, and
 * the relay ends with the desktop: when the session ends, its relays are closed at once.
 */
import { connect, type Socket } from 'node:net';
import type { Logger } from 'pino';
import type { AgentErrorCode } from '../errors.js';
import type { SessionEnded, SessionManager } from '../sessions/manager.js';
import { DesktopReads, relayOneWay } from './relay-pipe.js';
import { encodeRelayOpened, parseRelayOpen } from './relay-wire.js';

const SESSION_ID = /^[0-9a-f-]{36}$/;

export interface DesktopRelayOptions {
  sessions: Pick<SessionManager, 'desktopSocket' | 'on'>;
  log: Logger;
  /** The client must send its RelayOpen, and the desktop accept, within this. */
  handshakeTimeoutMs: number;
  /** Reading one side pauses while the other holds more than this many unwritten bytes (relay-pipe.ts). */
  maxQueuedBytes: number;
}

export class DesktopRelay {
  private readonly log: Logger;
  /** Open relays by session id, closed when their session ends. */
  private readonly bySession = new Map<string, Set<Socket>>();

  constructor(private readonly opts: DesktopRelayOptions) {
    this.log = opts.log.child({ module: 'relay' });
    opts.sessions.on('ended', (e: SessionEnded) => {
      const open = this.bySession.get(e.id);
      if (!open) return;
      for (const s of open) s.destroy();
      this.bySession.delete(e.id);
    });
  }

  /** Open relays (for tests and status). */
  get open(): number {
    let n = 0;
    for (const s of this.bySession.values()) n += s.size;
    return n;
  }

  /** Takes over a connection whose first bytes are the relay magic. Never throws. */
  handle(client: Socket): void {
    const peer = `${client.remoteAddress ?? '?'}:${client.remotePort ?? '?'}`;
    let buf: Buffer = Buffer.alloc(0);
    let done = false;
    const timer = setTimeout(() => refuse('VD_AGENT_RELAY_REFUSED', 'no RelayOpen in time'), this.opts.handshakeTimeoutMs);
    const refuse = (code: AgentErrorCode, message: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      client.off('data', onData);
      this.log.info({ peer, code }, `relay refused: ${message}`);
      if (client.writable) client.end(encodeRelayOpened({ ok: false, code, message }));
      // A client that does not read its refusal must not keep the socket.
      setTimeout(() => client.destroy(), 1000).unref();
    };
    const onData = (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      const parsed = parseRelayOpen(buf);
      if (parsed === null) return;
      if ('error' in parsed) {
        refuse('VD_AGENT_RELAY_REFUSED', parsed.error);
        return;
      }
      client.off('data', onData);
      client.pause();
      const id = parsed.open.sessionId;
      if (!SESSION_ID.test(id)) {
        refuse('VD_AGENT_RELAY_REFUSED', 'the session id is not a UUID');
        return;
      }
      const path = this.opts.sessions.desktopSocket(id);
      if (path === undefined) {
        refuse('VD_AGENT_SESSION_NOT_FOUND', `no live session ${id} on this blade`);
        return;
      }
      this.connectDesktop(client, id, path, parsed.rest, timer, peer, () => {
        done = true;
      }, refuse);
    };
    client.on('error', (err) => {
      this.log.debug({ peer, err }, 'relay client error');
      clearTimeout(timer);
    });
    client.on('close', () => clearTimeout(timer));
    client.on('data', onData);
  }

  private connectDesktop(client: Socket, id: string, path: string, early: Buffer, timer: NodeJS.Timeout, peer: string,
    accepted: () => void, refuse: (code: AgentErrorCode, message: string) => void, attempt = 0): void {
    // Refused (the handshake deadline passed) or gone while we waited to retry.
    if (client.destroyed || client.writableEnded) return;
    const reads = new DesktopReads(this.opts.maxQueuedBytes);
    const desktop = connect({ path, onread: reads });
    // Node clears `connecting` before it emits a failed connect's error, so whether the connect succeeded is ours to track.
    let connected = false;
    desktop.once('error', (err: NodeJS.ErrnoException) => {
      if (connected) return;
      // Xvnc listens with a backlog of 5, and a Unix socket whose backlog is full refuses at once with EAGAIN instead
      // of queueing like TCP. Many viewers opening one desktop together hit that; retry until the handshake deadline
      // (the timer refuses then), with a short back-off so the desktop gets time to accept.
      if (err.code === 'EAGAIN') {
        const delay = Math.min(50, 2 << Math.min(attempt, 5)) + Math.floor(Math.random() * 5);
        setTimeout(() => this.connectDesktop(client, id, path, early, timer, peer, accepted, refuse, attempt + 1), delay);
        return;
      }
      refuse('VD_AGENT_DESKTOP_UNREACHABLE', `the desktop of session ${id} does not answer (${err.code ?? err.message})`);
    });
    desktop.once('connect', () => {
      connected = true;
      if (client.destroyed) {
        desktop.destroy();
        return;
      }
      // The session may have ended while we connected.
      if (this.opts.sessions.desktopSocket(id) === undefined) {
        desktop.destroy();
        refuse('VD_AGENT_SESSION_NOT_FOUND', `session ${id} ended`);
        return;
      }
      accepted();
      clearTimeout(timer);
      let open = this.bySession.get(id);
      if (!open) this.bySession.set(id, (open = new Set()));
      open.add(client);
      const t0 = Date.now();
      const end = () => {
        client.destroy();
        desktop.destroy();
        const set = this.bySession.get(id);
        if (set?.delete(client) && set.size === 0) this.bySession.delete(id);
      };
      client.setNoDelay(true);
      client.on('close', end);
      desktop.on('close', end);
      desktop.on('error', (err) => this.log.debug({ peer, session: id, err }, 'desktop socket error'));
      client.write(encodeRelayOpened({ ok: true, code: '', message: '' }));
      if (early.length > 0) desktop.write(early);
      relayOneWay(client, desktop, this.opts.maxQueuedBytes);
      reads.attach(desktop, client);
      client.once('close', () => this.log.debug({ peer, session: id, ms: Date.now() - t0 }, 'relay closed'));
    });
  }
}
