/**
 * The only code on the controller side that touches grpc-js: one long-lived channel per blade (with keepalive and a
 * short reconnect backoff so a restarted agent is seen quickly), promise-wrapped calls that always carry a deadline
 * and honour an AbortSignal, errors converted to controller errors, and a grpc.health.v1 Watch stream.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { checkServerIdentity, createSecureContext, type ConnectionOptions } from 'node:tls';
import {
  connectivityState,
  credentials,
  makeGenericClientConstructor,
  Metadata,
  type CallOptions,
  type ChannelCredentials,
  type Client,
  type ClientReadableStream,
  type ClientUnaryCall,
  type ServiceError,
} from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import {
  AgentClient as GeneratedAgentClient,
  SessionEvent_Kind,
  type GetStatusResponse,
  type Session,
  type SessionEvent,
  type StartSessionRequest,
  type StartSessionResponse,
} from '../../proto/gen/vncdispatch/agent/v1/agent.js';
import { parseHostPort } from '../../shared/host-port.js';
import { AGENT_CLIENT_DEFAULTS, type AgentTls } from '../config.js';
import { AgentUnavailableError } from '../errors.js';
import type { DesktopReads, DesktopStream } from '../proxy/target.js';
import { openDesktopRelay } from './desktop-relay.js';
import { grpcStatusName, toControllerError } from './grpc-errors.js';


export type { GetStatusResponse, Session as AgentSession, StartSessionResponse } from '../../proto/gen/vncdispatch/agent/v1/agent.js';

/** Per-call deadlines. StartSession waits for Xvnc to be ready; the others are quick. */
export interface AgentDeadlines {
  startSessionMs: number;
  defaultMs: number;
}

export interface AgentClientOptions {
  name: string;
  address: string;
  /** From createAgentCredentials; one object for all blades. */
  credentials: AgentCredentials;
  deadlines?: Partial<AgentDeadlines>;
  /** gRPC keepalive: ping this often, and drop the connection when a ping is unanswered for timeoutMs. */
  keepalive?: { timeMs: number; timeoutMs: number };
  /**
   * A channel not connected for this long is closed and made afresh, abandoning its connection attempt. grpc-js sets
   * no deadline on its TCP connect: a SYN sent while the blade was cut off is retried by the kernel for about two
   * minutes, and the blade stays unreachable that long after its network is back.
   */
  connectTimeoutMs?: number;
  /** Called after every call with the method and 'ok' or the gRPC status name (metrics). */
  onCall?: (method: string, result: string) => void;
}

export interface CallOpts {
  signal?: AbortSignal;
  /** Overrides the method's default deadline. */
  timeoutMs?: number;
}

const DEFAULT_DEADLINES: AgentDeadlines = { startSessionMs: AGENT_CLIENT_DEFAULTS.startSessionMs, defaultMs: AGENT_CLIENT_DEFAULTS.callMs };

const CHANNEL_OPTIONS = {
  // Keepalive (its times come from the options) detects a dead TCP peer (e.g. a blade that lost power) without
  // waiting for the OS.
  'grpc.keepalive_permit_without_calls': 1,
  // Reconnect quickly so a restarted agent is UP again within a health interval or two.
  'grpc.initial_reconnect_backoff_ms': 200,
  'grpc.max_reconnect_backoff_ms': 1_000,
  'grpc.max_receive_message_length': 4 * 1024 * 1024,
};

/** How long a StartSession that found its channel between connections waits for it: one backoff, then a connect. */
const RECONNECT_WAIT_MS = CHANNEL_OPTIONS['grpc.max_reconnect_backoff_ms'] + 1_000;

/** SNI name sent to agents addressed by IP (the certificate is checked against the IP, see forHost). */
const SNI_FOR_IP_TARGETS = 'vncdispatch-agent';

/**
 * How to reach an agent at a given host (a name, or an IP without brackets): gRPC channel credentials and options,
 * and the TLS options of its desktop relay (null for --insecure-agents). Both check the same certificate the same way.
 */
export interface AgentCredentials {
  forHost(host: string): { credentials: ChannelCredentials; options: Record<string, string>; relayTls: ConnectionOptions | null };
}

/**
 * mTLS credentials from the configured files (read once), or insecure ones for --insecure-agents.
 *
 * Agents are often addressed by IP. grpc-js would then put the IP in TLS SNI, which RFC 6066 forbids and Node
 * reports as deprecation DEP0123 in the controller's log. For an IP host the channel sends a fixed name in SNI
 * instead (grpc.ssl_target_name_override) and the certificate is still checked against the IP itself (its IP SANs),
 * exactly as without the override.
 */
export function createAgentCredentials(tls: AgentTls | null): AgentCredentials {
  if (!tls) {
    const insecure = credentials.createInsecure();
    return { forHost: () => ({ credentials: insecure, options: {}, relayTls: null }) };
  }
  const [ca, key, cert] = [readFileSync(tls.ca), readFileSync(tls.key), readFileSync(tls.cert)];
  const byName = credentials.createSsl(ca, key, cert);
  // One TLS context for every relay connection: given the raw files, tls.connect would parse the key and the CA
  // again for each viewer and hold an OpenSSL context per socket until a GC: with 1,000 viewers, 32 MiB more native
  // memory at the peak, and 39 MiB more still held after they closed (docs/RELIABILITY.md).
  const secureContext = createSecureContext({ ca, key, cert, minVersion: 'TLSv1.2' });
  return {
    forHost(host): ReturnType<AgentCredentials['forHost']> {
      if (isIP(host) === 0) {
        // Node's default check: the certificate must name `servername`, the dialled host.
        return { credentials: byName, options: {}, relayTls: { secureContext, servername: host } };
      }
      const checkIdentity = (_sni: string, peer: Parameters<typeof checkServerIdentity>[1]) => checkServerIdentity(host, peer);
      return {
        credentials: credentials.createSsl(ca, key, cert, { checkServerIdentity: checkIdentity }),
        options: { 'grpc.ssl_target_name_override': SNI_FOR_IP_TARGETS },
        relayTls: { secureContext, servername: SNI_FOR_IP_TARGETS, checkServerIdentity: checkIdentity },
      };
    },
  };
}

type Unary<Req, Res> = (req: Req, md: Metadata, opts: Partial<CallOptions>, cb: (e: ServiceError | null, r: Res) => void) => ClientUnaryCall;

interface HealthClient extends Client {
  Watch(req: { service: string }, opts: Partial<CallOptions>): ClientReadableStream<{ status: string }>;
}
const HealthClientCtor = makeGenericClientConstructor(healthService, 'grpc.health.v1.Health') as unknown as new (
  address: string, creds: ChannelCredentials, options: object) => HealthClient;

/** A connection to one blade's agent. */
export class AgentConnection {
  readonly name: string;
  readonly address: string;
  #client!: InstanceType<typeof GeneratedAgentClient>;
  #health!: HealthClient;
  readonly #open: () => void;
  readonly #connectTimeoutMs: number;
  /** When a call first found the channel not connected, since it last was (null: connected). */
  #unconnectedSince: number | null = null;
  readonly #deadlines: AgentDeadlines;
  readonly #onCall: (method: string, result: string) => void;
  readonly #host: string;
  readonly #port: number;
  readonly #relayTls: ConnectionOptions | null;
  #closed = false;

  constructor(options: AgentClientOptions) {
    this.name = options.name;
    this.address = options.address;
    this.#deadlines = { ...DEFAULT_DEADLINES, ...options.deadlines };
    this.#onCall = options.onCall ?? (() => {});
    const { host, port } = parseHostPort(options.address, `blade ${options.name} address`);
    const tls = options.credentials.forHost(host);
    this.#host = host;
    this.#port = port;
    this.#relayTls = tls.relayTls;
    const keepalive = options.keepalive ?? { timeMs: AGENT_CLIENT_DEFAULTS.keepaliveMs, timeoutMs: AGENT_CLIENT_DEFAULTS.keepaliveTimeoutMs };
    this.#connectTimeoutMs = options.connectTimeoutMs ?? AGENT_CLIENT_DEFAULTS.connectMs;
    this.#open = () => {
      this.#client = new GeneratedAgentClient(options.address, tls.credentials, { ...CHANNEL_OPTIONS,
        'grpc.keepalive_time_ms': keepalive.timeMs, 'grpc.keepalive_timeout_ms': keepalive.timeoutMs, ...tls.options });
      // The health client shares the agent client's channel, so both see the same connection state.
      this.#health = new HealthClientCtor(options.address, tls.credentials, { channelOverride: this.#client.getChannel() });
    };
    this.#open();
  }

  /**
   * Makes the channel afresh when it has not been connected for the connect timeout: the old one is closed (its
   * calls and watches fail, and their owners retry on the new one) and the new one dials at once. Its state alone
   * cannot tell a stuck attempt from a failing one (pick_first reports TRANSIENT_FAILURE while it is still waiting on
   * a SYN), so a blade that refuses connections gets a new channel this often too, which costs it nothing more than
   * the reconnects it already gets. Checked on every call, so the health probe's interval bounds how late it is.
   */
  #checkConnectAttempt(): void {
    if (this.#closed) return;
    if (this.#client.getChannel().getConnectivityState(false) === connectivityState.READY) {
      this.#unconnectedSince = null;
      return;
    }
    const now = Date.now();
    this.#unconnectedSince ??= now;
    if (now - this.#unconnectedSince < this.#connectTimeoutMs) return;
    this.#unconnectedSince = null;
    const [client, health] = [this.#client, this.#health];
    this.#open();
    health.close();
    client.close();
  }

  #call<Req, Res>(method: string, select: (client: InstanceType<typeof GeneratedAgentClient>) => Unary<Req, Res>, req: Req,
    timeoutMs: number, signal?: AbortSignal): Promise<Res> {
    if (this.#closed) return Promise.reject(new AgentUnavailableError(`blade ${this.name}: connection closed`));
    if (signal?.aborted) return Promise.reject(new AgentUnavailableError(`blade ${this.name}: ${method} aborted`, 1));
    this.#checkConnectAttempt();
    const fn = select(this.#client);
    return new Promise<Res>((resolve, reject) => {
      const call = fn(req, new Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        signal?.removeEventListener('abort', onAbort);
        this.#onCall(method, err ? grpcStatusName(err.code) : 'ok');
        if (err) reject(toControllerError(err, this.name, method));
        else resolve(res);
      });
      const onAbort = () => call.cancel();
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * Starts (or returns, `existing: true`) the user's desktop. The password goes only into this request. The request
   * also carries the call's deadline as an absolute time: gRPC's own deadline travels as a relative timeout counted
   * from arrival, so a request held up in a partitioned network would otherwise start a desktop nobody waits for.
   */
  async startSession(req: StartSessionRequest, opts: CallOpts = {}): Promise<StartSessionResponse> {
    const deadline = Date.now() + (opts.timeoutMs ?? this.#deadlines.startSessionMs);
    const attempt = () => this.#call('StartSession', (c) => c.startSession.bind(c),
      { deadline: new Date(deadline), ...req }, Math.max(1, deadline - Date.now()), opts.signal);
    try {
      return await attempt();
    } catch (err) {
      // A channel between connections fails a call at once. That is the state of every channel to an agent that was
      // restarted a moment ago: it is still in reconnect backoff while its blade is UP. Such a start waits for the
      // channel (one backoff and a connect at most) and is tried once more; StartSession is keyed by the session id,
      // so a second try can only ever return the desktop the first one made.
      if (!(err instanceof AgentUnavailableError) || this.#isReady() || opts.signal?.aborted) throw err;
      if (!(await this.#waitForReady(Math.min(deadline, Date.now() + RECONNECT_WAIT_MS)))) throw err;
      return attempt();
    }
  }

  #isReady(): boolean {
    return this.#client.getChannel().getConnectivityState(false) === connectivityState.READY;
  }

  /** Resolves true once the channel is connected, or false at `by` (epoch ms). Starts connecting if it is idle. */
  #waitForReady(by: number): Promise<boolean> {
    if (by <= Date.now()) return Promise.resolve(false);
    return new Promise((resolve) => this.#client.waitForReady(by, (err) => resolve(!err)));
  }

  /** Stops a session by the agent's id. Rejects with VD_ERR_AGENT_REJECTED (grpcCode NOT_FOUND) if it is gone. */
  async stopSession(id: string, opts: CallOpts = {}): Promise<Session | undefined> {
    const res = await this.#call('StopSession', (c) => c.stopSession.bind(c) as Unary<{ id: string }, { session?: Session }>,
      { id }, opts.timeoutMs ?? this.#deadlines.defaultMs, opts.signal);
    return res.session;
  }

  async listSessions(opts: CallOpts = {}): Promise<Session[]> {
    const res = await this.#call('ListSessions', (c) => c.listSessions.bind(c),
      {}, opts.timeoutMs ?? this.#deadlines.defaultMs, opts.signal);
    return res.sessions;
  }

  getStatus(opts: CallOpts = {}): Promise<GetStatusResponse> {
    return this.#call('GetStatus', (c) => c.getStatus.bind(c), {},
      opts.timeoutMs ?? this.#deadlines.defaultMs, opts.signal);
  }

  /**
   * Watches the agent's overall grpc.health.v1 status (service ""). Calls `onStatus` with 'SERVING', 'NOT_SERVING',
   * ... on every change, and `onEnd` once when the stream fails or ends (the caller decides when to watch again).
   * Returns a function that cancels the watch.
   */
  watchHealth(onStatus: (status: string) => void, onEnd: (err: Error) => void): () => void {
    const stream = this.#health.Watch({ service: '' }, {});
    let ended = false;
    const end = (err: Error) => {
      if (ended) return;
      ended = true;
      onEnd(err);
    };
    stream.on('data', (msg: { status: string }) => onStatus(String(msg.status)));
    stream.on('error', (err: ServiceError) => end(toControllerError(err, this.name, 'Health.Watch')));
    stream.on('end', () => end(new AgentUnavailableError(`blade ${this.name}: health watch ended`)));
    return () => {
      ended = true;
      stream.cancel();
    };
  }

  /**
   * Opens the desktop relay to one of this agent's sessions (by the agent's id), on the agent's own port with the
   * same mutual TLS as gRPC. See desktop-relay.ts.
   */
  openDesktop(agentSessionId: string, onread: DesktopReads, timeoutMs: number): DesktopStream {
    return openDesktopRelay({ host: this.#host, port: this.#port, tls: this.#relayTls, sessionId: agentSessionId,
      timeoutMs, onread, blade: this.name });
  }

  /**
   * Watches the agent's desktops: `onWatching` once the agent accepted the watch (anything before it may have been
   * missed: reconcile), `onEnded` for each desktop that ends, `onEnd` once when the stream fails or ends. Returns a
   * function that cancels the watch.
   */
  watchSessions(handlers: { onWatching(): void; onEnded(agentSessionId: string, reason: string): void; onEnd(err: Error): void }):
    () => void {
    const stream = this.#client.watchSessions({}, new Metadata(), {});
    let ended = false;
    const end = (err: Error) => {
      if (ended) return;
      ended = true;
      handlers.onEnd(err);
    };
    stream.on('metadata', () => {
      if (!ended) handlers.onWatching();
    });
    stream.on('data', (e: SessionEvent) => {
      if (!ended && e.kind === SessionEvent_Kind.KIND_ENDED && e.sessionId) handlers.onEnded(e.sessionId, e.reason);
    });
    stream.on('error', (err: ServiceError) => end(toControllerError(err, this.name, 'WatchSessions')));
    stream.on('end', () => end(new AgentUnavailableError(`blade ${this.name}: session watch ended`)));
    return () => {
      ended = true;
      stream.cancel();
    };
  }

  close(): void {
    this.#closed = true;
    this.#health.close();
    this.#client.close();
  }
}
