/**
 * A TCP server that plays a VNC server badly on purpose, for the proxy's hostile-peer tests (README, Security: threat 8),
 * and counts every TCP connection it receives (for the "refused before any connection to the blade" tests).
 * Behaviours:
 * - `none`: a correct RFB 3.8 server with security None; after ClientInit it sends a tiny ServerInit and then echoes.
 * - `quiet`: as `none` up to ServerInit, then leaves the socket to the test (`lastSocket`).
 * - `garbage`: a 12-byte non-RFB greeting.
 * - `stall`: accepts and never sends a byte.
 * - `huge-reason`: RFB 3.8, zero security types, then a failure reason of length 2^32-1 (and no reason bytes).
 * - `truncated`: half a version string, then closes.
 * - `auth-fail`: VNC authentication that always answers SecurityResult 1 with a reason.
 * - `disconnect`: a valid version, then drops the connection when the client answers.
 * - `flood`: a valid version, then endless garbage instead of security types.
 * - `half-server-init`: security None up to ClientInit, then 16 of ServerInit's 24 bytes, and silence.
 * - `huge-name`: security None up to ClientInit, then a ServerInit whose name is 2^32-1 bytes long (and no name).
 */
import { createServer, type Server, type Socket } from 'node:net';

export type FakeVncBehaviour = 'none' | 'quiet' | 'garbage' | 'stall' | 'huge-reason' | 'truncated' | 'auth-fail' | 'disconnect' | 'flood'
  | 'half-server-init' | 'huge-name';

export interface FakeVncServer {
  port: number;
  /** TCP connections accepted so far. */
  readonly connections: number;
  /** The server side of the newest connection once its handshake is done (`quiet`: the test drives it). */
  readonly lastSocket: Socket | null;
  close(): Promise<void>;
}

const VERSION_38 = Buffer.from('RFB 003.008\n', 'latin1');

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** Reads exactly n bytes from a socket (the fake server's own tiny parser). */
function reader(sock: Socket) {
  let buf = Buffer.alloc(0);
  let want: { n: number; resolve: (b: Buffer) => void } | null = null;
  const check = () => {
    if (want && buf.length >= want.n) {
      const { n, resolve } = want;
      want = null;
      const out = buf.subarray(0, n);
      buf = buf.subarray(n);
      resolve(out);
    }
  };
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    check();
  });
  return (n: number) =>
    new Promise<Buffer>((resolve) => {
      want = { n, resolve };
      check();
    });
}

/** RFB 3.8 with security None, as far as the client's ClientInit: what comes next is the behaviour's own. */
async function untilClientInit(sock: Socket, read: (n: number) => Promise<Buffer>): Promise<void> {
  sock.write(VERSION_38);
  await read(12);
  sock.write(Buffer.of(1, 1));
  await read(1);
  sock.write(u32(0));
  await read(1); // ClientInit
}

async function play(sock: Socket, behaviour: FakeVncBehaviour): Promise<void> {
  const read = reader(sock);
  switch (behaviour) {
    case 'garbage':
      sock.write('HELLO WORLD\n');
      return;
    case 'stall':
      return;
    case 'truncated':
      sock.end('RFB 003.0');
      return;
    case 'huge-reason':
      sock.write(VERSION_38);
      await read(12);
      sock.write(Buffer.concat([Buffer.of(0), u32(0xffffffff)]));
      return;
    case 'disconnect':
      sock.write(VERSION_38);
      await read(12);
      sock.destroy();
      return;
    case 'flood': {
      sock.write(VERSION_38);
      await read(12);
      const junk = Buffer.alloc(64 * 1024, 0x41);
      junk[0] = 200; // claims 200 security types, then never stops
      const pump = () => {
        while (!sock.destroyed && sock.write(junk)) {
          /* keep writing until the kernel pushes back */
        }
      };
      sock.on('drain', pump);
      pump();
      return;
    }
    case 'auth-fail': {
      sock.write(VERSION_38);
      await read(12);
      sock.write(Buffer.of(1, 2));
      await read(1);
      sock.write(Buffer.alloc(16, 7));
      await read(16);
      const reason = Buffer.from('Authentication failure', 'latin1');
      sock.end(Buffer.concat([u32(1), u32(reason.length), reason]));
      return;
    }
    case 'half-server-init':
    case 'huge-name': {
      await untilClientInit(sock, read);
      sock.write(behaviour === 'huge-name' ? Buffer.concat([Buffer.from([0, 64, 0, 48]), Buffer.alloc(16), u32(0xffffffff)]) : Buffer.alloc(16, 7));
      return;
    }
    case 'none':
    case 'quiet': {
      await untilClientInit(sock, read);
      const name = Buffer.from('fake', 'latin1');
      const serverInit = Buffer.concat([Buffer.from([0, 64, 0, 48]), Buffer.alloc(16), u32(name.length), name]);
      sock.write(serverInit);
      sock.removeAllListeners('data');
      if (behaviour === 'none') sock.on('data', (d: Buffer) => sock.write(d));
      return;
    }
  }
}

/**
 * Starts the fake server on 127.0.0.1, an ephemeral port, or on the Unix socket `unixPath` (as Xvnc listens behind
 * the agent's relay; `port` is then 0).
 */
export async function startFakeVncServer(behaviour: FakeVncBehaviour, unixPath?: string): Promise<FakeVncServer> {
  let connections = 0;
  let lastSocket: Socket | null = null;
  const sockets = new Set<Socket>();
  const server: Server = createServer((sock) => {
    connections++;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    void play(sock, behaviour).then(
      () => (lastSocket = sock),
      () => sock.destroy(),
    );
  });
  if (unixPath !== undefined) await new Promise<void>((resolve) => server.listen(unixPath, resolve));
  else await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = unixPath !== undefined ? 0 : (server.address() as { port: number }).port;
  return {
    port,
    get connections() {
      return connections;
    },
    get lastSocket() {
      return lastSocket;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * A VNC server that plays whatever the test hands it: each new connection takes the next script from `next()` and
 * writes its chunks in order (waiting for the client's bytes between chunks, so the bytes meet the proxy at each
 * stage of its handshake), then closes or, with `stall`, leaves the socket open. For fuzzing the server side.
 */
export interface ScriptedVncServer {
  port: number;
  readonly connections: number;
  close(): Promise<void>;
}

export interface VncScript {
  chunks: Buffer[];
  stall: boolean;
}

export async function startScriptedVncServer(next: () => VncScript): Promise<ScriptedVncServer> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((sock) => {
    connections++;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    const { chunks, stall } = next();
    let i = 0;
    const writeNext = () => {
      if (sock.destroyed) return;
      if (i < chunks.length) sock.write(chunks[i++]!);
      else if (!stall) sock.end();
    };
    sock.on('data', writeNext);
    writeNext();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    get connections() {
      return connections;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
