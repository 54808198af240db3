/**
 * The environment a login would give a desktop session, without PAM: what Debian's /etc/pam.d/login sets up through
 * pam_env (`readenv=1`, then `envfile=/etc/default/locale`), a locale that is never missing, XDG_RUNTIME_DIR when the
 * system made one for the user, and the user's login shell around the session (as TigerVNC's vncsession does), so
 * /etc/profile and ~/.profile run in the user's own process, never in the agent.
 *
 * Only root-owned system files are read (the agent never reads a home). Reads are asynchronous, bounded in size and
 * time, and a missing or unreadable file is simply absent, as pam_env treats it.
 */
import { lstat, readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { defaults } from '../config.js';

export interface LoginUser {
  name: string;
  uid: number;
  home: string;
  shell: string;
}

export interface LoginEnvOptions {
  /** pam_env's own configuration (`VAR DEFAULT=… OVERRIDE=…`). */
  pamEnvConf?: string;
  /** KEY=VALUE files in the order pam_env reads them; later files win. */
  envFiles?: string[];
  /** Where logind makes per-user runtime directories. */
  runtimeDirBase?: string;
  /** Give up on a file after this long (a wedged root filesystem must not hold a start forever). */
  readTimeoutMs?: number;
}

export const LOGIN_ENV_DEFAULTS: Required<LoginEnvOptions> = {
  pamEnvConf: '/etc/security/pam_env.conf',
  envFiles: ['/etc/environment', '/etc/default/locale'],
  runtimeDirBase: '/run/user',
  readTimeoutMs: defaults.loginEnvTimeoutMs,
};

/** The locale when the system sets none: always present in glibc ≥ 2.35 (bookworm), and UTF-8. */
export const FALLBACK_LANG = 'C.UTF-8';

/** Set by the agent itself; a system file cannot change who the session runs as or which display it uses. */
const RESERVED = new Set(['HOME', 'USER', 'LOGNAME', 'SHELL', 'DISPLAY', 'XAUTHORITY', 'XDG_RUNTIME_DIR']);
const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MAX_FILE_BYTES = 64 * 1024;
const MAX_VALUE_LENGTH = 4096;
const MAX_VARIABLES = 256;

/**
 * Shells known to take `-l -c 'exec "$0" "$@"' PROGRAM ARGS…` as POSIX sh does. Any other login shell (nologin,
 * false, fish, tcsh…) runs the session without a login shell, and SHELL still names it.
 */
const POSIX_SHELLS = new Set(['sh', 'bash', 'dash', 'zsh', 'ksh', 'ksh93', 'mksh', 'lksh', 'posh', 'yash']);

/** argv that runs `argv` through the user's login shell when that shell is POSIX-like, else `argv` unchanged. */
export function loginShellArgv(shell: string, argv: string[]): string[] {
  if (!shell.startsWith('/') || !POSIX_SHELLS.has(basename(shell))) return argv;
  return [shell, '-l', '-c', 'exec "$0" "$@"', ...argv];
}

/** The login environment for `user`: variables to add to the agent's own HOME, USER, LOGNAME, SHELL and PATH. */
export async function loginEnvironment(user: LoginUser, options: LoginEnvOptions = {}): Promise<Record<string, string>> {
  const o = { ...LOGIN_ENV_DEFAULTS, ...options };
  const signal = AbortSignal.timeout(o.readTimeoutMs);
  const [conf, files, runtimeDir] = await Promise.all([
    readSmall(o.pamEnvConf, signal),
    Promise.all(o.envFiles.map((f) => readSmall(f, signal))),
    userRuntimeDir(user, o.runtimeDirBase),
  ]);
  const env = new Map<string, string>();
  const set = (name: string, value: string) => {
    if (!NAME.test(name) || RESERVED.has(name) || value.length > MAX_VALUE_LENGTH || /[\0\n]/.test(value)) return;
    if (!env.has(name) && env.size >= MAX_VARIABLES) return;
    env.set(name, value);
  };
  if (conf !== undefined) for (const [k, v] of parsePamEnvConf(conf, user, env)) set(k, v);
  for (const text of files) if (text !== undefined) for (const [k, v] of parseEnvFile(text)) set(k, v);
  if (!env.has('LANG') && !env.has('LC_ALL')) env.set('LANG', FALLBACK_LANG);
  if (runtimeDir !== undefined) env.set('XDG_RUNTIME_DIR', runtimeDir);
  return Object.fromEntries(env);
}

async function readSmall(path: string, signal: AbortSignal): Promise<string | undefined> {
  try {
    const data = await readFile(path, { signal });
    return data.length <= MAX_FILE_BYTES ? data.toString('utf8') : undefined;
  } catch {
    return undefined;
  }
}

/** /run/user/UID when logind made it: a directory (not a symlink) owned by the user, private to them. */
async function userRuntimeDir(user: LoginUser, base: string): Promise<string | undefined> {
  const dir = `${base}/${user.uid}`;
  try {
    const st = await lstat(dir);
    return st.isDirectory() && st.uid === user.uid && (st.mode & 0o077) === 0 ? dir : undefined;
  } catch {
    return undefined;
  }
}

/**
 * pam_env's readenv format (/etc/environment, /etc/default/locale): `KEY=VALUE` lines, an optional `export `, `#`
 * comments, one level of matching quotes removed; no expansion.
 */
export function parseEnvFile(text: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const raw of text.split('\n')) {
    let line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('export ')) line = line.slice(7).trimStart();
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    out.push([line.slice(0, eq), unquote(line.slice(eq + 1))]);
  }
  return out;
}

function unquote(value: string): string {
  const v = value.trim();
  if (v.length >= 2 && (v[0] === '"' || v[0] === "'") && v.at(-1) === v[0]) return v.slice(1, -1);
  return v;
}

/**
 * pam_env.conf: `VARIABLE [DEFAULT=[value]] [OVERRIDE=[value]]`. OVERRIDE wins when it expands to something, else
 * DEFAULT; `${VAR}` expands from the variables set so far, `@{HOME}` and `@{SHELL}` from the passwd entry, `\$` and
 * `\@` are literal. A variable whose value ends up empty is left unset, as pam_env does.
 */
export function parsePamEnvConf(text: string, user: LoginUser, sofar: ReadonlyMap<string, string>): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  const known = new Map(sofar);
  const items = { HOME: user.home, SHELL: user.shell };
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(\S+)((?:\s+(?:DEFAULT|OVERRIDE)=(?:"[^"]*"|\S*))*)\s*$/.exec(line);
    if (!m) continue;
    let def: string | undefined;
    let over: string | undefined;
    for (const opt of m[2]!.matchAll(/(DEFAULT|OVERRIDE)=("[^"]*"|\S*)/g)) {
      const value = expand(unquote(opt[2]!), known, items);
      if (opt[1] === 'DEFAULT') def = value;
      else over = value;
    }
    const value = over || def;
    if (value) {
      out.push([m[1]!, value]);
      known.set(m[1]!, value);
    }
  }
  return out;
}

function expand(value: string, vars: ReadonlyMap<string, string>, items: Record<'HOME' | 'SHELL', string>): string {
  return value.replace(/\\([$@])|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|@\{([A-Za-z_]+)\}/g, (_m, lit?: string, v?: string, item?: string) => {
    if (lit) return lit;
    if (v) return vars.get(v) ?? (v === 'HOME' || v === 'SHELL' ? items[v] : '');
    return item === 'HOME' || item === 'SHELL' ? items[item] : '';
  });
}
