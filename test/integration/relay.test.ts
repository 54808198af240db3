/**
 * The agent is the only door to a desktop. With a real agent, a real controller process and real Xvnc desktops:
 * a desktop has no TCP listener, only a 0600 Unix socket in a 0700 directory; the controller holds TCP connections
 * only to the agent's port, and nothing on that wire is RFB in clear; the agent's port refuses clients without a
 * CA-signed certificate before any RFB; a freed desktop cannot be squatted; a relay on an alternate address gets
 * nothing; 50 viewers of one desktop all get it; and a desktop's end reaches the store and the viewer within 1 s.
 * The blade is registered at a transparent TCP tap in front of the agent, so the test sees every byte between
 * controller and blade. Users vdtest61..vdtest66.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { connect as netConnect, createServer as createNetServer, type Server, type Socket } from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AgentConnection, createAgentCredentials } from '../../controller/agent-client/agent-client.js';
import type { Session } from '../../proto/gen/vncdispatch/agent/v1/agent.js';
import { agentClient, call, endDesktop, startAgent, type AgentClient, type AgentProcess } from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { api } from '../helpers/controller-checks.js';
import { startController, type ControllerProcess } from '../helpers/controller-process.js';
import { openRelay, RelayRefused } from '../helpers/relay-client.js';
import { isRefused, openWebSocket, type RfbWsClient } from '../helpers/rfb-ws-client.js';
import { idsOf, testUser } from '../helpers/users.js';

const U_MAIN = testUser(61);
const U_OTHER = testUser(62);
const U_MANY = testUser(63);
const U_KILL_SCRIPT = testUser(64);
const U_KILL_XVNC = testUser(65);

let pki: Pki;
let agent: AgentProcess;
let client: AgentClient;
let controller: ControllerProcess;
let tap: { port: number; bytes: Buffer[]; close(): Promise<void> };

/** A TCP forwarder to the agent that keeps (up to 64 MiB of) every byte both ways. */
async function startTap(targetPort: number): Promise<typeof tap> {
  const bytes: Buffer[] = [];
  let kept = 0;
  const keep = (b: Buffer) => {
    if (kept < 64 << 20) {
      bytes.push(Buffer.from(b));
      kept += b.length;
    }
  };
  const sockets = new Set<Socket>();
  const server: Server = createNetServer((down) => {
    const up = netConnect({ host: '127.0.0.1', port: targetPort });
    for (const s of [down, up]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    }
    down.on('data', (d: Buffer) => { keep(d); up.write(d); });
    up.on('data', (d: Buffer) => { keep(d); down.write(d); });
    down.on('close', () => up.destroy());
    up.on('close', () => down.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    bytes,
    close: () => new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    }),
  };
}

/** Socket inodes held by a process. */
function socketInodes(pid: number): Set<string> {
  const out = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) out.add(m[1]!);
    } catch {
      // Closed while we looked.
    }
  }
  return out;
}

interface TcpEntry { local: number; remote: number; state: string; inode: string }

/** /proc/net/tcp and tcp6 (this network namespace). */
function tcpTable(): TcpEntry[] {
  const rows: TcpEntry[] = [];
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(f, 'utf8').trim().split('\n').slice(1)) {
      const c = line.trim().split(/\s+/);
      rows.push({ local: parseInt(c[1]!.split(':')[1]!, 16), remote: parseInt(c[2]!.split(':')[1]!, 16), state: c[3]!,
        inode: c[9]! });
    }
  }
  return rows;
}

/** Listening Unix socket paths of a process. */
function unixListeners(pid: number): string[] {
  const mine = socketInodes(pid);
  return readFileSync('/proc/net/unix', 'utf8').trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/))
    .filter((c) => c[5] === '01' && mine.has(c[6]!) && c[7] !== undefined).map((c) => c[7]!);
}

/** Runs a small Python program as `user`; returns its exit status and output. */
function asUser(user: string, program: string, ...args: string[]): { status: number | null; out: string } {
  const r = spawnSync('setpriv', ['--reuid', user, '--regid', user, '--init-groups', '--', '/usr/bin/python3', '-c', program, ...args],
    { encoding: 'utf8', timeout: 10_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

const CONNECT_UNIX = 'import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\nprint("connected")';
const BIND_UNIX = 'import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\nprint("bound")';

async function desktopOf(username: string): Promise<Session> {
  const s = (await call(client, client.listSessions, {})).sessions.find((x) => x.username === username);
  if (!s) throw new Error(`no desktop for ${username}`);
  return s;
}

async function openDesktop(username: string): Promise<{ id: string; token: string; desktop: Session }> {
  const r = await api(controller, 'POST', '/api/v1/sessions', { username });
  expect([200, 201]).toContain(r.status);
  return { id: r.body.id, token: r.body.token, desktop: await desktopOf(username) };
}

async function viewer(token: string): Promise<RfbWsClient> {
  const c = await openWebSocket(`${controller.url.replace('http', 'ws')}/websockify?token=${token}`);
  if (isRefused(c)) throw new Error(`refused: ${c.status}`);
  return c;
}

beforeAll(async () => {
  pki = makePki();
  agent = await startAgent({ pki });
  client = agentClient(agent.address, pki);
  tap = await startTap(agent.port);
  controller = await startController({ pki, blades: [{ name: 'b1', address: `127.0.0.1:${tap.port}` }],
    args: ['--token-reuse', '--max-connections-per-ip', '200'] });
  await vi.waitFor(async () => {
    if ((await api(controller, 'GET', '/api/v1/blades/b1')).body.state !== 'UP') throw new Error('blade b1 not UP yet');
  }, { timeout: 15_000, interval: 100 });
});

afterAll(async () => {
  for (const u of [U_MAIN, U_OTHER, U_MANY, U_KILL_SCRIPT, U_KILL_XVNC]) {
    const s = (await call(client, client.listSessions, {}).catch(() => ({ sessions: [] as Session[] }))).sessions
      .find((x) => x.username === u);
    if (s) await endDesktop(client, s);
  }
  await controller?.stop();
  await tap?.close();
  client?.close();
  await agent?.stop();
});

describe('a desktop is reachable only through its agent', () => {
  it('has no TCP listener: only a 0600 Unix socket in a 0700 directory that another local user cannot use', async () => {
    const { desktop } = await openDesktop(U_MAIN);
    const inodes = socketInodes(desktop.pid);
    expect(tcpTable().filter((e) => e.state === '0A' && inodes.has(e.inode))).toEqual([]);
    const paths = unixListeners(desktop.pid).filter((p) => !p.includes('.X11-unix'));
    expect(paths).toEqual([`${agent.runtimeDir}/${desktop.id}/vnc.sock`]);
    const sock = statSync(paths[0]!);
    const dir = statSync(`${agent.runtimeDir}/${desktop.id}`);
    const { uid } = idsOf(U_MAIN);
    expect([sock.isSocket(), sock.uid, sock.mode & 0o777]).toEqual([true, uid, 0o600]);
    expect([dir.uid, dir.mode & 0o777]).toEqual([uid, 0o700]);
    const other = asUser(U_OTHER, CONNECT_UNIX, paths[0]!);
    expect(other.status).not.toBe(0);
    expect(other.out).toMatch(/PermissionError/);
  });

  it('the controller holds TCP connections only to agent ports, and nothing crossing them is RFB in clear', async () => {
    const { token, desktop } = await openDesktop(U_MAIN);
    const v = await viewer(token);
    const init = await v.handshakeNone();
    expect(init.name).toBe(`${U_MAIN}'s desktop`);
    const controllerPort = Number(new URL(controller.url).port);
    const mine = socketInodes(controller.pid);
    const outbound = tcpTable().filter((e) => mine.has(e.inode) && e.state === '01' && e.local !== controllerPort);
    expect(outbound.length).toBeGreaterThan(0);
    expect([...new Set(outbound.map((e) => e.remote))]).toEqual([tap.port]);
    const wire = Buffer.concat(tap.bytes);
    expect(wire.includes('RFB 003.')).toBe(false);
    expect(wire.includes(`${U_MAIN}'s desktop`)).toBe(false);
    v.close();
    expect(desktop.port).toBe(0);
  });

  it('refuses a client without a CA-signed certificate on the agent port, and no RFB byte reaches it', async () => {
    const { desktop } = await openDesktop(U_MAIN);
    const attempts = [
      { name: 'no certificate', cert: undefined },
      { name: 'another CA', cert: { cert: readFileSync(pki.rogueCert), key: readFileSync(pki.rogueKey) } },
    ];
    for (const a of attempts) {
      const got: Buffer[] = [];
      await new Promise<void>((resolve) => {
        const s = tlsConnect({ host: '127.0.0.1', port: agent.port, servername: 'localhost', ca: readFileSync(pki.caCert),
          ALPNProtocols: ['vncdispatch-relay/1'], ...(a.cert ?? {}) });
        s.on('secureConnect', () => {
          const body = Buffer.concat([Buffer.from([0x0a, 36]), Buffer.from(desktop.id)]);
          const head = Buffer.alloc(10);
          head.write('VDRELAY1', 'latin1');
          head.writeUInt16BE(body.length, 8);
          s.write(Buffer.concat([head, body]));
        });
        s.on('data', (d: Buffer) => got.push(d));
        s.on('error', () => undefined);
        s.on('close', () => resolve());
      });
      expect(Buffer.concat(got).includes('RFB'), a.name).toBe(false);
    }
    // A plaintext client speaking the relay's opening gets no answer but a TLS alert.
    const plain = await new Promise<Buffer>((resolve) => {
      const got: Buffer[] = [];
      const s = netConnect({ host: '127.0.0.1', port: agent.port }, () => s.write('VDRELAY1\x00\x26\x0a\x24' + desktop.id));
      s.on('data', (d: Buffer) => got.push(d));
      s.on('error', () => undefined);
      s.on('close', () => resolve(Buffer.concat(got)));
      setTimeout(() => s.destroy(), 3000).unref();
    });
    expect(plain.includes('RFB')).toBe(false);
  });

  it('a freed desktop cannot be squatted: where it listened, no other local user can listen, and the relay says so', async () => {
    const { id, desktop } = await openDesktop(U_MAIN);
    const listened = unixListeners(desktop.pid).filter((p) => !p.includes('.X11-unix'));
    const tcpPorts = tcpTable().filter((e) => e.state === '0A' && socketInodes(desktop.pid).has(e.inode)).map((e) => e.local);
    expect(listened).toHaveLength(1);
    await api(controller, 'DELETE', `/api/v1/sessions/${id}`);
    await expect.poll(() => { try { process.kill(desktop.pid, 0); return true; } catch { return false; } }).toBe(false);
    for (const user of [U_OTHER, U_MAIN]) {
      for (const path of listened) expect(asUser(user, BIND_UNIX, path).status, `${user} binds ${path}`).not.toBe(0);
      const tcpBind = 'import socket,sys\ns=socket.socket()\ns.bind(("0.0.0.0", int(sys.argv[1])))\nprint("bound")';
      for (const port of tcpPorts) expect(asUser(user, tcpBind, String(port)).status, `${user} binds ${port}`).not.toBe(0);
    }
    await expect(openRelay({ address: agent.address, sessionId: desktop.id, pki })).rejects
      .toMatchObject({ code: 'VD_AGENT_SESSION_NOT_FOUND' });
    expect(RelayRefused).toBeDefined();
  });

  it('a relay on an alternate address of the blade gets no RFB and no password: the controller refuses its certificate', async () => {
    const { desktop } = await openDesktop(U_MAIN);
    // A local user's server on another address of the blade (127.0.0.2 stands in for ::1 or a second A record),
    // with a certificate of its own: it cannot have one the CA signed for this blade.
    const seen: Buffer[] = [];
    const squatter = createTlsServer({ cert: readFileSync(pki.rogueCert), key: readFileSync(pki.rogueKey),
      ALPNProtocols: ['vncdispatch-relay/1', 'h2'] }, (s) => {
      s.on('data', (d: Buffer) => seen.push(d));
      s.on('error', () => undefined);
      s.write('RFB 003.008\n');
    });
    squatter.on('tlsClientError', () => undefined);
    await new Promise<void>((r) => squatter.listen(0, '127.0.0.2', r));
    const port = (squatter.address() as { port: number }).port;
    const conn = new AgentConnection({ name: 'b1', address: `127.0.0.2:${port}`,
      credentials: createAgentCredentials({ ca: pki.caCert, cert: pki.clientCert, key: pki.clientKey }) });
    try {
      const reads = { buffer: () => Buffer.alloc(4096), callback: () => true };
      const stream = conn.openDesktop(desktop.id, reads, 3000);
      await expect(stream.opened).rejects.toMatchObject({ code: 'VD_ERR_VNC_CONNECT' });
      expect(Buffer.concat(seen).length).toBe(0);
    } finally {
      conn.close();
      await new Promise<void>((r) => squatter.close(() => r()));
    }
  });
});

describe('why the controller cannot reach a desktop, as the close reason the viewer shows', () => {
  const credentials = () => createAgentCredentials({ ca: pki.caCert, cert: pki.clientCert, key: pki.clientKey });
  const reads = () => ({ buffer: () => Buffer.alloc(4096), callback: () => true });

  it('a session the agent does not run: VD_ERR_DESKTOP_NOT_FOUND', async () => {
    const conn = new AgentConnection({ name: 'b1', address: agent.address, credentials: credentials() });
    try {
      const stream = conn.openDesktop('00000000-0000-4000-8000-000000000000', reads(), 5000);
      await expect(stream.opened).rejects.toMatchObject({ code: 'VD_ERR_DESKTOP_NOT_FOUND' });
    } finally {
      conn.close();
    }
  });

  it('an agent port where nothing listens: VD_ERR_BLADE_DOWN', async () => {
    const closed = createNetServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as { port: number }).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const conn = new AgentConnection({ name: 'b1', address: `127.0.0.1:${port}`, credentials: credentials() });
    try {
      await expect(conn.openDesktop(randomUUID(), reads(), 5000).opened).rejects.toMatchObject({ code: 'VD_ERR_BLADE_DOWN' });
    } finally {
      conn.close();
    }
  });

  it('an agent port that accepts and never answers (a frozen blade): VD_ERR_RELAY_TIMEOUT', async () => {
    const held: Socket[] = [];
    const silent = createNetServer((s) => held.push(s.on('error', () => undefined)));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const conn = new AgentConnection({ name: 'b1', address: `127.0.0.1:${(silent.address() as { port: number }).port}`,
      credentials: credentials() });
    try {
      await expect(conn.openDesktop(randomUUID(), reads(), 300).opened).rejects.toMatchObject({ code: 'VD_ERR_RELAY_TIMEOUT' });
    } finally {
      conn.close();
      for (const s of held) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });
});

describe('many viewers and a desktop that ends', () => {
  it('50 viewers opening one desktop at once all get it', async () => {
    const { token } = await openDesktop(U_MANY);
    const results = await Promise.allSettled(Array.from({ length: 50 }, async () => {
      const v = await viewer(token);
      try {
        return (await v.handshakeNone()).name;
      } finally {
        v.close();
      }
    }));
    const failed = results.filter((r) => r.status === 'rejected').map((r) => String((r).reason));
    expect(failed).toEqual([]);
    expect(new Set(results.map((r) => (r as PromiseFulfilledResult<string>).value))).toEqual(new Set([`${U_MANY}'s desktop`]));
  });

  it.each([
    ['its session script is killed', U_KILL_SCRIPT, 'script'],
    ['its Xvnc is killed', U_KILL_XVNC, 'xvnc'],
  ] as const)('when %s, within 1 s the store says ended and the viewer socket is closed', async (_what, user, victim) => {
    const { id, token, desktop } = await openDesktop(user);
    const v = await viewer(token);
    await v.handshakeNone();
    let closedAt = 0;
    void v.closedPromise.then(() => { closedAt = Date.now(); });
    let target = desktop.pid;
    if (victim === 'script') {
      // The session script leads its own session: every process of the user whose sid is its pid, except Xvnc.
      const leaders = execFileSync('ps', ['-o', 'pid=,sid=', '-u', String(idsOf(user).uid)], { encoding: 'utf8' }).trim()
        .split('\n').map((l) => l.trim().split(/\s+/).map(Number)).filter(([p, s]) => p === s && p !== desktop.pid);
      expect(leaders).toHaveLength(1);
      target = -leaders[0]![0]!;
    }
    const killedAt = Date.now();
    process.kill(target, 'SIGKILL');
    const closed = await v.closedPromise;
    // 1000 when the agent's relay closed first (the desktop went away), 1008 when the controller closed it.
    expect([1000, 1008]).toContain(closed.code);
    await expect.poll(async () => (await api(controller, 'GET', `/api/v1/sessions/${id}`)).body.state).toBe('ended');
    const record = (await api(controller, 'GET', `/api/v1/sessions/${id}`)).body;
    expect(record.endReason).toBe('desktop-exited');
    // The bound, from timestamps recorded as the events happened.
    expect(closedAt - killedAt).toBeLessThan(1000);
    expect(Date.parse(record.endedAt) - killedAt).toBeLessThan(1000);
  });
});
