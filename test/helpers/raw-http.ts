/**
 * HTTP over a raw TCP socket, for requests a real client would refuse to send (odd request lines, targets, headers)
 * and for connection floods. Reads the answer until the server closes, or until a complete response (headers plus
 * Content-Length bytes) has arrived, or until `boundMs` passes; that bound only stops waiting, it asserts nothing.
 */
import { connect, type Socket } from 'node:net';

export interface RawAnswer {
  /** Status code of the first response line, or 0 when the server answered nothing. */
  status: number;
  headers: Record<string, string>;
  body: string;
  /** The server closed the connection (as opposed to us stopping after a complete response or the bound). */
  closedByServer: boolean;
}

export function parseAnswer(raw: Buffer, closedByServer: boolean): RawAnswer {
  const text = raw.toString('latin1');
  const end = text.indexOf('\r\n\r\n');
  const head = end >= 0 ? text.slice(0, end) : text;
  const [statusLine = '', ...lines] = head.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  return { status: m ? Number(m[1]) : 0, headers, body: end >= 0 ? text.slice(end + 4) : '', closedByServer };
}

function complete(raw: Buffer): boolean {
  const text = raw.toString('latin1');
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return false;
  const cl = /\r\ncontent-length:\s*(\d+)/i.exec(text.slice(0, end));
  if (cl) return raw.length - (end + 4) >= Number(cl[1]);
  // 101 answers carry no body; chunked ones end with the zero chunk.
  return /^HTTP\/1\.1 101/.test(text) || /\r\n0\r\n\r\n$/.test(text);
}

/** Sends `request` (then half-closes unless `keepOpen`) and resolves with the answer. */
export function rawRequest(port: number, request: Buffer | string, options: { boundMs?: number; keepOpen?: boolean } = {}): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let done = false;
    const sock = connect({ host: '127.0.0.1', port });
    const finish = (closedByServer: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(parseAnswer(Buffer.concat(chunks), closedByServer));
    };
    const timer = setTimeout(() => finish(false), options.boundMs ?? 5_000);
    sock.on('error', () => finish(true));
    sock.on('close', () => finish(true));
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      if (complete(Buffer.concat(chunks))) finish(false);
    });
    sock.on('connect', () => {
      sock.write(request);
      if (!options.keepOpen) sock.end();
    });
  });
}

/** Opens `n` TCP connections that send nothing; resolves once all are connected (or failed). */
export async function idleConnections(port: number, n: number): Promise<Socket[]> {
  const socks = await Promise.all(Array.from({ length: n }, () => new Promise<Socket>((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.on('error', () => {});
    s.once('connect', () => resolve(s));
    s.once('close', () => resolve(s));
  })));
  return socks;
}

/** A WebSocket upgrade request for `target` with the given header overrides (null drops a header). */
export function upgradeRequest(target: string, overrides: Record<string, string | null> = {}, method = 'GET'): string {
  const headers: Record<string, string | null> = {
    Host: '127.0.0.1',
    Connection: 'Upgrade',
    Upgrade: 'websocket',
    'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
    'Sec-WebSocket-Version': '13',
    'Sec-WebSocket-Protocol': 'binary',
    ...overrides,
  };
  const lines = Object.entries(headers).filter(([, v]) => v !== null).map(([k, v]) => `${k}: ${v}`);
  return `${method} ${target} HTTP/1.1\r\n${lines.join('\r\n')}\r\n\r\n`;
}
