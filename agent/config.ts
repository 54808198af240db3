/**
 * The agent's configuration: parsed once from the command line, validated, and passed down. Nothing else in the
 * agent reads process.argv or process.env.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError } from '../shared/config-error.js';
import { parseHostPort } from '../shared/host-port.js';
import { USERNAME_PATTERN } from '../shared/names.js';
import { fallbackSessionScript, sessionLauncher } from './paths.js';

export interface AgentConfig {
  /** Host to bind the gRPC server to. */
  listenHost: string;
  /** Port to bind; 0 picks a free one (logged as `address`). */
  listenPort: number;
  /** PEM contents, present unless `insecure`. */
  tls?: { cert: Buffer; key: Buffer; ca: Buffer } | undefined;
  insecure: boolean;
  stateDir: string;
  maxSessions: number;
  minUid: number;
  allowGroup?: string | undefined;
  /** A session script that exits within this many milliseconds of its start fails the start. */
  startSettleMs: number;
  /** A relay connection must name its session within this many milliseconds (and the desktop answer within it). */
  relayHandshakeTimeoutMs: number;
  /** A relay stops reading one side while the other holds more than this many bytes not yet written. */
  relayMaxQueuedBytes: number;
  geometry: string;
  depth: number;
  /** The operator's --session-script, run for every desktop; undefined lets the launcher choose (see below). */
  sessionScript?: string | undefined;
  /** The session run when neither ~/.vnc/xstartup nor /etc/X11/Xvnc-session is usable. */
  fallbackSessionScript: string;
  /** The first process of every session, run as the user: it chooses the session script. */
  sessionLauncher: string;
  xvnc: string;
  /** Give desktops Xvnc's GLX extension (server-side OpenGL through Mesa's llvmpipe). */
  xvncGlx: boolean;
  logLevel: string;
  /** Milliseconds between SIGTERM and SIGKILL when stopping a session. */
  stopGraceMs: number;
  /** Root-owned base of the per-session runtime directories (password file, X cookie, desktop log). */
  runtimeDir: string;
  /** Admit users whose primary or supplementary groups include gid 0. */
  allowRootGroup: boolean;
  /** Most milliseconds a StartSession may take, Xvnc's start included; kept below the controller's deadline. */
  startTimeoutMs: number;
  /** Most milliseconds for each look outside the agent's own directories (passwd and group lookups, the home check). */
  lookupTimeoutMs: number;
  /** How often sessions are checked for a dead Xvnc or session script (adopted ones send no exit event). */
  reapIntervalMs: number;
  /** On SIGTERM, how long calls in flight may finish before the server closes them. */
  shutdownGraceMs: number;
  /** Most milliseconds for reading the login environment's system files (pam_env, /etc/default/locale) at a start. */
  loginEnvTimeoutMs: number;
  /** How many spawner processes start desktops and helpers off the event loop (agent/vnc/spawner.ts). */
  spawners: number;
  /** How many desktop starts (lookups and launch) run at once; the rest queue (agent/sessions/start-slots.ts). */
  maxConcurrentStarts: number;
  /** Nice value the agent raises itself to, above what it starts (agent/priority.ts); 0: unchanged. */
  agentNice: number;
  /** Where to serve Prometheus metrics over plain HTTP (GET /metrics); null: not at all. */
  metricsListen: { host: string; port: number } | null;
}

export const defaults = {
  listen: '0.0.0.0:7443',
  stateDir: '/var/lib/vncdispatch-agent',
  maxSessions: 50,
  startSettleMs: 50,
  relayHandshakeTimeoutMs: 5000,
  // bench:proxy, downstream: with pipe()'s 16 KiB the desktop's socket was paused and resumed after every 64 KiB read
  // (the TLS socket completes writes a loop turn later); 256 KiB lets a few reads go out in one TLS write.
  relayMaxQueuedBytes: 256 * 1024,
  minUid: 1000,
  geometry: '1280x800',
  depth: 24,
  xvnc: 'Xvnc',
  logLevel: 'info',
  stopGraceMs: 3000,
  runtimeDir: '/run/vncdispatch',
  startTimeoutMs: 8000,
  lookupTimeoutMs: 5000,
  reapIntervalMs: 500,
  shutdownGraceMs: 5000,
  loginEnvTimeoutMs: 2000,
  spawners: 3,
  maxConcurrentStarts: 4,
  agentNice: -10,
} as const;

/** The flags and their defaults (from `defaults`); the usage text and README's table are tested against this list. */
export const OPTIONS = {
  listen: { type: 'string', default: defaults.listen },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
  insecure: { type: 'boolean', default: false },
  'state-dir': { type: 'string', default: defaults.stateDir },
  'max-sessions': { type: 'string', default: String(defaults.maxSessions) },
  'min-uid': { type: 'string', default: String(defaults.minUid) },
  'allow-group': { type: 'string' },
  'start-settle-ms': { type: 'string', default: String(defaults.startSettleMs) },
  'relay-handshake-timeout-ms': { type: 'string', default: String(defaults.relayHandshakeTimeoutMs) },
  'relay-max-queued-bytes': { type: 'string', default: String(defaults.relayMaxQueuedBytes) },
  geometry: { type: 'string', default: defaults.geometry },
  depth: { type: 'string', default: String(defaults.depth) },
  'session-script': { type: 'string' },
  xvnc: { type: 'string', default: defaults.xvnc },
  'xvnc-glx': { type: 'boolean', default: false },
  'stop-grace-ms': { type: 'string', default: String(defaults.stopGraceMs) },
  'runtime-dir': { type: 'string', default: defaults.runtimeDir },
  'allow-root-group': { type: 'boolean', default: false },
  'start-timeout-ms': { type: 'string', default: String(defaults.startTimeoutMs) },
  'lookup-timeout-ms': { type: 'string', default: String(defaults.lookupTimeoutMs) },
  'reap-interval-ms': { type: 'string', default: String(defaults.reapIntervalMs) },
  'shutdown-grace-ms': { type: 'string', default: String(defaults.shutdownGraceMs) },
  'login-env-timeout-ms': { type: 'string', default: String(defaults.loginEnvTimeoutMs) },
  spawners: { type: 'string', default: String(defaults.spawners) },
  'max-concurrent-starts': { type: 'string', default: String(defaults.maxConcurrentStarts) },
  'agent-nice': { type: 'string', default: String(defaults.agentNice) },
  'log-level': { type: 'string', default: defaults.logLevel },
  'metrics-listen': { type: 'string' },
  help: { type: 'boolean', default: false },
} as const;

export const USAGE = `usage: vncdispatch-agent [options]
  --listen HOST:PORT     gRPC and desktop relay address (default ${defaults.listen}; port 0 picks a free port)
  --tls-cert FILE        server certificate (PEM)
  --tls-key FILE         server private key (PEM)
  --tls-ca FILE          CA that signs client certificates (clients must present one)
  --insecure             no TLS, no client authentication (local development only)
  --state-dir DIR        where session records are kept (default ${defaults.stateDir})
  --max-sessions N       most concurrent desktops (default ${defaults.maxSessions})
  --min-uid N            lowest uid allowed a desktop (default ${defaults.minUid})
  --allow-group GROUP    only members of GROUP may have a desktop
  --start-settle-ms N    a session script that exits this soon fails the start (default ${defaults.startSettleMs})
  --relay-handshake-timeout-ms N  time for a relay client to name its desktop (default ${defaults.relayHandshakeTimeoutMs})
  --relay-max-queued-bytes N  a relay pauses one side while the other has this much unwritten (default ${defaults.relayMaxQueuedBytes})
  --geometry WxH         default desktop size (default ${defaults.geometry})
  --depth N              default colour depth 16, 24 or 32 (default ${defaults.depth})
  --session-script PATH  run PATH as every session (default: ~/.vnc/xstartup if safe, else
                         /etc/X11/Xvnc-session, else the shipped fallback session)
  --xvnc PATH            Xvnc binary (default ${defaults.xvnc})
  --xvnc-glx             give desktops GLX (server-side OpenGL via Mesa llvmpipe); off by default, as it
                         adds ~100 ms and ~50 MB to every desktop
  --stop-grace-ms N      wait before SIGKILL when stopping a session (default ${defaults.stopGraceMs})
  --runtime-dir DIR      root-owned base of per-session runtime directories, holding each desktop's files and
                         its only RFB socket (default ${defaults.runtimeDir})
  --allow-root-group     admit users whose groups include gid 0 (refused by default)
  --start-timeout-ms N   most time a StartSession may take; keep it below the controller's
                         --agent-start-timeout-ms (default ${defaults.startTimeoutMs})
  --lookup-timeout-ms N  most time for a user lookup or home check (default ${defaults.lookupTimeoutMs})
  --reap-interval-ms N   how often sessions are checked for a dead desktop (default ${defaults.reapIntervalMs})
  --shutdown-grace-ms N  on SIGTERM, time calls in flight get to finish (default ${defaults.shutdownGraceMs})
  --login-env-timeout-ms N  most time for reading a start's login environment files, below
                         --start-timeout-ms (default ${defaults.loginEnvTimeoutMs})
  --spawners N           processes that start desktops and helpers off the event loop (default ${defaults.spawners})
  --max-concurrent-starts N  desktop starts (lookups and launch) run at once; more wait their turn within their deadline
                         (default ${defaults.maxConcurrentStarts})
  --agent-nice=N         nice value -20 to 0 the agent raises itself (and its session's autogroup) to, above
                         the desktops it starts, so it keeps answering on a saturated blade; 0: unchanged
                         (default ${defaults.agentNice})
  --metrics-listen HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics (default: off)
  --log-level LEVEL      pino level (default ${defaults.logLevel})
`;

/** A bad command line; main prints the message and the usage and exits 2. */
export { ConfigError } from '../shared/config-error.js';

const GEOMETRY = /^(\d{3,5})x(\d{3,5})$/;
/** Xvnc refuses sizes beyond its framebuffer limits; keep requests sane. */
export const GEOMETRY_BOUNDS = { minW: 320, minH: 200, maxW: 8192, maxH: 8192 } as const;
export const DEPTHS = [16, 24, 32] as const;

/** True if `g` is WIDTHxHEIGHT within GEOMETRY_BOUNDS. */
export function validGeometry(g: string): boolean {
  const m = GEOMETRY.exec(g);
  if (!m) return false;
  const w = Number(m[1]);
  const h = Number(m[2]);
  const b = GEOMETRY_BOUNDS;
  return w >= b.minW && w <= b.maxW && h >= b.minH && h <= b.maxH;
}

function integer(name: string, value: string, min: number, max: number): number {
  if (!/^\d+$/.test(value)) throw new ConfigError(`--${name} must be an integer, got ${JSON.stringify(value)}`);
  const n = Number(value);
  if (n < min || n > max) throw new ConfigError(`--${name} must be between ${min} and ${max}`);
  return n;
}

/** A nice value (may be negative: pass it as `--flag=-10`, since parseArgs takes `-10` for an option). */
function niceValue(name: string, value: string, min: number, max: number): number {
  if (!/^-?\d+$/.test(value)) throw new ConfigError(`--${name} must be an integer, got ${JSON.stringify(value)}`);
  const n = Number(value) || 0;
  if (n < min || n > max) throw new ConfigError(`--${name} must be between ${min} and ${max}`);
  return n;
}

function readPem(flag: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(`--${flag} ${path}: ${(err as Error).message}`);
  }
}

/** Parses and validates the agent's command line. Throws ConfigError on any mistake. */
export function parseConfig(argv: string[]): AgentConfig {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: OPTIONS,
    }));
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  if (values.help) throw new ConfigError('');

  const { host, port } = parseHostPort(values.listen, '--listen');
  const tlsFlags = [values['tls-cert'], values['tls-key'], values['tls-ca']];
  let tls: AgentConfig['tls'];
  if (values.insecure) {
    if (tlsFlags.some((f) => f !== undefined)) throw new ConfigError('--insecure cannot be combined with --tls-*');
  } else {
    if (tlsFlags.some((f) => f === undefined)) {
      throw new ConfigError('--tls-cert, --tls-key and --tls-ca are all required (or --insecure for development)');
    }
    tls = {
      cert: readPem('tls-cert', values['tls-cert']!),
      key: readPem('tls-key', values['tls-key']!),
      ca: readPem('tls-ca', values['tls-ca']!),
    };
  }
  if (!validGeometry(values.geometry)) throw new ConfigError(`--geometry must be WxH, got ${values.geometry}`);
  const depth = integer('depth', values.depth, 0, 64);
  if (!(DEPTHS as readonly number[]).includes(depth)) throw new ConfigError('--depth must be 16, 24 or 32');
  const allowGroup = values['allow-group'];
  if (allowGroup !== undefined && !USERNAME_PATTERN.test(allowGroup)) {
    throw new ConfigError(`--allow-group is not a valid group name: ${allowGroup}`);
  }
  const maxSessions = integer('max-sessions', values['max-sessions'], 1, 10_000);
  const runtimeDir = values['runtime-dir'];
  if (!runtimeDir.startsWith('/') || runtimeDir.length > 64) {
    // A Unix socket path is limited to 107 bytes: base + '/' + a 36-character id + '/vnc.sock' must fit.
    throw new ConfigError(`--runtime-dir must be an absolute path of at most 64 characters, got ${JSON.stringify(runtimeDir)}`);
  }
  const logLevel = values['log-level'];
  if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(logLevel)) {
    throw new ConfigError(`--log-level must be a pino level, got ${logLevel}`);
  }
  const sessionScript = values['session-script'];
  if (sessionScript !== undefined && !sessionScript.startsWith('/')) {
    throw new ConfigError(`--session-script must be an absolute path, got ${sessionScript}`);
  }
  const startTimeoutMs = integer('start-timeout-ms', values['start-timeout-ms'], 100, 600_000);
  const lookupTimeoutMs = integer('lookup-timeout-ms', values['lookup-timeout-ms'], 10, 60_000);
  if (lookupTimeoutMs >= startTimeoutMs) {
    throw new ConfigError('--lookup-timeout-ms must be below --start-timeout-ms (a start includes its lookups)');
  }
  const loginEnvTimeoutMs = integer('login-env-timeout-ms', values['login-env-timeout-ms'], 10, 60_000);
  if (loginEnvTimeoutMs >= startTimeoutMs) {
    throw new ConfigError('--login-env-timeout-ms must be below --start-timeout-ms (a start includes reading them)');
  }

  return {
    listenHost: host,
    listenPort: port,
    tls,
    insecure: values.insecure,
    stateDir: values['state-dir'],
    maxSessions,
    minUid: integer('min-uid', values['min-uid'], 1, 2 ** 31),
    allowGroup,
    startSettleMs: integer('start-settle-ms', values['start-settle-ms'], 0, 10_000),
    relayHandshakeTimeoutMs: integer('relay-handshake-timeout-ms', values['relay-handshake-timeout-ms'], 100, 600_000),
    relayMaxQueuedBytes: integer('relay-max-queued-bytes', values['relay-max-queued-bytes'], 64 * 1024, 64 * 1024 * 1024),
    geometry: values.geometry,
    depth,
    sessionScript,
    fallbackSessionScript,
    sessionLauncher,
    xvnc: values.xvnc,
    xvncGlx: values['xvnc-glx'],
    logLevel,
    stopGraceMs: integer('stop-grace-ms', values['stop-grace-ms'], 0, 600_000),
    runtimeDir,
    allowRootGroup: values['allow-root-group'],
    startTimeoutMs,
    lookupTimeoutMs,
    reapIntervalMs: integer('reap-interval-ms', values['reap-interval-ms'], 10, 60_000),
    shutdownGraceMs: integer('shutdown-grace-ms', values['shutdown-grace-ms'], 0, 600_000),
    loginEnvTimeoutMs,
    spawners: integer('spawners', values.spawners, 1, 64),
    maxConcurrentStarts: integer('max-concurrent-starts', values['max-concurrent-starts'], 1, 1024),
    agentNice: niceValue('agent-nice', values['agent-nice'], -20, 0),
    metricsListen: values['metrics-listen'] === undefined ? null : parseHostPort(values['metrics-listen'], '--metrics-listen'),
  };
}
