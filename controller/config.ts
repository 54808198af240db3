/**
 * The controller's configuration: parsed once from argv, the environment (VNCDISPATCH_API_KEYS only) and the files
 * argv names, validated, frozen and passed down. Nothing else in the controller reads process.argv or process.env.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { ConfigError } from '../shared/config-error.js';
import { DEFAULT_BLADE_NETWORKS, parseBladeNetworks } from './blades/blade-networks.js';
import { parseHostPort } from '../shared/host-port.js';
import { isRole, ROLES, type ApiKey } from './api/auth.js';

export type PlacementPolicy = 'least-loaded' | 'round-robin';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface BladeSpec {
  name: string;
  /** HOST:PORT of the blade's agent. */
  address: string;
}

export interface AgentTls {
  cert: string;
  key: string;
  ca: string;
}

export interface Config {
  listen: { host: string; port: number };
  /** Base URL of the controller as browsers see it, no trailing slash (viewerUrl is built on it). */
  publicUrl: string;
  blades: readonly BladeSpec[];
  /** Paths of the controller's client certificate, key and the CA that signed the agents; null with insecureAgents. */
  agentTls: AgentTls | null;
  insecureAgents: boolean;
  /** REST API keys with their roles (controller/api/auth.ts). */
  apiKeys: readonly ApiKey[];
  dataDir: string;
  /** SQLite's synchronous pragma: FULL (default) fsyncs every commit; NORMAL exists for bench:dispatch to compare. */
  sqliteSynchronous: 'FULL' | 'NORMAL';
  mongodbUrl: string | null;
  placement: PlacementPolicy;
  startAttempts: number;
  healthIntervalMs: number;
  downAfterMs: number;
  /** Deadline of a StartSession call; the agents' --start-timeout-ms must be below it. */
  agentStartTimeoutMs: number;
  /** Deadline of every other agent call. */
  agentCallTimeoutMs: number;
  reconcileIntervalMs: number;
  /** Reconciliation only reports (logs, blade view, metrics) what it would stop or end; nothing is changed. */
  reconcileReportOnly: boolean;
  /** A desktop no live session owns is stopped once it has been seen unowned for this long. */
  orphanGraceMs: number;
  /** A session still `starting` this long after it was created is settled by asking its blade. */
  startSettleMs: number;
  /** Ended sessions are kept this long (for GET /api/v1/sessions?state=ended and audits), then deleted. */
  sessionRetentionHours: number;
  /** True if --public-url was given (else publicUrl follows the listening address, resolved after listen). */
  publicUrlGiven: boolean;
  /**
   * Origins allowed to open WebSocket connections: --allowed-origin, else the --public-url origin, else empty, which
   * the proxy takes as "the controller's own origin" (the request's scheme + Host).
   */
  allowedOrigins: readonly string[];
  /** Addresses/CIDRs of reverse proxies whose X-Forwarded-For is trusted. Empty: trust none. */
  trustProxy: readonly string[];
  /** ADDR/BITS networks blades registered through the API must lie in (controller/blades/blade-networks.ts). */
  bladeNetworks: readonly string[];
  tokenTtlSeconds: number;
  tokenReuse: boolean;
  /**
   * Reconnect keys kept per session (one per grant): a grant beyond it retires the session's oldest key, so a grant
   * loop cannot grow a session's keys without bound and the newest viewer link always works.
   */
  maxReconnectKeys: number;
  maxConnectionsPerIp: number;
  idleTimeoutSeconds: number;
  /** Both RFB handshakes (to the desktop and to the browser) must finish within this. */
  handshakeTimeoutMs: number;
  /** Open TCP connections (HTTP and WebSocket) at most; over it the oldest idle connection is closed. */
  maxConnections: number;
  /** A client must send a request's complete headers within this. */
  headersTimeoutMs: number;
  /** A client must send a whole request within this. */
  requestTimeoutMs: number;
  /** An HTTP connection with no traffic for this long is closed (WebSockets have their own --idle-timeout). */
  httpIdleTimeoutMs: number;
  /** A kept-alive connection waits this long for the next request. */
  keepAliveTimeoutMs: number;
  /** How often expired tokens and ended sessions past their retention are deleted. */
  pruneIntervalMs: number;
  /** GET /readyz's store-write check is made at most once per this; callers in between get its answer. */
  readyCheckTtlMs: number;
  /** Open GET /api/v1/events streams at most; more get 429. */
  maxEventStreams: number;
  /** On SIGTERM/SIGINT, how long closing may take before the process exits anyway. */
  shutdownGraceMs: number;
  /** A request for a user whose desktop another request (or controller) is starting waits this long for it. */
  startWaitMs: number;
  /** How often that wait looks at the store. */
  startPollMs: number;
  /**
   * Most time a POST waits for a new desktop before answering 503 VD_ERR_SESSION_STARTING; the start goes on and a
   * retry gets the desktop. Below --http-idle-timeout-ms, which would otherwise close a waiting request unanswered.
   */
  startAnswerMs: number;
  /** How often the fleet picture behind GET /api/v1/events is recomputed while anyone listens. */
  eventsIntervalMs: number;
  /** A comment line this often keeps a quiet event stream open through proxies and idle timers. */
  eventsHeartbeatMs: number;
  /** Largest REST request body; larger ones get 413. */
  maxBodyBytes: number;
  /** Largest WebSocket message a browser may send the proxy; larger ones close the connection with 1009. */
  maxWsMessageBytes: number;
  /** Proxy WebSocket ping interval; a connection that missed the previous pong is closed. */
  wsHeartbeatMs: number;
  /** Opening a desktop connection (through the agent's relay) must succeed within this. */
  desktopConnectTimeoutMs: number;
  /** A connection whose desktop went away waits this long for its session's end before telling the browser. */
  desktopGoneGraceMs: number;
  /** Largest read from a desktop: the largest message to a browser and the most a connection buffers for it. */
  maxDesktopReadBytes: number;
  /** After this many refused tokens from one client IP within badTokenWindowMs, that IP gets 429 until the window ends. */
  badTokenLimit: number;
  badTokenWindowMs: number;
  /** How often open desktop connections are re-checked against their session and token. */
  revalidateIntervalMs: number;
  /** gRPC keepalive ping interval to the agents, and how long its answer may take before the channel is dropped. */
  agentKeepaliveMs: number;
  agentKeepaliveTimeoutMs: number;
  /** An agent channel not connected for this long is made afresh, abandoning its connection attempt. */
  agentConnectTimeoutMs: number;
  logLevel: LogLevel;
  /** Things the operator should fix, logged once at start-up (e.g. an API key readable in `ps`). */
  warnings: readonly string[];
}

/** Environment variable with API keys (one per line or comma-separated): unlike argv, not readable by other users. */
export const API_KEYS_ENV = 'VNCDISPATCH_API_KEYS';

/**
 * Proxy defaults that are also flags: the proxy (proxy/index.ts) falls back to these when it is built without a
 * configuration (its own tests), so both read them here.
 */
export const PROXY_DEFAULTS: Readonly<Record<'maxConnectionsPerIp' | 'idleTimeoutSeconds' | 'handshakeTimeoutMs' | 'maxPayload'
  | 'heartbeatMs' | 'connectTimeoutMs' | 'desktopGoneGraceMs' | 'maxReadBytes' | 'badTokenLimit' | 'badTokenWindowMs'
  | 'revalidateIntervalMs', number>> = Object.freeze({
  maxConnectionsPerIp: 20,
  idleTimeoutSeconds: 1800,
  handshakeTimeoutMs: 10_000,
  maxPayload: 64 * 1024,
  heartbeatMs: 30_000,
  connectTimeoutMs: 5_000,
  desktopGoneGraceMs: 1_000,
  // Measured (bench:proxy, 2 cores): 1 MiB reads cost the proxy 0.37-0.47 s of CPU per GB downstream against
  // 0.6 s with 256 KiB, and stream faster. Only a connection whose reads keep filling the buffer grows to it.
  maxReadBytes: 1024 * 1024,
  badTokenLimit: 20,
  badTokenWindowMs: 60_000,
  revalidateIntervalMs: 500,
});

/** Agent-client defaults that are also flags: AgentConnection (agent-client/) falls back to these, as `up` builds one. */
export const AGENT_CLIENT_DEFAULTS: Readonly<Record<'startSessionMs' | 'callMs' | 'keepaliveMs' | 'keepaliveTimeoutMs' | 'connectMs', number>> = Object.freeze({
  startSessionMs: 10_000,
  callMs: 3_000,
  keepaliveMs: 10_000,
  keepaliveTimeoutMs: 5_000,
  // gRPC's connection-backoff spec's MIN_CONNECT_TIMEOUT; grpc-js has no connect deadline of its own.
  connectMs: 20_000,
});

/** The flags and their defaults; the usage text and README's table are tested against this list. */
export const OPTIONS = {
  listen: { type: 'string', default: '127.0.0.1:8080' },
  'public-url': { type: 'string' },
  blade: { type: 'string', multiple: true, default: [] as string[] },
  'blades-file': { type: 'string' },
  'agent-tls-cert': { type: 'string' },
  'agent-tls-key': { type: 'string' },
  'agent-tls-ca': { type: 'string' },
  'insecure-agents': { type: 'boolean', default: false },
  'api-key': { type: 'string', multiple: true, default: [] as string[] },
  'api-keys-file': { type: 'string' },
  'data-dir': { type: 'string', default: '/var/lib/vncdispatch' },
  'mongodb-url': { type: 'string' },
  'sqlite-synchronous': { type: 'string', default: 'full' },
  placement: { type: 'string', default: 'least-loaded' },
  'start-attempts': { type: 'string', default: '3' },
  'health-interval-ms': { type: 'string', default: '1000' },
  'down-after-ms': { type: 'string', default: '2500' },
  'agent-start-timeout-ms': { type: 'string', default: String(AGENT_CLIENT_DEFAULTS.startSessionMs) },
  'agent-call-timeout-ms': { type: 'string', default: String(AGENT_CLIENT_DEFAULTS.callMs) },
  'agent-keepalive-ms': { type: 'string', default: String(AGENT_CLIENT_DEFAULTS.keepaliveMs) },
  'agent-keepalive-timeout-ms': { type: 'string', default: String(AGENT_CLIENT_DEFAULTS.keepaliveTimeoutMs) },
  'agent-connect-timeout-ms': { type: 'string', default: String(AGENT_CLIENT_DEFAULTS.connectMs) },
  'reconcile-interval-ms': { type: 'string', default: '5000' },
  'reconcile-report-only': { type: 'boolean', default: false },
  'orphan-grace-ms': { type: 'string', default: '5000' },
  'start-settle-ms': { type: 'string', default: '15000' },
  'start-wait-ms': { type: 'string', default: '15000' },
  'start-poll-ms': { type: 'string', default: '50' },
  'start-answer-ms': { type: 'string', default: '45000' },
  'session-retention-hours': { type: 'string', default: '720' },
  'allowed-origin': { type: 'string', multiple: true, default: [] as string[] },
  'trust-proxy': { type: 'string', multiple: true, default: [] as string[] },
  'blade-networks': { type: 'string', multiple: true, default: [DEFAULT_BLADE_NETWORKS.join(',')] as string[] },
  'token-ttl': { type: 'string', default: '60' },
  'token-reuse': { type: 'boolean', default: false },
  'max-reconnect-keys': { type: 'string', default: '32' },
  'max-connections-per-ip': { type: 'string', default: String(PROXY_DEFAULTS.maxConnectionsPerIp) },
  'idle-timeout': { type: 'string', default: String(PROXY_DEFAULTS.idleTimeoutSeconds) },
  'handshake-timeout-ms': { type: 'string', default: String(PROXY_DEFAULTS.handshakeTimeoutMs) },
  'desktop-connect-timeout-ms': { type: 'string', default: String(PROXY_DEFAULTS.connectTimeoutMs) },
  'desktop-gone-grace-ms': { type: 'string', default: String(PROXY_DEFAULTS.desktopGoneGraceMs) },
  'max-desktop-read-bytes': { type: 'string', default: String(PROXY_DEFAULTS.maxReadBytes) },
  'ws-heartbeat-ms': { type: 'string', default: String(PROXY_DEFAULTS.heartbeatMs) },
  'max-ws-message-bytes': { type: 'string', default: String(PROXY_DEFAULTS.maxPayload) },
  'bad-token-limit': { type: 'string', default: String(PROXY_DEFAULTS.badTokenLimit) },
  'bad-token-window-ms': { type: 'string', default: String(PROXY_DEFAULTS.badTokenWindowMs) },
  'revalidate-interval-ms': { type: 'string', default: String(PROXY_DEFAULTS.revalidateIntervalMs) },
  'max-connections': { type: 'string', default: '10000' },
  'headers-timeout-ms': { type: 'string', default: '10000' },
  'request-timeout-ms': { type: 'string', default: '30000' },
  'http-idle-timeout-ms': { type: 'string', default: '60000' },
  'keep-alive-timeout-ms': { type: 'string', default: '5000' },
  'max-body-bytes': { type: 'string', default: '16384' },
  'prune-interval-ms': { type: 'string', default: '600000' },
  'ready-check-ttl-ms': { type: 'string', default: '1000' },
  'max-event-streams': { type: 'string', default: '100' },
  'events-interval-ms': { type: 'string', default: '1000' },
  'events-heartbeat-ms': { type: 'string', default: '15000' },
  'shutdown-grace-ms': { type: 'string', default: '10000' },
  'log-level': { type: 'string', default: 'info' },
  help: { type: 'boolean', default: false },
} as const;

export const USAGE = `usage: vncdispatch-controller [flags]
  --listen HOST:PORT            REST API, viewer and WebSocket proxy (default 127.0.0.1:8080)
  --public-url URL              base URL browsers use (default http://LISTEN)
  --blade NAME=HOST:PORT        a blade agent (repeatable)
  --blades-file FILE            JSON array of {"name","address"} objects
  --blade-networks CIDR[,CIDR]  networks POST /api/v1/blades may register IP addresses in, or none (repeatable;
                                default loopback, 10/8, 172.16/12, 192.168/16, fc00::/7)
  --agent-tls-cert FILE         the controller's client certificate for mutual TLS to the agents
  --agent-tls-key FILE          its private key
  --agent-tls-ca FILE           the CA that signed the agents (all three required unless --insecure-agents)
  --insecure-agents             plaintext gRPC to agents: local development only
  --api-keys-file FILE          API keys, one per line: "KEY" (admin) or "ROLE KEY" (ROLE: read, operate or admin);
                                or the VNCDISPATCH_API_KEYS environment variable (admin keys)
  --api-key KEY                 an admin API key on the command line (repeatable): readable in ps, prefer the file
  --data-dir DIR                embedded SQLite store (default /var/lib/vncdispatch)
  --mongodb-url URL             use MongoDB instead of the embedded store
  --sqlite-synchronous full|normal  fsync every commit (full, default) or not (normal: loses the last commits on an
                                OS crash; for measuring what full costs)
  --placement least-loaded|round-robin (default least-loaded)
  --start-attempts N            blades tried per new session (default 3)
  --health-interval-ms N        GetStatus poll interval (default 1000)
  --down-after-ms N             a blade silent this long is DOWN (default 2500)
  --agent-start-timeout-ms N    StartSession deadline; above the agents' --start-timeout-ms (default 10000)
  --agent-call-timeout-ms N     deadline of the other agent calls (default 3000)
  --agent-keepalive-ms N        gRPC keepalive ping to each agent this often, to notice a dead peer (default 10000)
  --agent-keepalive-timeout-ms N  drop an agent connection whose keepalive is unanswered this long (default 5000)
  --agent-connect-timeout-ms N  remake an agent channel not connected this long, abandoning its attempt (default 20000)
  --reconcile-interval-ms N     store/agent reconciliation period (default 5000)
  --reconcile-report-only       reconciliation reports desktops to stop and records to end, changes nothing
  --orphan-grace-ms N           stop a desktop no live session owns after this long (default 5000)
  --start-settle-ms N           settle a session still starting after this long by asking its blade (default 15000)
  --start-wait-ms N             a request for a desktop another request is starting waits this long, then 503 (default 15000)
  --start-poll-ms N             how often that wait checks the store (default 50)
  --start-answer-ms N           a POST waits this long for a new desktop, then 503 while the start goes on (default 45000)
  --session-retention-hours N   keep ended sessions this long, then delete them (default 720)
  --allowed-origin ORIGIN       WebSocket Origin allowlist (repeatable; default the --public-url origin, else the controller's own)
  --trust-proxy ADDR|CIDR       trust X-Forwarded-For from these reverse proxies (repeatable)
  --token-ttl SECONDS           connection token lifetime (default 60)
  --token-reuse                 allow reconnecting with a token until it expires
  --max-reconnect-keys N        viewer reconnect keys kept per session; a new grant retires the oldest (default 32)
  --max-connections-per-ip N    concurrent desktop connections per client IP (default 20)
  --idle-timeout SECONDS        close desktop connections idle this long (default 1800)
  --handshake-timeout-ms N      both RFB handshakes of a desktop connection must finish within this (default 10000)
  --desktop-connect-timeout-ms N  time to reach a desktop through its agent's relay (default 5000)
  --desktop-gone-grace-ms N     a desktop gone away waits this long for its session's end before the browser hears
                                of it (default 1000)
  --max-desktop-read-bytes N    largest read from a desktop, so the most a connection buffers for its browser
                                (default 1048576)
  --ws-heartbeat-ms N           WebSocket ping interval; a browser that missed the last pong is dropped (default 30000)
  --max-ws-message-bytes N      largest WebSocket message from a browser; larger closes with 1009 (default 65536)
  --bad-token-limit N           refused tokens from one client IP per window before it gets 429 (default 20)
  --bad-token-window-ms N       the window of --bad-token-limit (default 60000)
  --revalidate-interval-ms N    how often open desktop connections are checked against their session and token (default 500)
  --max-connections N           open connections (HTTP and WebSocket); over it the oldest idle one closes (default 10000)
  --headers-timeout-ms N        time a client has to send a request's headers (default 10000)
  --request-timeout-ms N        time a client has to send a whole request (default 30000)
  --http-idle-timeout-ms N      close HTTP connections silent this long (default 60000)
  --keep-alive-timeout-ms N     how long a kept-alive connection waits for its next request (default 5000)
  --max-body-bytes N            largest REST request body; larger gets 413 (default 16384)
  --prune-interval-ms N         how often expired tokens and old ended sessions are deleted (default 600000)
  --ready-check-ttl-ms N        /readyz writes to the store at most once per this; others reuse the answer (default 1000)
  --max-event-streams N         open GET /api/v1/events streams at most (default 100)
  --events-interval-ms N        how often the event streams' picture is recomputed (default 1000)
  --events-heartbeat-ms N       a keep-alive comment on quiet event streams this often (default 15000)
  --shutdown-grace-ms N         on SIGTERM, time closing may take before the process exits anyway (default 10000)
  --log-level LEVEL             fatal|error|warn|info|debug|trace|silent (default info)
`;

const BLADE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** A bad flag; main prints the message and exits 2. */
export { ConfigError } from '../shared/config-error.js';

/** Validates one blade; used for flags, the blades file and POST /api/v1/blades alike. */
export function checkBlade(name: unknown, address: unknown, what: string): BladeSpec {
  if (typeof name !== 'string' || !BLADE_NAME.test(name)) {
    throw new ConfigError(`${what}: blade name must match ${BLADE_NAME.source}, got ${JSON.stringify(name)}`);
  }
  if (typeof address !== 'string') throw new ConfigError(`${what}: blade address must be a string`);
  const { port } = parseHostPort(address, `${what} address`);
  if (port === 0) throw new ConfigError(`${what}: blade port must not be 0`);
  return { name, address };
}

function int(value: string, flag: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(`--${flag} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return n;
}

function readText(path: string, flag: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`--${flag}: cannot read ${path}: ${(err as Error).message}`);
  }
}

function bladesFromFile(path: string): BladeSpec[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readText(path, 'blades-file'));
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`--blades-file ${path}: not JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(parsed)) throw new ConfigError(`--blades-file ${path}: must be a JSON array of {"name","address"}`);
  return parsed.map((b: unknown, i) => {
    const o = (b ?? {}) as Record<string, unknown>;
    return checkBlade(o.name, o.address, `--blades-file ${path}[${i}]`);
  });
}

function origin(url: string, flag: string): string {
  try {
    const u = new URL(url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http(s)');
    return u.origin;
  } catch {
    throw new ConfigError(`--${flag} must be an http(s) URL, got ${JSON.stringify(url)}`);
  }
}

/**
 * Parses and validates the controller's flags. Throws ConfigError with a message naming the flag.
 * Returns null when --help was given.
 */
export function parseConfig(argv: readonly string[], env: Readonly<Record<string, string | undefined>> = {}): Readonly<Config> | null {
  let values;
  try {
    ({ values } = parseArgs({ args: [...argv], options: OPTIONS, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  if (values.help) return null;

  const listen = parseHostPort(values.listen, '--listen');
  const listenHost = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  if (values['public-url']) origin(values['public-url'], 'public-url');
  const publicUrl = (values['public-url'] ?? `http://${listenHost}:${listen.port}`).replace(/\/+$/, '');

  const blades = new Map<string, BladeSpec>();
  const fromFlags = values.blade.map((spec) => {
    const eq = spec.indexOf('=');
    if (eq < 0) throw new ConfigError(`--blade must be NAME=HOST:PORT, got ${JSON.stringify(spec)}`);
    return checkBlade(spec.slice(0, eq), spec.slice(eq + 1), '--blade');
  });
  const fromFile = values['blades-file'] ? bladesFromFile(values['blades-file']) : [];
  for (const b of [...fromFile, ...fromFlags]) {
    const seen = blades.get(b.name);
    if (seen && seen.address !== b.address) {
      throw new ConfigError(`blade ${b.name} is given twice with different addresses (${seen.address}, ${b.address})`);
    }
    blades.set(b.name, b);
  }

  const tlsFlags = [values['agent-tls-cert'], values['agent-tls-key'], values['agent-tls-ca']];
  const insecureAgents = values['insecure-agents'];
  let agentTls: AgentTls | null = null;
  if (insecureAgents) {
    if (tlsFlags.some(Boolean)) throw new ConfigError('--insecure-agents cannot be combined with --agent-tls-*');
  } else if (tlsFlags.every(Boolean)) {
    agentTls = { cert: tlsFlags[0]!, key: tlsFlags[1]!, ca: tlsFlags[2]! };
  } else {
    throw new ConfigError('agent mutual TLS needs --agent-tls-cert, --agent-tls-key and --agent-tls-ca '
      + '(or --insecure-agents for local development)');
  }

  const warnings: string[] = [];
  const apiKeys: ApiKey[] = values['api-key'].map((key) => ({ key, role: 'admin' as const }));
  if (apiKeys.length > 0) {
    warnings.push('--api-key puts the key on the command line, where every local user can read it (ps, /proc/PID/cmdline); '
      + `use --api-keys-file or ${API_KEYS_ENV} instead`);
  }
  for (const key of (env[API_KEYS_ENV] ?? '').split(/[\n,]/)) if (key.trim()) apiKeys.push({ key: key.trim(), role: 'admin' });
  if (values['api-keys-file']) {
    const file = values['api-keys-file'];
    readText(file, 'api-keys-file').split('\n').forEach((raw, i) => {
      const line = raw.trim();
      if (!line || line.startsWith('#')) return;
      const fields = line.split(/\s+/);
      const [role, key] = fields.length === 1 ? ['admin', fields[0]!] : [fields[0]!, fields[1]!];
      // Never echo the line: it holds a key.
      if (fields.length > 2 || !isRole(role)) {
        throw new ConfigError(`--api-keys-file ${file} line ${i + 1}: expected "KEY" or "ROLE KEY" with ROLE one of ${ROLES.join(', ')}`);
      }
      apiKeys.push({ key, role });
    });
  }
  if (apiKeys.length === 0) throw new ConfigError(`at least one API key is required (--api-keys-file, ${API_KEYS_ENV} or --api-key)`);
  for (const { key } of apiKeys) {
    if (key.length < 16 || /\s/.test(key)) throw new ConfigError('API keys must be at least 16 characters without spaces');
  }

  const sqliteSynchronous = values['sqlite-synchronous'];
  if (sqliteSynchronous !== 'full' && sqliteSynchronous !== 'normal') {
    throw new ConfigError(`--sqlite-synchronous must be full or normal, got ${JSON.stringify(sqliteSynchronous)}`);
  }
  const placement = values.placement;
  if (placement !== 'least-loaded' && placement !== 'round-robin') {
    throw new ConfigError(`--placement must be least-loaded or round-robin, got ${JSON.stringify(placement)}`);
  }
  const logLevel = values['log-level'] as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) throw new ConfigError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);

  const healthIntervalMs = int(values['health-interval-ms'], 'health-interval-ms', 50, 60_000);
  const downAfterMs = int(values['down-after-ms'], 'down-after-ms', 100, 600_000);
  if (downAfterMs <= healthIntervalMs) {
    throw new ConfigError('--down-after-ms must be longer than --health-interval-ms, or a healthy blade would flap');
  }

  const headersTimeoutMs = int(values['headers-timeout-ms'], 'headers-timeout-ms', 100, 600_000);
  const requestTimeoutMs = int(values['request-timeout-ms'], 'request-timeout-ms', 100, 600_000);
  const startAnswerMs = int(values['start-answer-ms'], 'start-answer-ms', 100, 600_000);
  const httpIdleTimeoutMs = int(values['http-idle-timeout-ms'], 'http-idle-timeout-ms', 100, 86_400_000);
  if (startAnswerMs >= httpIdleTimeoutMs) {
    throw new ConfigError('--start-answer-ms must be below --http-idle-timeout-ms: a request still waiting then is closed unanswered');
  }
  // Node refuses a headers timeout longer than the request timeout.
  if (headersTimeoutMs > requestTimeoutMs) throw new ConfigError('--headers-timeout-ms must not exceed --request-timeout-ms');

  // Below the StartSession deadline a start still in flight (on any controller sharing the store) would be settled
  // as abandoned under its feet.
  const agentStartTimeoutMs = int(values['agent-start-timeout-ms'], 'agent-start-timeout-ms', 100, 600_000);
  const startSettleMs = int(values['start-settle-ms'], 'start-settle-ms', 0, 3_600_000);
  if (startSettleMs < agentStartTimeoutMs + 1000) {
    throw new ConfigError('--start-settle-ms must be at least --agent-start-timeout-ms + 1000: a start still in flight '
      + 'would be settled as abandoned');
  }

  const allowedOrigins = values['allowed-origin'].map((o) => origin(o, 'allowed-origin'));
  for (const p of values['trust-proxy']) {
    const [addr, bits, extra] = p.split('/');
    const family = isIP(addr ?? '');
    const maxBits = family === 6 ? 128 : 32;
    if (!family || extra !== undefined || (bits !== undefined && !(/^\d+$/.test(bits) && Number(bits) <= maxBits))) {
      throw new ConfigError(`--trust-proxy must be an IP address or CIDR, got ${JSON.stringify(p)}`);
    }
  }

  const config: Config = {
    listen,
    publicUrl,
    blades: Object.freeze([...blades.values()].map((b) => Object.freeze(b))),
    agentTls,
    insecureAgents,
    apiKeys: Object.freeze(apiKeys.map((k) => Object.freeze(k))),
    dataDir: values['data-dir'],
    sqliteSynchronous: sqliteSynchronous === 'full' ? 'FULL' : 'NORMAL',
    mongodbUrl: values['mongodb-url'] ?? null,
    placement,
    startAttempts: int(values['start-attempts'], 'start-attempts', 1, 100),
    healthIntervalMs,
    downAfterMs,
    agentStartTimeoutMs,
    agentCallTimeoutMs: int(values['agent-call-timeout-ms'], 'agent-call-timeout-ms', 100, 600_000),
    reconcileIntervalMs: int(values['reconcile-interval-ms'], 'reconcile-interval-ms', 200, 86_400_000),
    reconcileReportOnly: values['reconcile-report-only'],
    orphanGraceMs: int(values['orphan-grace-ms'], 'orphan-grace-ms', 0, 3_600_000),
    startSettleMs,
    sessionRetentionHours: int(values['session-retention-hours'], 'session-retention-hours', 0, 87_600),
    publicUrlGiven: Boolean(values['public-url']),
    allowedOrigins: Object.freeze(allowedOrigins.length ? allowedOrigins
      : values['public-url'] ? [new URL(publicUrl).origin] : []),
    trustProxy: Object.freeze([...values['trust-proxy']]),
    bladeNetworks: parseBladeNetworks(values['blade-networks']),
    tokenTtlSeconds: int(values['token-ttl'], 'token-ttl', 1, 86_400),
    tokenReuse: values['token-reuse'],
    maxReconnectKeys: int(values['max-reconnect-keys'], 'max-reconnect-keys', 1, 10_000),
    maxConnectionsPerIp: int(values['max-connections-per-ip'], 'max-connections-per-ip', 1),
    idleTimeoutSeconds: int(values['idle-timeout'], 'idle-timeout', 1),
    handshakeTimeoutMs: int(values['handshake-timeout-ms'], 'handshake-timeout-ms', 100, 600_000),
    maxConnections: int(values['max-connections'], 'max-connections', 1, 1_000_000),
    headersTimeoutMs,
    requestTimeoutMs,
    httpIdleTimeoutMs,
    keepAliveTimeoutMs: int(values['keep-alive-timeout-ms'], 'keep-alive-timeout-ms', 100, 600_000),
    pruneIntervalMs: int(values['prune-interval-ms'], 'prune-interval-ms', 1000, 86_400_000),
    readyCheckTtlMs: int(values['ready-check-ttl-ms'], 'ready-check-ttl-ms', 0, 60_000),
    maxEventStreams: int(values['max-event-streams'], 'max-event-streams', 1, 100_000),
    shutdownGraceMs: int(values['shutdown-grace-ms'], 'shutdown-grace-ms', 0, 600_000),
    startWaitMs: int(values['start-wait-ms'], 'start-wait-ms', 0, 600_000),
    startPollMs: int(values['start-poll-ms'], 'start-poll-ms', 10, 10_000),
    startAnswerMs,
    eventsIntervalMs: int(values['events-interval-ms'], 'events-interval-ms', 100, 600_000),
    eventsHeartbeatMs: int(values['events-heartbeat-ms'], 'events-heartbeat-ms', 100, 3_600_000),
    maxBodyBytes: int(values['max-body-bytes'], 'max-body-bytes', 1024, 16 * 1024 * 1024),
    maxWsMessageBytes: int(values['max-ws-message-bytes'], 'max-ws-message-bytes', 1024, 64 * 1024 * 1024),
    wsHeartbeatMs: int(values['ws-heartbeat-ms'], 'ws-heartbeat-ms', 100, 3_600_000),
    desktopConnectTimeoutMs: int(values['desktop-connect-timeout-ms'], 'desktop-connect-timeout-ms', 100, 600_000),
    desktopGoneGraceMs: int(values['desktop-gone-grace-ms'], 'desktop-gone-grace-ms', 1, 60_000),
    maxDesktopReadBytes: int(values['max-desktop-read-bytes'], 'max-desktop-read-bytes', 4096, 64 * 1024 * 1024),
    badTokenLimit: int(values['bad-token-limit'], 'bad-token-limit', 1, 1_000_000),
    badTokenWindowMs: int(values['bad-token-window-ms'], 'bad-token-window-ms', 1000, 86_400_000),
    revalidateIntervalMs: int(values['revalidate-interval-ms'], 'revalidate-interval-ms', 50, 60_000),
    agentKeepaliveMs: int(values['agent-keepalive-ms'], 'agent-keepalive-ms', 1000, 3_600_000),
    agentKeepaliveTimeoutMs: int(values['agent-keepalive-timeout-ms'], 'agent-keepalive-timeout-ms', 100, 600_000),
    agentConnectTimeoutMs: int(values['agent-connect-timeout-ms'], 'agent-connect-timeout-ms', 1000, 600_000),
    logLevel,
    warnings: Object.freeze(warnings),
  };
  return Object.freeze(config);
}
