/**
 * The proxy's side of the RFB handshake as a SERVER to the browser: it offers RFB 3.8 with security type None only
 * (the proxy already authenticated to Xvnc with the session password, so the browser never sees or needs it), accepts
 * a 3.3/3.7/3.8 client, and stops at the ClientInit message, which is forwarded to Xvnc unchanged. A pure state
 * machine like RfbClientHandshake: feed it the browser's bytes, send what it returns.
 */
import { BrowserHandshakeError } from '../errors.js';
import { ByteQueue, parseVersion, printable, SECURITY_NONE, u32, VERSION_LENGTH, versionMessage, type RfbMinor } from './rfb-wire.js';

export interface BrowserHandshakeOutput {
  /** Bytes to send to the browser, in order. */
  send: Buffer[];
  /** Set once the browser sent ClientInit: that message (1 byte) followed by anything the browser sent after it. */
  clientInit: Buffer | null;
}

type State = 'version' | 'security' | 'client-init' | 'done';

/** Server-side RFB handshake towards the browser. Call `start()` first and send its bytes. */
export class RfbBrowserHandshake {
  private readonly queue = new ByteQueue(4096);
  private state: State = 'version';
  private minor: RfbMinor = 8;

  /** The ProtocolVersion the proxy offers: the server speaks first in RFB. */
  start(): Buffer {
    return versionMessage(8);
  }

  /** The RFB version agreed with the browser. */
  get version(): string {
    return `3.${this.minor}`;
  }

  /** Feeds bytes from the browser. Throws VD_ERR_BROWSER_HANDSHAKE (with a `reply` to send first, if any). */
  feed(chunk: Buffer): BrowserHandshakeOutput {
    const out: BrowserHandshakeOutput = { send: [], clientInit: null };
    if (this.state === 'done') throw new Error('RfbBrowserHandshake.feed after done');
    if (!this.queue.push(chunk)) throw new BrowserHandshakeError('browser sent more handshake bytes than any valid handshake has');
    for (;;) {
      if (this.state === 'version') {
        const msg = this.queue.take(VERSION_LENGTH);
        if (!msg) break;
        const minor = parseVersion(msg);
        if (minor === null) throw new BrowserHandshakeError(`browser sent an unsupported protocol version "${printable(msg)}"`);
        this.minor = minor;
        if (minor === 3) {
          // 3.3: the server decides the security type and there is no SecurityResult for None.
          out.send.push(u32(SECURITY_NONE));
          this.state = 'client-init';
        } else {
          out.send.push(Buffer.of(1, SECURITY_NONE));
          this.state = 'security';
        }
      } else if (this.state === 'security') {
        const msg = this.queue.take(1);
        if (!msg) break;
        if (msg[0] !== SECURITY_NONE) {
          const err = new BrowserHandshakeError(`browser chose security type ${msg[0]}, only None (1) is offered`);
          if (this.minor === 8) {
            const reason = Buffer.from('only security type None is offered', 'latin1');
            Object.assign(err, { reply: Buffer.concat([u32(1), u32(reason.length), reason]) });
          }
          throw err;
        }
        if (this.minor === 8) out.send.push(u32(0));
        this.state = 'client-init';
      } else if (this.state === 'client-init') {
        if (this.queue.length < 1) break;
        out.clientInit = this.queue.drain();
        this.state = 'done';
        break;
      } else {
        break;
      }
    }
    return out;
  }
}
