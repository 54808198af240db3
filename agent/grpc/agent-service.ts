/** Adapts the SessionManager to the generated Agent service: request/response mapping and error conversion. */
import {
  Metadata, type Server, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData, type ServiceDefinition,
} from '@grpc/grpc-js';
import type { Logger } from 'pino';
import {
  AgentService,
  SessionEvent_Kind,
  type AgentServer,
  type Session,
  type SessionEvent,
  type WatchSessionsRequest,
} from '../../proto/gen/vncdispatch/agent/v1/agent.js';
import { AgentError, toAgentError } from '../errors.js';
import type { AgentMetrics } from '../metrics.js';
import type { SessionRecord } from '../sessions/record.js';
import type { SessionEnded, SessionManager } from '../sessions/manager.js';
import type { HostStatus } from '../status.js';
import { toServiceError } from './status-map.js';

export interface AgentServiceOptions {
  sessions: SessionManager;
  log: Logger;
  hostname: string;
  version: string;
  startedAt: number;
  /** The latest host figures (sampled in the background: GetStatus reads memory only). */
  hostStatus: () => HostStatus;
  /** Start latency and failures are counted here when metrics are on. */
  metrics?: Pick<AgentMetrics, 'startSeconds' | 'spawnFailures'>;
}

export function toSession(r: SessionRecord, hostname: string): Session {
  return {
    id: r.id, username: r.username, hostname, display: r.display, port: 0, pid: r.pid,
    startedAt: new Date(r.startedAt), uid: r.uid, geometry: r.geometry, depth: r.depth,
  };
}

/** Marks a request message that could not be decoded; the handler answers VD_AGENT_INVALID_REQUEST. */
class Undecodable {
  constructor(readonly reason: string) {}
}

/**
 * The generated service definition with decoders that never throw: grpc-js would answer an undecodable message with
 * a bare INTERNAL status, without one of the agent's codes.
 */
function tolerantDefinition(def: ServiceDefinition): ServiceDefinition {
  const out: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(def)) {
    out[name] = {
      ...method,
      requestDeserialize: (buf: Buffer) => {
        try {
          return method.requestDeserialize(buf) as unknown;
        } catch (err) {
          return new Undecodable((err as Error).message);
        }
      },
    };
  }
  return out as ServiceDefinition;
}

/** Epoch ms of a call's deadline, or Infinity. */
function deadlineOf(call: ServerUnaryCall<unknown, unknown>): number {
  const d = call.getDeadline();
  const t = d instanceof Date ? d.getTime() : Number(d);
  return Number.isFinite(t) ? t : Infinity;
}

/** The Agent service implementation; add it to a server with addToServer. */
export class AgentServiceImpl {
  private readonly log: Logger;

  constructor(private readonly opts: AgentServiceOptions) {
    this.log = opts.log.child({ module: 'grpc' });
  }

  addToServer(server: Server): void {
    server.addService(tolerantDefinition(AgentService), this.handlers());
  }

  private unary<Req, Res>(method: string,
    fn: (req: Req, call: ServerUnaryCall<Req, Res>, signal: AbortSignal) => Promise<Res> | Res,
    onCancelledAfter?: (res: Res) => void) {
    return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      // A caller that cancels (or whose deadline passes, or whose connection drops) aborts the work it asked for.
      const ac = new AbortController();
      const onCancel = () => ac.abort();
      call.on('cancelled', onCancel);
      Promise.resolve()
        .then(() => {
          if (call.request instanceof Undecodable) {
            throw new AgentError('VD_AGENT_INVALID_REQUEST', `the ${method} request could not be decoded`);
          }
          return fn(call.request, call, ac.signal);
        })
        .then((res) => {
          call.off('cancelled', onCancel);
          // Nobody is waiting for this answer: undo what it created rather than leave it unknown to the caller.
          if (call.cancelled && onCancelledAfter) onCancelledAfter(res);
          callback(null, res);
        })
        .catch((err: unknown) => {
          call.off('cancelled', onCancel);
          const e = toAgentError(err);
          const level = e.code === 'VD_AGENT_INTERNAL' ? 'error' : 'info';
          this.log[level]({ method, code: e.code, err: e.code === 'VD_AGENT_INTERNAL' ? err : undefined,
            peer: call.getPeer() }, e.message);
          callback(toServiceError(e), null);
        });
    };
  }

  /** WatchSessions: one event per desktop that ends, for as long as the caller watches. */
  private watchSessions(call: ServerWritableStream<WatchSessionsRequest, SessionEvent>): void {
    const { sessions } = this.opts;
    const onEnded = (e: SessionEnded) => {
      call.write({ kind: SessionEvent_Kind.KIND_ENDED, sessionId: e.id, reason: e.reason, at: e.at });
    };
    const stop = () => sessions.off('ended', onEnded);
    sessions.on('ended', onEnded);
    call.on('cancelled', stop);
    call.on('close', stop);
    call.on('error', stop);
    // Headers now, so the caller knows it is watching (and can reconcile what happened before).
    call.sendMetadata(new Metadata());
  }

  private handlers(): AgentServer {
    const { sessions, hostname } = this.opts;
    return {
      startSession: this.unary('StartSession', async (req, call, signal) => {
        const t0 = performance.now();
        const m = this.opts.metrics;
        try {
          const r = await sessions.start({ sessionId: req.sessionId, username: req.username, password: req.password,
            geometry: req.geometry, depth: req.depth, notAfter: req.deadline?.getTime() },
          { signal, deadline: deadlineOf(call) });
          m?.startSeconds.observe({ result: r.existing ? 'existing' : 'ok' }, (performance.now() - t0) / 1000);
          return { session: toSession(r.session, hostname), existing: r.existing };
        } catch (err) {
          m?.startSeconds.observe({ result: 'failed' }, (performance.now() - t0) / 1000);
          m?.spawnFailures.inc({ code: toAgentError(err).code });
          throw err;
        }
      }, (res) => {
        if (res.existing || !res.session) return;
        this.log.warn({ session: res.session.id }, 'StartSession caller went away before the answer; stopping the desktop');
        sessions.stop(res.session.id, 'caller went away before StartSession answered').catch(() => undefined);
      }),
      stopSession: this.unary('StopSession', async (req) => ({ session: toSession(await sessions.stop(req.id), hostname) })),
      watchSessions: (call) => this.watchSessions(call),
      listSessions: this.unary('ListSessions', () => ({ sessions: sessions.list().map((r) => toSession(r, hostname)) })),
      getStatus: this.unary('GetStatus', () => ({
        hostname,
        version: this.opts.version,
        uptimeSeconds: (Date.now() - this.opts.startedAt) / 1000,
        liveSessions: sessions.liveCount(),
        capacity: sessions.capacity,
        ...this.opts.hostStatus(),
      })),
    };
  }
}
