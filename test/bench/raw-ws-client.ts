/**
 * The benchmark's lean WebSocket client (RFC 6455): as a receiver it does the least work a receiver can. It
 * parses frame headers and hands on slices of the socket's reads as payload, without assembling messages, so no
 * payload byte is copied in user space. The `ws` client assembles every message it receives (a copy of every byte
 * once a message spans two socket reads, which is nearly always); on a 2-core machine that copy made the client,
 * not the proxy under test, the slowest process on every WebSocket path. The direct-TCP path's receiver does the same
 * least work (it counts the socket's reads), so all three paths are measured alike. As a sender of a stream of
 * identical messages it writes one frame masked once (sendFrame), where the `ws` client would allocate, copy and mask
 * every message, which made the client the slowest process upstream too.
 *
 * It speaks only what the benchmark needs: binary and continuation frames are data, a close frame ends the
 * connection, ping/pong payloads are skipped, anything else (text, masked or reserved-bit frames) is an error.
 */
import { createHash, randomBytes } from 'node:crypto';
import { request } from 'node:http';
import type { Socket } from 'node:net';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const OP_CONTINUATION = 0;
const OP_BINARY = 2;
const OP_CLOSE = 8;

export interface RawWsHandlers {
  /** Payload bytes of data frames, in order (slices of the socket's reads: do not keep them past the call). */
  onData(payload: Buffer): void;
  /** A data frame with FIN set ended: one message. */
  onMessage(): void;
  /** The server closed, the socket ended, or a frame was invalid. */
  onClose(err?: Error): void;
}

export interface RawWs {
  /** Sends one binary message (masked, as a client must). Returns false when the socket's buffer is full. */
  send(payload: Buffer): boolean;
  /** Sends a frame built once with maskedFrame() (for a stream of identical messages). */
  sendFrame(frame: Buffer): boolean;
  readonly socket: Socket;
  close(): void;
}

/** Upgrades `url` (ws://host:port/path) with subprotocol `binary` and parses frames from then on. */
export function openRawWebSocket(url: string, handlers: RawWsHandlers): Promise<RawWs> {
  const u = new URL(url);
  const key = randomBytes(16).toString('base64');
  return new Promise((resolve, reject) => {
    const req = request({
      host: u.hostname,
      port: Number(u.port),
      path: u.pathname + u.search,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': key,
        'Sec-WebSocket-Protocol': 'binary',
      },
    });
    req.once('error', reject);
    req.once('response', (res) => reject(new Error(`upgrade refused: HTTP ${res.statusCode}`)));
    req.once('upgrade', (res, socket, head) => {
      const accept = createHash('sha1').update(key + GUID).digest('base64');
      if (res.headers['sec-websocket-accept'] !== accept) {
        socket.destroy();
        return reject(new Error('bad Sec-WebSocket-Accept'));
      }
      socket.setNoDelay(true);
      const reader = new FrameReader(handlers);
      let closed = false;
      const end = (err?: Error) => {
        if (closed) return;
        closed = true;
        socket.destroy();
        handlers.onClose(err);
      };
      reader.onEnd = end;
      socket.on('data', (d: Buffer) => reader.feed(d));
      socket.on('close', () => end());
      socket.on('error', (err) => end(err));
      resolve({ socket, send: (payload) => socket.write(maskedFrame(payload)), sendFrame: (frame) => socket.write(frame), close: () => end() });
      if (head.length > 0) reader.feed(head);
    });
    req.end();
  });
}

/** Incremental frame parser: headers byte by byte (they are few), payload as slices of the input. */
class FrameReader {
  onEnd: (err?: Error) => void = () => {};
  private readonly header = Buffer.alloc(14);
  private have = 0;
  private need = 2;
  /** Payload bytes left in the current frame. */
  private left = 0;
  private isData = false;
  private fin = false;
  private ended = false;

  constructor(private readonly handlers: RawWsHandlers) {}

  feed(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length && !this.ended) {
      if (this.left > 0) {
        const n = Math.min(this.left, chunk.length - i);
        if (this.isData) this.handlers.onData(chunk.subarray(i, i + n));
        i += n;
        this.left -= n;
        if (this.left === 0) this.frameDone();
        continue;
      }
      this.header[this.have++] = chunk[i++]!;
      if (this.have === 2) {
        if (this.header[1]! & 0x80) return this.fail('server frame is masked');
        if (this.header[0]! & 0x70) return this.fail('reserved bits set');
        const len7 = this.header[1]! & 0x7f;
        this.need = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0);
      }
      if (this.have >= 2 && this.have === this.need) this.headerDone();
    }
  }

  private headerDone(): void {
    const len7 = this.header[1]! & 0x7f;
    const len = len7 === 126 ? this.header.readUInt16BE(2) : len7 === 127 ? Number(this.header.readBigUInt64BE(2)) : len7;
    const opcode = this.header[0]! & 0x0f;
    this.fin = (this.header[0]! & 0x80) !== 0;
    this.have = 0;
    this.need = 2;
    if (opcode === OP_CLOSE) {
      this.ended = true;
      this.onEnd();
      return;
    }
    if (opcode !== OP_BINARY && opcode !== OP_CONTINUATION && opcode < 8) return this.fail(`unexpected opcode ${opcode}`);
    this.isData = opcode < 8;
    this.left = len;
    if (len === 0) this.frameDone();
  }

  private frameDone(): void {
    if (this.isData && this.fin) this.handlers.onMessage();
  }

  private fail(why: string): void {
    this.ended = true;
    this.onEnd(new Error(`invalid WebSocket frame: ${why}`));
  }
}

/** A client frame: FIN + binary, masked with a random key (RFC 6455 §5.3). */
export function maskedFrame(payload: Buffer): Buffer {
  const len = payload.length;
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const out = Buffer.allocUnsafe(2 + ext + 4 + len);
  out[0] = 0x80 | OP_BINARY;
  out[1] = 0x80 | (ext === 0 ? len : ext === 2 ? 126 : 127);
  if (ext === 2) out.writeUInt16BE(len, 2);
  else if (ext === 8) out.writeBigUInt64BE(BigInt(len), 2);
  const mask = randomBytes(4);
  mask.copy(out, 2 + ext);
  const body = 2 + ext + 4;
  for (let i = 0; i < len; i++) out[body + i] = payload[i]! ^ mask[i & 3]!;
  return out;
}
