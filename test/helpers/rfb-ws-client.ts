/**
 * The browser's side of the proxy for Node tests and the benchmark: opens a WebSocket (the `ws` package, as noVNC
 * would: subprotocol `binary`), reports refused upgrades with their HTTP status and JSON body, and speaks just enough
 * RFB to complete the handshake with security type None and read messages.
 */
import type { IncomingMessage } from 'node:http';
import WebSocket, { type ClientOptions } from 'ws';

export interface Refused {
  status: number;
  body: { error?: { code?: string; message?: string } };
  headers: IncomingMessage['headers'];
}

export interface UpgradeOptions extends ClientOptions {
  protocols?: string[];
}

/**
 * Opens a WebSocket; resolves with an RfbWsClient when open, or with the refusal when the server answered with plain
 * HTTP. The client wrapper listens from the start: the proxy's first RFB bytes can arrive with the upgrade response.
 */
export function openWebSocket(url: string, options: UpgradeOptions = {}): Promise<RfbWsClient | Refused> {
  const { protocols = ['binary'], ...rest } = options;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, { perMessageDeflate: false, ...rest });
    const client = new RfbWsClient(ws);
    ws.once('open', () => resolve(client));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => {
        let parsed: Refused['body'] = {};
        try {
          parsed = JSON.parse(body) as Refused['body'];
        } catch {
          /* not JSON: left empty so the assertion on it fails visibly */
        }
        resolve({ status: res.statusCode ?? 0, body: parsed, headers: res.headers });
      });
      res.on('error', reject);
    });
    ws.once('error', (err) => {
      if (ws.readyState !== WebSocket.OPEN) reject(err);
    });
  });
}

export function isRefused(x: RfbWsClient | Refused): x is Refused {
  return !(x instanceof RfbWsClient);
}

/** Exact-length reads over a WebSocket's binary messages, plus close tracking. */
export class RfbWsClient {
  private buf: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  /** Set once the WebSocket closed: its close code and reason. */
  closed: { code: number; reason: string } | null = null;
  readonly closedPromise: Promise<{ code: number; reason: string }>;

  constructor(readonly ws: WebSocket) {
    ws.on('message', (d: Buffer) => {
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
      this.waiter?.();
    });
    this.closedPromise = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closed = { code, reason: reason.toString() };
        this.waiter?.();
        resolve(this.closed);
      });
    });
    ws.on('error', () => {});
  }

  /** Resolves with exactly n bytes; rejects if the socket closes first. */
  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.closed) throw new Error(`WebSocket closed (${this.closed.code} ${this.closed.reason}) while waiting for ${n} bytes`);
      await new Promise<void>((r) => (this.waiter = r));
      this.waiter = null;
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  write(b: Buffer): void {
    this.ws.send(b);
  }

  /**
   * RFB 3.8 client handshake expecting security None, then ClientInit(shared) and ServerInit. Returns the
   * framebuffer size and desktop name from ServerInit.
   */
  async handshakeNone(): Promise<{ version: string; securityTypes: number[]; width: number; height: number; bpp: number; name: string }> {
    const version = (await this.read(12)).toString('latin1');
    this.write(Buffer.from('RFB 003.008\n', 'latin1'));
    const n = (await this.read(1))[0]!;
    const securityTypes = [...(await this.read(n))];
    this.write(Buffer.of(1));
    const result = (await this.read(4)).readUInt32BE(0);
    if (result !== 0) throw new Error(`SecurityResult ${result}`);
    this.write(Buffer.of(1));
    const init = await this.read(24);
    const nameLen = init.readUInt32BE(20);
    const name = (await this.read(nameLen)).toString('utf8');
    return { version, securityTypes, width: init.readUInt16BE(0), height: init.readUInt16BE(2), bpp: init[4]!, name };
  }

  /**
   * Asks for a 4x4 corner (non-incremental FramebufferUpdateRequest) and reads the answer through, with no
   * SetEncodings sent, so Raw at 32 bpp. Returns the message type (0 for a FramebufferUpdate; nothing more is read
   * otherwise), each rectangle's encoding, and the Raw rectangles' pixels (4 bytes each, the server's format).
   */
  async smallUpdate(): Promise<{ type: number; encodings: number[]; pixels: Buffer[] }> {
    const req = Buffer.alloc(10);
    req.writeUInt8(3, 0);
    req.writeUInt16BE(4, 6);
    req.writeUInt16BE(4, 8);
    this.write(req);
    const head = await this.read(4);
    const encodings: number[] = [];
    const pixels: Buffer[] = [];
    if (head[0] !== 0) return { type: head[0]!, encodings, pixels };
    for (let i = 0, n = head.readUInt16BE(2); i < n; i++) {
      const rect = await this.read(12);
      encodings.push(rect.readInt32BE(8));
      if (rect.readInt32BE(8) !== 0) break;
      pixels.push(await this.read(rect.readUInt16BE(4) * rect.readUInt16BE(6) * 4));
    }
    return { type: 0, encodings, pixels };
  }

  close(): void {
    this.ws.close();
  }
}
