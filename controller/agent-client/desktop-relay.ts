/**
 * The controller's end of an agent's desktop relay (see RelayOpen in agent.proto): a TLS connection to the agent's
 * port with the same client certificate, CA and server-identity check as the gRPC channel (AgentCredentials), ALPN
 * "vncdispatch-relay/1", the magic, a RelayOpen naming the session; the agent's RelayOpened says whether the desktop
 * answered. The returned socket is the caller's at once (reads go to its `onread` from the first RFB byte), and
 * `opened` settles when the agent has answered, or rejects before any RFB byte with the error the browser's close
 * reason names (the viewer page turns each into a sentence):
 *   - the agent's port refuses or drops the connection (the blade or its agent is down): VD_ERR_BLADE_DOWN;
 *   - no answer within the timeout: VD_ERR_RELAY_TIMEOUT;
 *   - the agent runs no such desktop: VD_ERR_DESKTOP_NOT_FOUND;
 *   - the agent cannot connect to the desktop's socket: VD_ERR_DESKTOP_UNREACHABLE;
 *   - anything else (a certificate that is not the blade's, no relay ALPN, garbage): VD_ERR_VNC_CONNECT.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { RelayOpen, RelayOpened } from '../../proto/gen/vncdispatch/agent/v1/agent.js';
import {
  BladeDownError, DesktopNotFoundError, DesktopUnreachableError, RelayTimeoutError, VncConnectError, type VncDispatchError,
} from '../errors.js';
import type { DesktopReads, DesktopStream } from '../proxy/target.js';

export const RELAY_ALPN = 'vncdispatch-relay/1';
const RELAY_MAGIC = Buffer.from('VDRELAY1', 'latin1');
/** Longest RelayOpened accepted (a code and a short message). */
const MAX_RELAY_OPENED = 4096;
/** Socket errors that mean the agent's port is not there (as opposed to a TLS or protocol failure). */
const NETWORK_DOWN = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ETIMEDOUT',
  'EPIPE', 'ENOTFOUND', 'EAI_AGAIN']);

type RelayErrorClass = new (message?: string, options?: ErrorOptions) => VncDispatchError;

/** Which error a refusal from the agent (RelayOpened.code) becomes. */
function refusalError(agentCode: string): RelayErrorClass {
  if (agentCode === 'VD_AGENT_SESSION_NOT_FOUND') return DesktopNotFoundError;
  if (agentCode === 'VD_AGENT_DESKTOP_UNREACHABLE') return DesktopUnreachableError;
  return VncConnectError;
}

export interface RelayDialOptions {
  host: string;
  port: number;
  /** Mutual TLS options from AgentCredentials; null = --insecure-agents (plain TCP, same protocol). */
  tls: ConnectionOptions | null;
  sessionId: string;
  /** For the TLS handshake, the RelayOpen and the agent's answer together. */
  timeoutMs: number;
  onread: DesktopReads;
  /** Names the blade in error messages. */
  blade: string;
}

/** Opens a relay to one desktop. Never throws; failures reject `opened`. */
export function openDesktopRelay(o: RelayDialOptions): DesktopStream {
  let pending: Buffer = Buffer.alloc(0);
  let state: 'opening' | 'open' | 'failed' = 'opening';
  let settle!: (err?: VncDispatchError) => void;
  const opened = new Promise<void>((resolve, reject) => {
    settle = (err) => (err ? reject(err) : resolve());
  });
  opened.catch(() => undefined);
  const fail = (why: string, cause?: unknown, Err: RelayErrorClass = VncConnectError) => {
    if (state !== 'opening') return;
    state = 'failed';
    clearTimeout(timer);
    socket.destroy();
    settle(new Err(`blade ${o.blade}: ${why}`, { cause }));
  };

  const onread = {
    buffer: o.onread.buffer,
    callback: (n: number, buf: Buffer): boolean => {
      if (state === 'open') return o.onread.callback(n, buf);
      if (state === 'failed') return false;
      pending = Buffer.concat([pending, buf.subarray(0, n)]);
      if (pending.length < 2) return true;
      const len = pending.readUInt16BE(0);
      if (len > MAX_RELAY_OPENED) {
        fail('the agent answered the relay with garbage');
        return false;
      }
      if (pending.length < 2 + len) return true;
      let answer: RelayOpened;
      try {
        answer = RelayOpened.decode(pending.subarray(2, 2 + len));
      } catch (err) {
        fail('the agent answered the relay with garbage', err);
        return false;
      }
      if (!answer.ok) {
        fail(`the desktop cannot be reached: ${printable(answer.code)}: ${printable(answer.message)}`, undefined,
          refusalError(answer.code));
        return false;
      }
      state = 'open';
      clearTimeout(timer);
      settle();
      const rest = pending.subarray(2 + len);
      pending = Buffer.alloc(0);
      if (rest.length === 0) return true;
      // The desktop's first bytes came with the answer: hand them on as a read of their own.
      const next = o.onread.buffer();
      rest.copy(next);
      return o.onread.callback(rest.length, next);
    },
  };

  const socket: Socket = o.tls
    // TLSSocket honours net's `onread` (the typings of tls.connect omit it).
    ? tlsConnect({ ...o.tls, host: o.host, port: o.port, ALPNProtocols: [RELAY_ALPN], onread } as ConnectionOptions)
    : netConnect({ host: o.host, port: o.port, onread });
  socket.setNoDelay(true);
  const timer = setTimeout(() => fail(`no answer from the agent's relay within ${o.timeoutMs} ms`, undefined, RelayTimeoutError),
    o.timeoutMs);
  const hello = () => {
    if (o.tls && (socket as TLSSocket).alpnProtocol !== RELAY_ALPN) {
      fail('the agent does not offer the desktop relay (ALPN); is it older than the controller?');
      return;
    }
    const body = RelayOpen.encode({ sessionId: o.sessionId }).finish();
    const head = Buffer.alloc(RELAY_MAGIC.length + 2);
    RELAY_MAGIC.copy(head);
    head.writeUInt16BE(body.length, RELAY_MAGIC.length);
    socket.write(Buffer.concat([head, body]));
  };
  socket.once(o.tls ? 'secureConnect' : 'connect', hello);
  socket.on('error', (err: NodeJS.ErrnoException) => fail(`cannot reach the agent's relay (${err.code ?? err.message})`, err,
    err.code !== undefined && NETWORK_DOWN.has(err.code) ? BladeDownError : VncConnectError));
  socket.on('close', () => fail('the agent closed the relay before the desktop answered', undefined, BladeDownError));
  return { socket, opened };
}

function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?').slice(0, 300);
}
