/**
 * A small RFB (VNC) client for tests and the proxy: protocol 3.8 handshake, VNC authentication, ClientInit, and the
 * ServerInit fields a person would notice (desktop name and size). Bounded reads, a timeout, no dependencies.
 */
import { connect, type Socket } from 'node:net';
import { vncAuthResponse } from '../../shared/vnc-des.js';

export interface RfbResult {
  ok: boolean;
  /** Why it failed: 'auth-failed', 'no-vnc-auth', 'timeout', 'closed', 'protocol', or a socket error code. */
  reason?: string;
  /** The server's failure reason string, if it sent one. */
  serverReason?: string | undefined;
  serverVersion?: string;
  serverName?: string;
  width?: number;
  height?: number;
  securityTypes?: number[];
  /** The colour at `samplePixel`, 0..255 per channel, if one was asked for. */
  pixel?: { r: number; g: number; b: number };
}

export interface RfbConnectOptions {
  /** A TCP VNC server (a test's own Xvnc), or `socket`: a stream already open to one (an agent's relay). */
  host?: string;
  port?: number;
  socket?: () => Promise<Socket>;
  password: string;
  timeoutMs?: number;
  /** Ask the server to share the desktop with other clients (default true, like noVNC). */
  shared?: boolean;
  /** After ServerInit, request this one pixel (raw encoding, the server's pixel format) and report its colour. */
  samplePixel?: { x: number; y: number };
}

/** Reads exactly n bytes (and never more than `limit` buffered) from a socket. */
class Reader {
  private buf = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  private ended = false;
  constructor(sock: Socket, private readonly limit = 1 << 20) {
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      if (this.buf.length > this.limit) sock.destroy(new Error('EOVERFLOW'));
      this.waiter?.();
    });
    const end = () => {
      this.ended = true;
      this.waiter?.();
    };
    sock.on('close', end);
    sock.on('end', end);
    // A socket handed over paused (a relay positioned at the first RFB byte) flows only once resumed.
    sock.resume();
  }
  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.ended) throw Object.assign(new Error('closed'), { rfbReason: 'closed' });
      await new Promise<void>((r) => (this.waiter = r));
      this.waiter = undefined;
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
}

/** Requests one pixel (FramebufferUpdateRequest, raw encoding) and decodes it with the server's pixel format. */
async function readPixel(sock: Socket, reader: Reader, pf: Buffer, at: { x: number; y: number }):
  Promise<{ r: number; g: number; b: number }> {
  const bpp = pf[0]!;
  const bigEndian = pf[2] !== 0;
  const [rMax, gMax, bMax] = [pf.readUInt16BE(4), pf.readUInt16BE(6), pf.readUInt16BE(8)];
  const [rShift, gShift, bShift] = [pf[10]!, pf[11]!, pf[12]!];
  if (pf[3] === 0 || ![8, 16, 32].includes(bpp)) throw Object.assign(new Error('pf'), { rfbReason: 'protocol' });
  sock.write(Buffer.from([2, 0, 0, 1, 0, 0, 0, 0])); // SetEncodings: raw only
  const req = Buffer.alloc(10);
  req.writeUInt8(3, 0);
  req.writeUInt8(0, 1);
  req.writeUInt16BE(at.x, 2);
  req.writeUInt16BE(at.y, 4);
  req.writeUInt16BE(1, 6);
  req.writeUInt16BE(1, 8);
  sock.write(req);
  for (;;) {
    const type = (await reader.read(1))[0];
    if (type !== 0) throw Object.assign(new Error('unexpected message'), { rfbReason: 'protocol' });
    const rects = (await reader.read(3)).readUInt16BE(1);
    for (let i = 0; i < rects; i++) {
      const hdr = await reader.read(12);
      const w = hdr.readUInt16BE(4);
      const h = hdr.readUInt16BE(6);
      if (hdr.readInt32BE(8) !== 0) throw Object.assign(new Error('encoding'), { rfbReason: 'protocol' });
      const data = await reader.read(w * h * (bpp / 8));
      if (w === 0 || h === 0) continue;
      const v = bpp === 32 ? (bigEndian ? data.readUInt32BE(0) : data.readUInt32LE(0))
        : bpp === 16 ? (bigEndian ? data.readUInt16BE(0) : data.readUInt16LE(0)) : data[0]!;
      const scale = (x: number, max: number) => Math.round((x * 255) / max);
      return { r: scale((v >>> rShift) & rMax, rMax), g: scale((v >>> gShift) & gMax, gMax),
        b: scale((v >>> bShift) & bMax, bMax) };
    }
  }
}

/** Connects, authenticates with VNC authentication and reads ServerInit; never throws, reports `reason` instead. */
export async function rfbConnect(opts: RfbConnectOptions): Promise<RfbResult> {
  let sock: Socket;
  try {
    sock = opts.socket ? await opts.socket() : connect({ host: opts.host!, port: opts.port! });
  } catch (err) {
    return { ok: false, reason: (err as { code?: string }).code ?? (err as Error).message };
  }
  const reader = new Reader(sock);
  const result: RfbResult = { ok: false };
  let socketError: string | undefined;
  sock.on('error', (e: NodeJS.ErrnoException) => {
    socketError = e.code ?? e.message;
  });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<RfbResult>((res) => {
    timer = setTimeout(() => res({ ...result, ok: false, reason: 'timeout' }), opts.timeoutMs ?? 10_000);
  });
  const handshake = (async (): Promise<RfbResult> => {
    try {
      const version = (await reader.read(12)).toString('latin1');
      result.serverVersion = version.trim();
      if (!/^RFB \d{3}\.\d{3}\n$/.test(version)) return { ...result, reason: 'protocol' };
      sock.write('RFB 003.008\n');
      const n = (await reader.read(1))[0]!;
      if (n === 0) {
        const len = (await reader.read(4)).readUInt32BE(0);
        const reason = (await reader.read(Math.min(len, 4096))).toString('utf8');
        return { ...result, reason: 'protocol', serverReason: reason };
      }
      const types = [...(await reader.read(n))];
      result.securityTypes = types;
      if (!types.includes(2)) return { ...result, reason: 'no-vnc-auth' };
      sock.write(Buffer.from([2]));
      const challenge = await reader.read(16);
      sock.write(vncAuthResponse(opts.password, challenge));
      const status = (await reader.read(4)).readUInt32BE(0);
      if (status !== 0) {
        let serverReason: string | undefined;
        try {
          const len = (await reader.read(4)).readUInt32BE(0);
          serverReason = (await reader.read(Math.min(len, 4096))).toString('utf8');
        } catch {
          // 3.8 servers send a reason; tolerate ones that just close.
        }
        return { ...result, reason: 'auth-failed', serverReason };
      }
      sock.write(Buffer.from([opts.shared === false ? 0 : 1]));
      const init = await reader.read(24);
      const nameLen = init.readUInt32BE(20);
      const name = (await reader.read(Math.min(nameLen, 4096))).toString('utf8');
      const done = { ...result, ok: true, width: init.readUInt16BE(0), height: init.readUInt16BE(2), serverName: name };
      if (!opts.samplePixel) return done;
      return { ...done, pixel: await readPixel(sock, reader, init.subarray(4, 20), opts.samplePixel) };
    } catch (err) {
      return { ...result, reason: socketError ?? (err as { rfbReason?: string }).rfbReason ?? 'closed' };
    }
  })();
  const out = await Promise.race([handshake, timeout]);
  clearTimeout(timer);
  sock.destroy();
  return out;
}
