/**
 * Runs X clients (xdotool, xclip, xdpyinfo) inside a user's desktop as that user, the way a program the user started
 * there would: `setpriv` to the user with the desktop's DISPLAY and X cookie. The cookie file is the one the desktop's
 * Xvnc was started with (its `-auth` argument), wherever the agent keeps it.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface Desktop {
  user: string;
  display: number;
  /** Xvnc's -auth file. */
  xauth: string;
}

/** The desktop served by the Xvnc with this pid. */
export function desktopOf(user: string, display: number, xvncPid: number): Desktop {
  const argv = readFileSync(`/proc/${xvncPid}/cmdline`, 'utf8').split('\0');
  const i = argv.indexOf('-auth');
  if (i < 0 || !argv[i + 1]) throw new Error(`Xvnc ${xvncPid} has no -auth argument`);
  return { user, display, xauth: argv[i + 1]! };
}

/**
 * Runs `argv` in the desktop as its user; resolves with stdout when the process exits (a client that forks to keep
 * serving, like `xclip -i`, resolves when its parent exits). Rejects after `timeoutMs`.
 */
export function runInDesktop(d: Desktop, argv: string[], opts: { input?: string; timeoutMs?: number } = {}):
  Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('setpriv', ['--reuid', d.user, '--regid', d.user, '--init-groups', '--', ...argv], {
      env: { PATH: '/usr/bin:/bin', DISPLAY: `:${d.display}`, XAUTHORITY: d.xauth, LANG: 'C.UTF-8', HOME: '/' },
      // stdout as a pipe only for clients that exit: a forked xclip would hold it open.
      stdio: [opts.input !== undefined ? 'pipe' : 'ignore', argv.includes('-i') ? 'ignore' : 'pipe', 'ignore'],
    });
    const chunks: Buffer[] = [];
    child.stdout?.on('data', (c: Buffer) => chunks.push(c));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${argv.join(' ')} did not finish in ${opts.timeoutMs ?? 5000} ms`));
    }, opts.timeoutMs ?? 5000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      // Let the pipe drain: 'exit' can come before the last 'data'.
      setImmediate(() => resolve({ code, stdout: Buffer.concat(chunks).toString('utf8') }));
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** The desktop's framebuffer size, as X clients see it (xdpyinfo's "dimensions"). */
export async function screenSize(d: Desktop): Promise<{ width: number; height: number }> {
  const { stdout } = await runInDesktop(d, ['xdpyinfo']);
  const m = /dimensions:\s+(\d+)x(\d+) pixels/.exec(stdout);
  if (!m) throw new Error(`xdpyinfo printed no dimensions: ${stdout.slice(0, 200)}`);
  return { width: Number(m[1]), height: Number(m[2]) };
}

/** Position and size of the first visible window of an X class (e.g. XTerm), or undefined if there is none. */
export async function windowGeometry(d: Desktop, windowClass: string):
  Promise<{ x: number; y: number; width: number; height: number } | undefined> {
  const { stdout } = await runInDesktop(d, ['xdotool', 'search', '--onlyvisible', '--class', windowClass,
    'getwindowgeometry', '--shell', '%1']);
  const get = (k: string) => Number(new RegExp(`^${k}=(-?\\d+)$`, 'm').exec(stdout)?.[1]);
  const g = { x: get('X'), y: get('Y'), width: get('WIDTH'), height: get('HEIGHT') };
  return Object.values(g).every(Number.isFinite) ? g : undefined;
}
