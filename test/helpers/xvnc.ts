/**
 * Starts a real TigerVNC Xvnc as a test user, with VNC authentication and a known password, listening on 127.0.0.1
 * only. The proxy tests connect to it exactly as they would to a blade's desktop. Optionally paints the root window
 * so a framebuffer update carries visible (non-black) pixels.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freeLoopbackPort } from './ports.js';
import { idsOf } from './users.js';

export interface XvncHandle {
  display: number;
  /** RFB port on 127.0.0.1 (a free ephemeral port, passed as -rfbport, so it never meets an agent's 5900-5999). */
  port: number;
  pid: number;
  password: string;
  username: string;
  /** Kills Xvnc (SIGTERM, then SIGKILL) and removes the password file. */
  stop(): Promise<void>;
}

export interface XvncOptions {
  username: string;
  password: string;
  /** Colour for `xsetroot -solid` (e.g. 'red'); omitted leaves the default root. */
  rootColour?: string;
  geometry?: string;
}

/** Spawns Xvnc with `-displayfd 3` and resolves once it reported its display number. */
export async function startXvnc(options: XvncOptions): Promise<XvncHandle> {
  const { uid, gid } = idsOf(options.username);
  const dir = mkdtempSync(join(tmpdir(), 'vd-xvnc-'));
  chmodSync(dir, 0o711);
  const passwdFile = join(dir, 'passwd');
  // vncpasswd -f writes the obfuscated (fixed-key DES) format Xvnc's -rfbauth reads; an independent implementation.
  writeFileSync(passwdFile, execFileSync('vncpasswd', ['-f'], { input: `${options.password}\n` }), { mode: 0o600 });
  chownSync(passwdFile, uid, gid);
  const port = await freeLoopbackPort();

  const child: ChildProcess = spawn(
    'setpriv',
    [
      '--reuid', String(uid), '--regid', String(gid), '--init-groups', '--',
      'Xvnc', '-displayfd', '3', '-rfbauth', passwdFile, '-SecurityTypes', 'VncAuth', '-interface', '127.0.0.1',
      '-rfbport', String(port), '-geometry', options.geometry ?? '640x480', '-depth', '24', '-nolisten', 'unix',
    ],
    { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const display = await new Promise<number>((resolve, reject) => {
    let out = '';
    const fd3 = child.stdio[3] as NodeJS.ReadableStream;
    fd3.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(Number(out.trim()));
    });
    child.once('exit', (code) => reject(new Error(`Xvnc exited (${code}) before reporting a display: ${stderr}`)));
    setTimeout(() => reject(new Error(`Xvnc did not report a display within 10 s: ${stderr}`)), 10_000).unref();
  });

  if (options.rootColour) {
    execFileSync('setpriv', ['--reuid', String(uid), '--regid', String(gid), '--init-groups', '--', 'xsetroot', '-solid', options.rootColour], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', DISPLAY: `:${display}` },
      stdio: 'pipe',
    });
  }

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  return { display, port, pid: child.pid!, password: options.password, username: options.username, stop };
}
