/**
 * The proxy's side of the RFB handshake as a CLIENT of the desktop's Xvnc (RFC 6143 §7.1-7.2): protocol version
 * (3.3, 3.7, 3.8), security negotiation, VNC authentication with the session password, SecurityResult. A pure state
 * machine: feed it the server's bytes, write out what it returns; it throws a VncDispatchError on anything it does not
 * accept. Every length the server sends is bounded before it is waited for, so a hostile server can neither grow
 * memory nor make the proxy wait for gigabytes that never come.
 */
import { VNC_CHALLENGE_LENGTH, vncAuthResponse } from '../../shared/vnc-des.js';
import { VncAuthFailedError, VncHandshakeError, type VncDispatchError } from '../errors.js';
import {
  ByteQueue,
  parseVersion,
  printable,
  SECURITY_INVALID,
  SECURITY_NONE,
  SECURITY_VNC_AUTH,
  VERSION_LENGTH,
  versionMessage,
  type RfbMinor,
} from './rfb-wire.js';

export interface RfbClientHandshakeOptions {
  /** The session's VNC password (used only for the DES response; never logged). */
  password: string;
  /** Longest failure-reason string accepted from the server. */
  maxReasonLength: number;
}

export interface HandshakeOutput {
  /** Bytes to write to the server, in order. */
  send: Buffer[];
  /** True once SecurityResult said OK: the next message is the browser's ClientInit. */
  done: boolean;
}

type State = 'version' | 'security-3.3' | 'security-types' | 'challenge' | 'result' | 'reason' | 'done';

const DEFAULTS = { maxReasonLength: 4096 };

/** Client-side RFB handshake towards Xvnc. */
export class RfbClientHandshake {
  private readonly options: RfbClientHandshakeOptions;
  private readonly queue: ByteQueue;
  private state: State = 'version';
  private minor: RfbMinor = 8;
  private securityType = SECURITY_INVALID;
  /** What a pending reason string explains: a refused connection or a failed authentication. */
  private reasonFor: 'connection' | 'auth' = 'connection';

  constructor(options: Partial<RfbClientHandshakeOptions> & { password: string }) {
    this.options = { ...DEFAULTS, ...options };
    // The largest message in this phase is a reason string with its length prefix.
    this.queue = new ByteQueue(this.options.maxReasonLength + 4 + 256);
  }

  /** The RFB version agreed with the server (valid once past the version step). */
  get version(): string {
    return `3.${this.minor}`;
  }

  /** The security type used with the server (valid once done). */
  get security(): number {
    return this.securityType;
  }

  /** Bytes the server sent after SecurityResult (normally none): they belong to the browser. */
  takeRest(): Buffer {
    return this.queue.drain();
  }

  /** Feeds bytes from the server. Throws VD_ERR_VNC_HANDSHAKE / VD_ERR_VNC_AUTH_FAILED. */
  feed(chunk: Buffer): HandshakeOutput {
    const out: HandshakeOutput = { send: [], done: false };
    if (this.state === 'done') throw new Error('RfbClientHandshake.feed after done');
    if (!this.queue.push(chunk)) throw this.fail('server sent more handshake bytes than any valid handshake has');
    while (this.step(out)) {
      /* each step consumes one message */
    }
    out.done = (this.state as State) === 'done';
    return out;
  }

  /** Runs one state transition if its bytes are buffered; returns whether it did. */
  private step(out: HandshakeOutput): boolean {
    switch (this.state) {
      case 'version': {
        const msg = this.queue.take(VERSION_LENGTH);
        if (!msg) return false;
        const minor = parseVersion(msg);
        if (minor === null) throw this.fail(`server sent an unsupported protocol version "${printable(msg)}"`);
        this.minor = minor;
        out.send.push(versionMessage(minor));
        this.state = minor === 3 ? 'security-3.3' : 'security-types';
        return true;
      }
      case 'security-3.3': {
        const b = this.queue.take(4);
        if (!b) return false;
        const type = b.readUInt32BE(0);
        if (type === SECURITY_INVALID) return this.expectReason('connection');
        return this.useSecurity(type);
      }
      case 'security-types': {
        if (this.queue.length < 1) return false;
        const n = this.queue.peekByte()!;
        if (n === 0) {
          this.queue.take(1);
          return this.expectReason('connection');
        }
        const msg = this.queue.take(1 + n);
        if (!msg) return false;
        const types = [...msg.subarray(1)];
        // VNC authentication first: it is what the agent configures; None only when the server itself offers it.
        const type = types.includes(SECURITY_VNC_AUTH) ? SECURITY_VNC_AUTH : types.includes(SECURITY_NONE) ? SECURITY_NONE : -1;
        if (type < 0) throw this.fail(`server offers no supported security type (offered ${types.join(',')})`);
        out.send.push(Buffer.of(type));
        return this.useSecurity(type);
      }
      case 'challenge': {
        const challenge = this.queue.take(VNC_CHALLENGE_LENGTH);
        if (!challenge) return false;
        out.send.push(vncAuthResponse(this.options.password, challenge));
        this.state = 'result';
        return true;
      }
      case 'result': {
        const b = this.queue.take(4);
        if (!b) return false;
        const result = b.readUInt32BE(0);
        if (result === 0) {
          this.state = 'done';
          return false;
        }
        // Only 3.8 explains a failed SecurityResult; earlier versions just close.
        if (this.minor === 8) return this.expectReason('auth');
        throw new VncAuthFailedError(`server refused VNC authentication (SecurityResult ${result})`);
      }
      case 'reason': {
        const len = this.queue.peekUint32(0);
        if (len === null) return false;
        if (len > this.options.maxReasonLength) {
          throw this.fail(`server sent a ${len}-byte failure reason (limit ${this.options.maxReasonLength})`);
        }
        const msg = this.queue.take(4 + len);
        if (!msg) return false;
        const reason = printable(msg.subarray(4));
        if (this.reasonFor === 'auth') throw new VncAuthFailedError(`server refused VNC authentication: ${reason}`);
        throw this.fail(`server refused the connection: ${reason}`);
      }
      case 'done':
        return false;
    }
  }

  private useSecurity(type: number): boolean {
    this.securityType = type;
    if (type === SECURITY_VNC_AUTH) {
      this.state = 'challenge';
      return true;
    }
    if (type === SECURITY_NONE) {
      // RFC 6143 §7.2.1 / noVNC: for None, SecurityResult exists only from 3.8 on.
      this.state = this.minor === 8 ? 'result' : 'done';
      return this.state !== 'done';
    }
    throw this.fail(`server chose unsupported security type ${type}`);
  }

  private expectReason(reasonFor: 'connection' | 'auth'): boolean {
    this.reasonFor = reasonFor;
    this.state = 'reason';
    return true;
  }

  private fail(message: string): VncDispatchError {
    return new VncHandshakeError(message);
  }
}
