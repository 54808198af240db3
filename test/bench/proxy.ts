/**
 * `npm run bench:proxy`: the project's WebSocket-to-VNC proxy against websockify (the reference, Debian package,
 * token file) and a direct TCP connection (the limit), in one run, through the same local target.
 *
 * The target is a minimal RFB server (RFB 3.8, VNC authentication with a fixed password) followed by a tiny command
 * protocol: 'D'+u64 floods that many bytes down, 'U'+u64 reads that many bytes and answers 'K', 'E' echoes, 'I'
 * idles. Fairness: websockify does no RFB, so through it (and over direct TCP) the bench client performs the VNC
 * authentication with the target itself; through our proxy the proxy authenticates and the client does the None
 * handshake. Either way one RFB handshake happens per connection, and no timing below includes it except "time to
 * open".
 *
 * Clients: throughput is measured with the least-work client each path allows (raw-ws-client.ts: downstream frame
 * headers parsed and payload counted, nothing assembled; upstream one masked frame written over and over; for direct
 * TCP the plain socket), so that the proxy, not the bench client, is what limits it. With the `ws` client (it
 * assembles every message it receives and allocates, copies and masks every message it sends) the client was the
 * slowest process on every WebSocket path on a 2-core machine and hid the difference between proxies. Round trips and
 * idle connections use the `ws` client.
 *
 * The real path: browser-side WebSocket -> the controller's proxy (VncProxy, the relay dialer of agent-client/, mutual
 * TLS with the test PKI) -> the agent's real listener and DesktopRelay (agent/listener.ts, agent/relay/; only its
 * session table is a stand-in that names the target's Unix socket) -> the target on a Unix socket, as Xvnc listens.
 * The older "proxy, TCP dialer" path (the proxy dialing the target over plain TCP) stays for comparison with earlier
 * figures.
 *
 * CPU placement: with BENCH_PIN unset or 1 (and at least 2 CPUs), each proxy under comparison (our controller
 * processes, websockify and its per-connection forks) runs on CPU 1, one at a time (the passes are sequential), and the
 * bench client, the target and the agent share CPU 0: in production the agent runs on the blade, not with the
 * controller, and the client is a remote browser. On a 2-core machine the scheduler otherwise decides where the busy
 * processes run, and the figures followed its choices. BENCH_PIN=0 lets the scheduler place them (the run says which).
 *
 * The proxy runs in its own child process so its CPU (utime+stime from /proc) and RSS are its own. websockify forks a
 * process per connection: its CPU is the parent's utime+stime+cutime+cstime (children are reaped before reading)
 * and its memory is the sum of PSS over its processes (RSS would count shared pages once per fork).
 *
 * Every path is measured REPS times, the passes interleaved (proxy, websockify, direct, proxy, ...), and each figure
 * is the median over its passes; round trips are taken for all paths in turn within a pass. Each pass also prints
 * where the CPU went (client, target, proxy as % of a core) and how many messages the client received, which shows
 * which process limits a path and what frame sizes it delivers.
 *
 * One file, three roles: no argument = the benchmark; `serve-target` and `serve-proxy PORT` = the child processes.
 */
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { connect as tcpConnect, createServer, type Socket } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import WebSocket from 'ws';
import { maskedFrame, openRawWebSocket, type RawWs } from './raw-ws-client.js';
import { controllerAllocatorEnv } from '../../controller/allocator.js';
import { CONTROLLER_NODE_FLAGS } from '../../controller/proxy/node-flags.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { freeLoopbackPort } from '../helpers/ports.js';

const PASSWORD = 'benchpw1';
const DOWN_BYTES = 512 * 1024 * 1024;
const UP_BYTES = 256 * 1024 * 1024;
const RTT_ROUNDS = 3000;
const RTT_WARMUP = 300;
const IDLE_CONNECTIONS = 8000;
const WEBSOCKIFY_IDLE_CONNECTIONS = 500;
const OPEN_CONCURRENCY = 200;
/**
 * Every path is measured this many times, interleaved, and each figure is the median: one noisy pass decides nothing.
 * BENCH_REPS overrides it (odd numbers keep every median a real pass's value).
 */
const REPS = Number(process.env.BENCH_REPS ?? 5);
/** See "CPU placement" above. */
const PIN = process.env.BENCH_PIN !== '0' && availableParallelism() >= 2;
const CLK_TCK = 100; // Linux USER_HZ; /proc/PID/stat times are in these ticks
/** The proxy child runs with the controller's production V8 flags (see node-flags.ts for why). */
const PROXY_NODE_FLAGS = CONTROLLER_NODE_FLAGS;
/**
 * ... and on the malloc the systemd unit and `vncdispatch up` give it (jemalloc where installed, allocator.ts): the
 * proxy's CPU per GB depends on it (bench:proxy, same code: jemalloc 1,602 ms/GB down and 6,519 up, glibc 1,192 and
 * 4,955), so the bench measures what is deployed. The run prints which.
 */
const PROXY_ENV = controllerAllocatorEnv();

// ---------------------------------------------------------------------------------------------------------------
// Role: the target (minimal RFB server + command protocol)
// ---------------------------------------------------------------------------------------------------------------

async function serveTarget(unixPath: string): Promise<void> {
  const { vncAuthResponse } = await import('../../shared/vnc-des.js');
  const flood = Buffer.alloc(256 * 1024, 0x5a);
  const server = createServer((sock) => {
    sock.setNoDelay(true);
    sock.on('error', () => {});
    let buf: Buffer = Buffer.alloc(0);
    let state = 'version';
    let challenge = Buffer.alloc(16);
    let upLeft = 0;
    sock.write('RFB 003.008\n');
    const onData = (d: Buffer) => {
      if (state === 'echo') {
        sock.write(d);
        return;
      }
      if (state === 'up') {
        upLeft -= d.length;
        if (upLeft <= 0) {
          state = 'idle';
          sock.write('K');
        }
        return;
      }
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      for (;;) {
        if (state === 'version' && buf.length >= 12) {
          buf = buf.subarray(12);
          sock.write(Buffer.of(1, 2));
          state = 'type';
        } else if (state === 'type' && buf.length >= 1) {
          buf = buf.subarray(1);
          challenge = Buffer.from(Array.from({ length: 16 }, (_, i) => (i * 37 + 11) & 255));
          sock.write(challenge);
          state = 'response';
        } else if (state === 'response' && buf.length >= 16) {
          const ok = buf.subarray(0, 16).equals(vncAuthResponse(PASSWORD, challenge));
          buf = buf.subarray(16);
          if (!ok) return void sock.destroy();
          sock.write(Buffer.of(0, 0, 0, 0));
          state = 'init';
        } else if (state === 'init' && buf.length >= 1) {
          buf = buf.subarray(1);
          const name = Buffer.from('bench');
          const si = Buffer.alloc(24);
          si.writeUInt16BE(1024, 0);
          si.writeUInt16BE(768, 2);
          si.writeUInt32BE(name.length, 20);
          sock.write(Buffer.concat([si, name]));
          state = 'command';
        } else if (state === 'command' && buf.length >= 1) {
          const cmd = String.fromCharCode(buf[0]!);
          if (cmd === 'E') {
            state = 'echo';
            if (buf.length > 1) sock.write(buf.subarray(1));
            return;
          } else if (cmd === 'I') {
            state = 'idle';
            return;
          } else if ((cmd === 'D' || cmd === 'U') && buf.length >= 9) {
            const n = Number(buf.readBigUInt64BE(1));
            const rest = buf.subarray(9);
            buf = Buffer.alloc(0);
            if (cmd === 'D') {
              state = 'idle';
              let left = n;
              const pump = () => {
                while (left > 0) {
                  const chunk = left >= flood.length ? flood : flood.subarray(0, left);
                  left -= chunk.length;
                  if (!sock.write(chunk)) return void sock.once('drain', pump);
                }
              };
              pump();
            } else {
              state = 'up';
              upLeft = n;
              if (rest.length) onData(rest);
            }
            return;
          } else return;
        } else return;
      }
    };
    sock.on('data', onData);
  });
  server.maxConnections = 100_000;
  // The same target on a Unix socket too, as Xvnc listens (-rfbunixpath), for the agent relay's path.
  const onUnix = createServer((sock) => server.emit('connection', sock));
  onUnix.listen(unixPath, () => {
    server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as { port: number }).port }));
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Role: the agent's relay (the real listener and DesktopRelay, mutual TLS), in its own process
// ---------------------------------------------------------------------------------------------------------------

async function serveAgent(pkiJson: string, unixPath: string): Promise<void> {
  const pki = JSON.parse(pkiJson) as Pki;
  const { parseConfig } = await import('../../agent/config.js');
  const { listenAgentPort } = await import('../../agent/listener.js');
  const { DesktopRelay } = await import('../../agent/relay/desktop-relay.js');
  const { Server } = await import('@grpc/grpc-js');
  const { default: pino } = await import('pino');
  const log = pino({ level: 'info' }, pino.destination({ dest: '/dev/null', sync: false }));
  const config = parseConfig(['--listen', '127.0.0.1:0', '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--tls-ca', pki.caCert]);
  // Only the session table is a stand-in: every session id names the target's Unix socket.
  const sessions = { desktopSocket: () => unixPath, on: () => sessions };
  const relay = new DesktopRelay({ sessions: sessions as never, log, handshakeTimeoutMs: config.relayHandshakeTimeoutMs,
    maxQueuedBytes: config.relayMaxQueuedBytes });
  const port = await listenAgentPort({ config, grpc: new Server(), relay, log });
  process.send!({ port: port.port });
}

// ---------------------------------------------------------------------------------------------------------------
// Role: our proxy, in its own process
// ---------------------------------------------------------------------------------------------------------------

async function serveProxy(targetPort: number, relay?: { agentPort: number; pki: Pki }): Promise<void> {
  const { VncProxy } = await import('../../controller/proxy/index.js');
  const { default: pino } = await import('pino');
  // Logs as in production (one line per open and close) but into /dev/null.
  const log = pino({ level: 'info' }, pino.destination({ dest: '/dev/null', sync: false }));
  const { tcpDesktop } = await import('../helpers/tcp-desktop.js');
  const { createAgentCredentials } = await import('../../controller/agent-client/agent-client.js');
  const { openDesktopRelay } = await import('../../controller/agent-client/desktop-relay.js');
  type Dialer = import('../../controller/proxy/target.js').DesktopDialer;
  let desktop: Dialer = tcpDesktop('127.0.0.1', targetPort);
  if (relay) {
    // The controller's own relay dialer, with the TLS options its agent credentials give for 127.0.0.1.
    const tls = createAgentCredentials({ ca: relay.pki.caCert, cert: relay.pki.clientCert, key: relay.pki.clientKey })
      .forHost('127.0.0.1').relayTls;
    desktop = (reads, timeoutMs) => openDesktopRelay({ host: '127.0.0.1', port: relay.agentPort, tls, timeoutMs, onread: reads,
      sessionId: '00000000-0000-4000-8000-000000000001', blade: 'bench' });
  }
  const target = { sessionId: 's', username: 'bench', blade: 'local', desktop, password: PASSWORD, tokenHash: 'h' };
  const proxy = new VncProxy({
    log,
    authorize: async () => target,
    revalidate: async () => new Set(['h']),
    maxConnectionsPerIp: 100_000,
  });
  const server = createHttpServer((_q, r) => r.writeHead(404).end());
  server.on('upgrade', (req, socket, head) => proxy.handleUpgrade(req, socket, head));
  server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as { port: number }).port }));
  process.on('message', (m: { cmd: string }) => {
    if (m.cmd === 'rss') {
      (globalThis as { gc?: () => void }).gc?.();
      setTimeout(() => process.send!({ rss: process.memoryUsage().rss, connections: proxy.connections }), 200);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------------------------------

/**
 * A byte stream over a WebSocket (the `ws` client, or the raw receiver used for downstream throughput) or a TCP
 * socket, with exact reads for the handshake.
 */
class Conn {
  private buf: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  onBytes: ((d: Buffer) => void) | null = null;
  /** Messages (WebSocket) or reads (TCP) received: shows the frame sizes each path delivers. */
  received = 0;
  private closed = false;
  private raw: RawWs | null = null;

  constructor(
    private readonly ws: WebSocket | null,
    private readonly sock: Socket | null,
  ) {
    if (ws) {
      ws.on('message', this.push);
      ws.on('close', this.end);
      ws.on('error', () => {});
    } else if (sock) {
      sock.on('data', this.push);
      sock.on('close', this.end);
      sock.on('error', () => {});
    }
  }

  /** Over the raw WebSocket receiver (see raw-ws-client.ts). */
  static async raw(url: string): Promise<Conn> {
    const conn = new Conn(null, null);
    conn.raw = await openRawWebSocket(url, {
      onData: (d) => (conn.onBytes ? conn.onBytes(d) : conn.push(Buffer.from(d))),
      onMessage: () => conn.received++,
      onClose: conn.end,
    });
    return conn;
  }

  private readonly push = (d: Buffer): void => {
    if (!this.raw) this.received++;
    if (this.onBytes) return this.onBytes(d);
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    this.waiter?.();
  };

  private readonly end = (): void => {
    this.closed = true;
    this.waiter?.();
  };

  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.closed) throw new Error('closed during handshake');
      await new Promise<void>((r) => (this.waiter = r));
      this.waiter = null;
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  get isRaw(): boolean {
    return this.raw !== null;
  }

  /** Writes `b` (over the raw client: `frame`, b already framed and masked, if given); resolves when the caller may write more. */
  write(b: Buffer, frame: Buffer | null = null): Promise<void> | null {
    if (this.raw) {
      const ok = frame ? this.raw.sendFrame(frame) : this.raw.send(b);
      return ok ? null : once(this.raw.socket, 'drain').then(() => undefined);
    }
    if (this.ws) {
      this.ws.send(b);
      if (this.ws.bufferedAmount < 4 * 1024 * 1024) return null;
      return new Promise((r) => {
        const check = () => (this.ws!.bufferedAmount < 1024 * 1024 ? r() : setImmediate(check));
        check();
      });
    }
    if (this.sock!.write(b)) return null;
    return once(this.sock!, 'drain').then(() => undefined);
  }

  close(): void {
    if (this.raw) this.raw.close();
    else if (this.ws) this.ws.terminate();
    else this.sock!.destroy();
  }

  /** The RFB handshake the client does itself: None (through our proxy) or VNC auth (websockify, direct). */
  async handshake(vncAuth: boolean, response: (challenge: Buffer) => Buffer): Promise<void> {
    await this.read(12);
    void this.write(Buffer.from('RFB 003.008\n'));
    const n = (await this.read(1))[0]!;
    await this.read(n);
    if (vncAuth) {
      void this.write(Buffer.of(2));
      void this.write(response(await this.read(16)));
    } else void this.write(Buffer.of(1));
    if ((await this.read(4)).readUInt32BE(0) !== 0) throw new Error('security result not OK');
    void this.write(Buffer.of(1));
    const init = await this.read(24);
    await this.read(init.readUInt32BE(20));
  }
}

interface Path {
  name: string;
  pid: number | null;
  /** The agent relay's process, when the path goes through it (its CPU is reported apart). */
  agentPid?: number;
  open(): Promise<Conn>;
  /** For throughput: the lean client (raw-ws-client.ts for WebSocket paths, the plain socket for direct TCP). */
  openLean(): Promise<Conn>;
  vncAuth: boolean;
}

function wsPath(name: string, url: string, pid: number | null, vncAuth: boolean, agentPid?: number): Path {
  return {
    name,
    pid,
    ...(agentPid !== undefined && { agentPid }),
    vncAuth,
    open: () =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(url, ['binary'], { perMessageDeflate: false });
        ws.binaryType = 'nodebuffer';
        const conn = new Conn(ws, null);
        ws.once('open', () => resolve(conn));
        ws.once('error', reject);
      }),
    openLean: () => Conn.raw(url),
  };
}

function tcpPath(port: number): Path {
  const open = () =>
    new Promise<Conn>((resolve, reject) => {
      const s = tcpConnect({ host: '127.0.0.1', port, noDelay: true });
      const conn = new Conn(null, s);
      s.once('connect', () => resolve(conn));
      s.once('error', reject);
    });
  return { name: 'direct TCP', pid: null, vncAuth: true, open, openLean: open };
}

function cmd(c: string, n?: number): Buffer {
  if (n === undefined) return Buffer.from(c);
  const b = Buffer.alloc(9);
  b.write(c, 0);
  b.writeBigUInt64BE(BigInt(n), 1);
  return b;
}

/** utime+stime(+cutime+cstime) of a process in ms. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields after ')' start at field 3; utime=14, stime=15, cutime=16, cstime=17
  const [ut, st, cut, cst] = [f[11], f[12], f[13], f[14]].map(Number) as [number, number, number, number];
  return ((ut + st + cut + cst) * 1000) / CLK_TCK;
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** For websockify: waits until its per-connection children have exited and been reaped, so cutime is complete. */
async function settled(pid: number): Promise<void> {
  for (let i = 0; i < 100 && childrenOf(pid).length > 0; i++) await sleep(20);
}

function pssKb(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function rssKb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The bench client's own collector, so garbage from the previous phase is not collected during the next one. */
const clientGc = (() => {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
})();

/**
 * Before every timed phase, whatever the path: the previous phase's sockets have closed and been handled by every
 * process (a short sleep), and the client's heap is collected. Same for every path, so it changes no ratio; it only
 * keeps one phase's aftermath out of the next one's figures.
 */
async function settle(): Promise<void> {
  await sleep(100);
  clientGc();
}

interface Figures {
  /** One line per phase on where the CPU went (see PhaseLoad). */
  loads: string[];
  downMBs: number;
  upMBs: number;
  downCpuMsPerGB: number | null;
  upCpuMsPerGB: number | null;
  cpuMsPerGB: number | null;
  /** The agent relay's CPU per GB, both ways (paths through it only). */
  agentCpuMsPerGB: number | null;
  rttP50us: number;
  rttP99us: number;
}

interface Amounts {
  down: number;
  up: number;
  rounds: number;
  warmup: number;
}
const FULL: Amounts = { down: DOWN_BYTES, up: UP_BYTES, rounds: RTT_ROUNDS, warmup: RTT_WARMUP };
/** A short pass over every path before any is timed: JIT-compiles the bench client (which serves all paths) and the proxy, so the path measured first is not charged with warm-up. */
const WARMUP: Amounts = { down: 64 * 1024 * 1024, up: 32 * 1024 * 1024, rounds: 200, warmup: 0 };

/** Per-phase CPU of every process involved (ms) and messages the client received: where the time goes. */
interface PhaseLoad {
  clientMs: number;
  targetMs: number;
  proxyMs: number;
  messages: number;
}
let targetPid = 0;
/** CPU of a process and its live children (websockify serves each connection in a forked child). */
function treeCpuMs(pid: number | null): number {
  return pid === null ? 0 : [pid, ...childrenOf(pid)].reduce((a, p) => a + cpuMs(p), 0);
}
function loadStart(path: Path) {
  const c0 = process.cpuUsage();
  const t0 = cpuMs(targetPid);
  const p0 = treeCpuMs(path.pid);
  return (messages: number): PhaseLoad => {
    const c = process.cpuUsage(c0);
    return { clientMs: (c.user + c.system) / 1000, targetMs: cpuMs(targetPid) - t0, proxyMs: treeCpuMs(path.pid) - p0, messages };
  };
}
function describeLoad(phase: string, l: PhaseLoad, sec: number): string {
  const pct = (ms: number) => `${((ms / 1000 / sec) * 100).toFixed(0)}%`;
  return `${phase}: client ${pct(l.clientMs)}, target ${pct(l.targetMs)}, proxy ${pct(l.proxyMs)} of a core; ${l.messages} messages`;
}

/** Throughput both ways through one path (round trips are `roundTrips`, taken for all paths together). */
async function measure(path: Path, response: (c: Buffer) => Buffer, amounts: Amounts = FULL): Promise<Figures> {
  const { down: DOWN_BYTES, up: UP_BYTES } = amounts;
  const cpu = async () => {
    if (path.pid === null) return 0;
    if (path.name === 'websockify') await settled(path.pid);
    return cpuMs(path.pid);
  };

  const agentCpu = () => (path.agentPid === undefined ? 0 : cpuMs(path.agentPid));
  // Downstream: target floods DOWN_BYTES; timed from the command to the last byte.
  let c = await path.openLean();
  await c.handshake(path.vncAuth, response);
  await settle();
  let cpu0 = await cpu();
  let agent0 = agentCpu();
  let load = loadStart(path);
  let t0 = process.hrtime.bigint();
  let got = 0;
  c.received = 0;
  await new Promise<void>((resolve) => {
    c.onBytes = (d) => {
      got += d.length;
      if (got >= DOWN_BYTES) resolve();
    };
    void c.write(cmd('D', DOWN_BYTES));
  });
  const downSec = Number(process.hrtime.bigint() - t0) / 1e9;
  const downLoad = describeLoad('down', load(c.received), downSec);
  c.close();
  const downCpu = (await cpu()) - cpu0;
  let agentMs = agentCpu() - agent0;

  // Upstream: client sends UP_BYTES in 64 KiB messages; timed until the target acknowledges the last byte.
  c = await path.openLean();
  await c.handshake(path.vncAuth, response);
  await settle();
  cpu0 = await cpu();
  agent0 = agentCpu();
  const acked = new Promise<void>((resolve) => {
    c.onBytes = () => resolve();
  });
  load = loadStart(path);
  t0 = process.hrtime.bigint();
  await c.write(cmd('U', UP_BYTES));
  const chunk = Buffer.alloc(64 * 1024, 0x33);
  const frame = c.isRaw ? maskedFrame(chunk) : null;
  for (let sent = 0; sent < UP_BYTES; sent += chunk.length) {
    const wait = c.write(chunk, frame);
    if (wait) await wait;
  }
  await acked;
  const upSec = Number(process.hrtime.bigint() - t0) / 1e9;
  const upLoad = describeLoad('up', load(0), upSec);
  c.close();
  const upCpu = (await cpu()) - cpu0;
  agentMs += agentCpu() - agent0;

  const gb = (DOWN_BYTES + UP_BYTES) / 1e9;
  return {
    loads: [downLoad, upLoad],
    downMBs: DOWN_BYTES / 1e6 / downSec,
    upMBs: UP_BYTES / 1e6 / upSec,
    downCpuMsPerGB: path.pid === null ? null : downCpu / (DOWN_BYTES / 1e9),
    upCpuMsPerGB: path.pid === null ? null : upCpu / (UP_BYTES / 1e9),
    cpuMsPerGB: path.pid === null ? null : (downCpu + upCpu) / gb,
    agentCpuMsPerGB: path.agentPid === undefined ? null : agentMs / gb,
    rttP50us: 0,
    rttP99us: 0,
  };
}

/**
 * Round trips of 64-byte messages through the echo, one connection per path, taken in turn (path A, B, C, A, B, ...)
 * so every path samples the same moments: a stretch of scheduler or hypervisor noise lands on all of them alike
 * instead of on whichever path happened to be measured then. Returns microseconds per path.
 */
async function roundTrips(paths: Path[], response: (c: Buffer) => Buffer, rounds: number, warmup: number): Promise<number[][]> {
  const msg = Buffer.alloc(64, 0x61);
  const conns = await Promise.all(
    paths.map(async (path) => {
      const c = await path.open();
      await c.handshake(path.vncAuth, response);
      void c.write(cmd('E'));
      return c;
    }),
  );
  await settle();
  const samples = paths.map(() => [] as number[]);
  let pending = 0;
  let done: (() => void) | null = null;
  for (const c of conns) {
    c.onBytes = (d) => {
      pending -= d.length;
      if (pending <= 0) done?.();
    };
  }
  for (let i = 0; i < warmup + rounds; i++) {
    for (let k = 0; k < conns.length; k++) {
      pending = msg.length;
      const t = process.hrtime.bigint();
      await new Promise<void>((r) => {
        done = r;
        void conns[k]!.write(msg);
      });
      if (i >= warmup) samples[k]!.push(Number(process.hrtime.bigint() - t) / 1000);
    }
  }
  for (const c of conns) c.close();
  return samples.map((s) => s.sort((a, b) => a - b));
}

const percentile = (sorted: number[], p: number) => sorted[Math.floor(sorted.length * p)]!;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Field-wise median over passes (an odd count, so every figure is one pass's real value). */
function medianFigures(list: Figures[]): Figures {
  const m = (get: (f: Figures) => number | null) => (get(list[0]!) === null ? null : median(list.map((f) => get(f)!)));
  return {
    loads: [],
    downMBs: m((f) => f.downMBs)!,
    upMBs: m((f) => f.upMBs)!,
    downCpuMsPerGB: m((f) => f.downCpuMsPerGB),
    upCpuMsPerGB: m((f) => f.upCpuMsPerGB),
    cpuMsPerGB: m((f) => f.cpuMsPerGB),
    agentCpuMsPerGB: m((f) => f.agentCpuMsPerGB),
    rttP50us: m((f) => f.rttP50us)!,
    rttP99us: m((f) => f.rttP99us)!,
  };
}

/** Opens `n` idle connections (handshake + 'I'), `OPEN_CONCURRENCY` at a time; returns them and the seconds taken. */
async function openIdle(path: Path, n: number, response: (c: Buffer) => Buffer): Promise<{ conns: Conn[]; seconds: number }> {
  const conns: Conn[] = [];
  const t0 = process.hrtime.bigint();
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      const c = await path.open();
      await c.handshake(path.vncAuth, response);
      void c.write(cmd('I'));
      conns.push(c);
    }
  };
  await Promise.all(Array.from({ length: Math.min(OPEN_CONCURRENCY, n) }, worker));
  return { conns, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
}

function forkSelf(args: string[], execArgv: string[] = [], env: Record<string, string> = {}): Promise<{ child: ChildProcess; port: number }> {
  const child = fork(fileURLToPath(import.meta.url), args, {
    execArgv, env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    child.once('message', (m: { port: number }) => resolve({ child, port: m.port }));
    child.once('exit', (code) => reject(new Error(`${args[0]} exited with ${code}`)));
  });
}

function rssOf(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    child.once('message', (m: { rss: number }) => resolve(m.rss));
    child.send({ cmd: 'rss' });
  });
}

/** Pins `pid` (all its threads; children it forks later inherit it) to `cpu`, when PIN. */
function pin(pid: number, cpu: number): void {
  if (PIN) execFileSync('taskset', ['-apc', String(cpu), String(pid)], { stdio: 'ignore' });
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = tcpConnect({ host: '127.0.0.1', port });
      s.once('connect', () => (s.destroy(), r(true)));
      s.once('error', () => r(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`nothing listens on ${port}`);
}

async function closeAll(conns: Conn[]): Promise<void> {
  for (const c of conns) c.close();
  await sleep(500);
}

async function bench(): Promise<void> {
  const { vncAuthResponse } = await import('../../shared/vnc-des.js');
  const response = (ch: Buffer) => vncAuthResponse(PASSWORD, ch);
  const started = Date.now();
  const children: ChildProcess[] = [];
  // websockify has no IPC channel to notice our end: kill it (and the rest) on any exit or interrupt.
  process.on('exit', () => children.forEach((c) => c.kill()));
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));
  const tmp = mkdtempSync(join(tmpdir(), 'vd-bench-proxy-'));
  const tmpDirs = [tmp];
  try {
    pin(process.pid, 0);
    const unixPath = join(tmp, 'vnc.sock');
    const target = await forkSelf(['serve-target', unixPath]);
    children.push(target.child);
    targetPid = target.child.pid!;
    pin(targetPid, 0);
    let proxy = await forkSelf(['serve-proxy', String(target.port)], ['--expose-gc', ...PROXY_NODE_FLAGS], PROXY_ENV);
    children.push(proxy.child);
    pin(proxy.child.pid!, 1);
    const pki = makePki();
    tmpDirs.push(pki.dir);
    const agent = await forkSelf(['serve-agent', JSON.stringify(pki), unixPath]);
    children.push(agent.child);
    pin(agent.child.pid!, 0);
    const controller = await forkSelf(['serve-proxy', String(target.port), String(agent.port), JSON.stringify(pki)],
      ['--expose-gc', ...PROXY_NODE_FLAGS], PROXY_ENV);
    children.push(controller.child);
    pin(controller.child.pid!, 1);

    const tokenFile = join(tmp, 'tokens');
    writeFileSync(tokenFile, `bench: 127.0.0.1:${target.port}\n`);
    const wsfyPort = await freeLoopbackPort();
    const wsfy = spawn('websockify', ['--token-plugin', 'TokenFile', '--token-source', tokenFile, `127.0.0.1:${wsfyPort}`], {
      stdio: 'ignore',
    });
    children.push(wsfy);
    pin(wsfy.pid!, 1);
    await waitForPort(wsfyPort);

    const paths = {
      real: wsPath('controller, agent relay (mTLS), Unix socket', `ws://127.0.0.1:${controller.port}/websockify?token=bench`,
        controller.child.pid!, false, agent.child.pid),
      proxy: wsPath('vncdispatch proxy', `ws://127.0.0.1:${proxy.port}/websockify?token=bench`, proxy.child.pid!, false),
      websockify: wsPath('websockify', `ws://127.0.0.1:${wsfyPort}/?token=bench`, wsfy.pid!, true),
      direct: tcpPath(target.port),
    };
    console.log(
      `bench:proxy: ${DOWN_BYTES >> 20} MiB down, ${UP_BYTES >> 20} MiB up, ${RTT_ROUNDS} round trips of 64 B per path and pass, ${REPS} interleaved passes`,
    );
    console.log(
      PIN
        ? '  pinned: CPU 0 runs the bench client, the target and the agent relay; CPU 1 runs the proxy under test (our controller, the TCP-dialer proxy, websockify and its forks), one at a time (BENCH_PIN=0 to let the scheduler place them)'
        : '  not pinned: the scheduler places every process (figures vary more between runs)',
    );
    console.log(PROXY_ENV.LD_PRELOAD
      ? `  our proxies run on jemalloc (${PROXY_ENV.LD_PRELOAD}, MALLOC_CONF=${PROXY_ENV.MALLOC_CONF}), as the controller is deployed`
      : "  our proxies run on glibc's malloc (libjemalloc2 is not installed; the deployed controller would be too)");
    for (const p of Object.values(paths)) await measure(p, response, WARMUP);
    await roundTrips(Object.values(paths), response, WARMUP.rounds, 0);
    console.log(`  warmed up every path (${((Date.now() - started) / 1000).toFixed(0)} s)`);
    const runs: Record<string, Figures[]> = { real: [], proxy: [], websockify: [], direct: [] };
    for (let rep = 1; rep <= REPS; rep++) {
      for (const [key, p] of Object.entries(paths)) {
        const f = await measure(p, response);
        runs[key]!.push(f);
        console.log(`  pass ${rep} ${p.name}: down ${f.downMBs.toFixed(0)} MB/s, up ${f.upMBs.toFixed(0)} MB/s (${((Date.now() - started) / 1000).toFixed(0)} s)`);
        for (const l of f.loads) console.log(`      ${l}`);
      }
      const rtt = await roundTrips(Object.values(paths), response, RTT_ROUNDS, RTT_WARMUP);
      Object.keys(paths).forEach((key, k) => {
        const f = runs[key]![rep - 1]!;
        f.rttP50us = percentile(rtt[k]!, 0.5);
        f.rttP99us = percentile(rtt[k]!, 0.99);
      });
      console.log(`  pass ${rep} RTT p50/p99 us, taken in turn: ${Object.values(paths).map((p, k) => `${p.name} ${percentile(rtt[k]!, 0.5).toFixed(0)}/${percentile(rtt[k]!, 0.99).toFixed(0)}`).join(', ')}`);
    }
    const fig: Record<string, Figures> = {};
    for (const [key, list] of Object.entries(runs)) fig[key] = medianFigures(list);

    // Idle connections through a fresh proxy process (so earlier transfers' buffers do not hide per-connection cost).
    proxy.child.kill();
    proxy = await forkSelf(['serve-proxy', String(target.port)], ['--expose-gc', ...PROXY_NODE_FLAGS], PROXY_ENV);
    children.push(proxy.child);
    pin(proxy.child.pid!, 1);
    const proxyPath = wsPath('vncdispatch proxy', `ws://127.0.0.1:${proxy.port}/websockify?token=bench`, proxy.child.pid!, false);
    (await openIdle(proxyPath, 1, response)).conns[0]!.close();
    const rss0 = await rssOf(proxy.child);
    const idle = await openIdle(proxyPath, IDLE_CONNECTIONS, response);
    const rss1 = await rssOf(proxy.child);
    const proxyIdle = { n: idle.conns.length, seconds: idle.seconds, kbPerConn: (rss1 - rss0) / 1024 / idle.conns.length, rssMB: rss1 / 1e6 };
    await closeAll(idle.conns);
    console.log(`  measured ${IDLE_CONNECTIONS} idle connections through the proxy (${((Date.now() - started) / 1000).toFixed(0)} s)`);

    const pss0 = pssKb(wsfy.pid!);
    let wsfyIdle = { n: 0, seconds: NaN, kbPerConn: NaN, rssKbPerConn: NaN };
    try {
      const wIdle = await openIdle(paths.websockify, WEBSOCKIFY_IDLE_CONNECTIONS, response);
      await sleep(300);
      const procs = [wsfy.pid!, ...childrenOf(wsfy.pid!)];
      const pss = procs.reduce((a, p) => a + pssKb(p), 0);
      const rssSum = procs.reduce((a, p) => a + rssKb(p), 0);
      wsfyIdle = {
        n: wIdle.conns.length,
        seconds: wIdle.seconds,
        kbPerConn: (pss - pss0) / wIdle.conns.length,
        rssKbPerConn: (rssSum - rssKb(wsfy.pid!)) / wIdle.conns.length,
      };
      await closeAll(wIdle.conns);
    } catch (err) {
      // On a loaded machine websockify (a process per connection) may reset some of 500 opens: say so, and still
      // print everything measured.
      console.log(`  websockify's idle connections failed: ${String(err)}`);
    }

    report(fig, proxyIdle, wsfyIdle);
    console.log(`\ntotal bench time ${((Date.now() - started) / 1000).toFixed(0)} s`);
  } finally {
    for (const c of children) c.kill();
    for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
  }
}

function report(
  fig: Record<string, Figures>,
  proxyIdle: { n: number; seconds: number; kbPerConn: number; rssMB: number },
  wsfyIdle: { n: number; seconds: number; kbPerConn: number; rssKbPerConn: number },
): void {
  const r = fig.real!;
  const p = fig.proxy!;
  const w = fig.websockify!;
  const d = fig.direct!;
  const n = (x: number | null, digits = 0) => (x === null ? 'n/a' : x.toFixed(digits));
  const rows: Array<[string, string, string, string, string]> = [
    ['downstream MB/s', n(r.downMBs), n(p.downMBs), n(w.downMBs), n(d.downMBs)],
    ['upstream MB/s', n(r.upMBs), n(p.upMBs), n(w.upMBs), n(d.upMBs)],
    ['proxy CPU ms/GB (down)', n(r.downCpuMsPerGB), n(p.downCpuMsPerGB), n(w.downCpuMsPerGB), 'n/a'],
    ['proxy CPU ms/GB (up)', n(r.upCpuMsPerGB), n(p.upCpuMsPerGB), n(w.upCpuMsPerGB), 'n/a'],
    ['proxy CPU ms/GB (all)', n(r.cpuMsPerGB), n(p.cpuMsPerGB), n(w.cpuMsPerGB), 'n/a'],
    ['agent relay CPU ms/GB (all)', n(r.agentCpuMsPerGB), 'n/a', 'n/a', 'n/a'],
    ['RTT p50 us (64 B)', n(r.rttP50us), n(p.rttP50us), n(w.rttP50us), n(d.rttP50us)],
    ['RTT p99 us (64 B)', n(r.rttP99us), n(p.rttP99us), n(w.rttP99us), n(d.rttP99us)],
    [`idle conns opened`, 'n/a', String(proxyIdle.n), `${wsfyIdle.n} (capped: a process each)`, 'n/a'],
    ['time to open them, s', 'n/a', n(proxyIdle.seconds, 2), n(wsfyIdle.seconds, 2), 'n/a'],
    ['memory KB per idle conn', 'n/a', `${n(proxyIdle.kbPerConn, 1)} (RSS)`, `${n(wsfyIdle.kbPerConn, 0)} (PSS; RSS ${n(wsfyIdle.rssKbPerConn, 0)})`, 'n/a'],
  ];
  const widths = [28, 22, 16, 34, 12];
  const line = (cols: string[]) => cols.map((c, i) => c.padEnd(widths[i]!)).join(' ');
  console.log(`\nmedians of ${REPS} passes per path`);
  console.log(line(['', 'controller+agent relay', 'proxy, TCP dialer', 'websockify', 'direct TCP']));
  for (const row of rows) console.log(line(row));

  const checks: Array<[string, number, string, boolean]> = [
    ['real path: downstream vs websockify', r.downMBs / w.downMBs, '>= 1.0x', r.downMBs / w.downMBs >= 1.0],
    ['real path: controller CPU/GB vs websockify', r.cpuMsPerGB! / w.cpuMsPerGB!, '<= 0.7x', r.cpuMsPerGB! / w.cpuMsPerGB! <= 0.7],
    ['real path: RTT p99 vs websockify', r.rttP99us / w.rttP99us, '<= 1.1x', r.rttP99us / w.rttP99us <= 1.1],
    ['real path: agent CPU/GB vs websockify', r.agentCpuMsPerGB! / w.cpuMsPerGB!, '(report)', true],
    ['real path: upstream vs websockify', r.upMBs / w.upMBs, '(report)', true],
    ['TCP dialer: downstream vs websockify', p.downMBs / w.downMBs, '>= 1.2x', p.downMBs / w.downMBs >= 1.2],
    ['TCP dialer: upstream vs websockify', p.upMBs / w.upMBs, '>= 2x', p.upMBs / w.upMBs >= 2],
    ['TCP dialer: CPU per GB vs websockify', p.cpuMsPerGB! / w.cpuMsPerGB!, '<= 0.8x', p.cpuMsPerGB! / w.cpuMsPerGB! <= 0.8],
    ['TCP dialer: RTT p99 vs websockify', p.rttP99us / w.rttP99us, '<= 1x', p.rttP99us <= w.rttP99us],
    [`KB per conn at ${proxyIdle.n}`, proxyIdle.kbPerConn, '<= 20 KB', proxyIdle.kbPerConn <= 20 && proxyIdle.n >= IDLE_CONNECTIONS],
    ['downstream vs direct TCP', p.downMBs / d.downMBs, '(limit)', true],
    ['upstream vs direct TCP', p.upMBs / d.upMBs, '(limit)', true],
  ];
  console.log(`\n${'ratio'.padEnd(44)} value     target     result`);
  for (const [name, v, t, ok] of checks) {
    console.log(`${name.padEnd(44)} ${v.toFixed(2).padEnd(9)} ${t.padEnd(10)} ${t.startsWith('(') ? '' : ok ? 'MET' : 'NOT MET'}`);
  }
}

const role = process.argv[2];
// The child roles end with the benchmark, however it ends (their IPC channel closes).
if (role === 'serve-target' || role === 'serve-proxy' || role === 'serve-agent') process.on('disconnect', () => process.exit(0));
if (role === 'serve-target') void serveTarget(process.argv[3]!);
else if (role === 'serve-agent') void serveAgent(process.argv[3]!, process.argv[4]!);
else if (role === 'serve-proxy') {
  void serveProxy(Number(process.argv[3]), process.argv[4]
    ? { agentPort: Number(process.argv[4]), pki: JSON.parse(process.argv[5]!) as Pki }
    : undefined);
}
else
  bench().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
