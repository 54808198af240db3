/** Adapts the SessionManager to the generated Agent service: request/response mapping and error conversion. */
import type { Server, ServerUnaryCall, sendUnaryData } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { AgentService, type AgentServer, type Session } from '../../proto/gen/vncdispatch/agent/v1/agent.js';
import { toAgentError } from '../errors.js';
import type { SessionRecord } from '../sessions/record.js';
import type { SessionManager } from '../sessions/manager.js';
import { hostStatus } from '../status.js';
import { toServiceError } from './status-map.js';

export interface AgentServiceOptions {
  sessions: SessionManager;
  log: Logger;
  hostname: string;
  version: string;
  startedAt: number;
}

export function toSession(r: SessionRecord, hostname: string): Session {
  return {
    id: r.id, username: r.username, hostname, display: r.display, port: r.port, pid: r.pid,
    startedAt: new Date(r.startedAt), uid: r.uid, geometry: r.geometry, depth: r.depth,
  };
}

/** The Agent service implementation; add it to a server with addToServer. */
export class AgentServiceImpl {
  private readonly log: Logger;

  constructor(private readonly opts: AgentServiceOptions) {
    this.log = opts.log.child({ module: 'grpc' });
  }

  addToServer(server: Server): void {
    server.addService(AgentService, this.handlers());
  }

  private unary<Req, Res>(method: string, fn: (req: Req) => Promise<Res> | Res) {
    return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      Promise.resolve()
        .then(() => fn(call.request))
        .then((res) => callback(null, res))
        .catch((err: unknown) => {
          const e = toAgentError(err);
          const level = e.code === 'VD_AGENT_INTERNAL' ? 'error' : 'info';
          this.log[level]({ method, code: e.code, err: e.code === 'VD_AGENT_INTERNAL' ? err : undefined,
            peer: call.getPeer() }, e.message);
          callback(toServiceError(e), null);
        });
    };
  }

  private handlers(): AgentServer {
    const { sessions, hostname } = this.opts;
    return {
      startSession: this.unary('StartSession', async (req) => {
        const r = await sessions.start({ username: req.username, password: req.password, geometry: req.geometry,
          depth: req.depth });
        return { session: toSession(r.session, hostname), existing: r.existing };
      }),
      stopSession: this.unary('StopSession', async (req) => ({ session: toSession(await sessions.stop(req.id), hostname) })),
      listSessions: this.unary('ListSessions', () => ({ sessions: sessions.list().map((r) => toSession(r, hostname)) })),
      getStatus: this.unary('GetStatus', () => ({
        hostname,
        version: this.opts.version,
        uptimeSeconds: (Date.now() - this.opts.startedAt) / 1000,
        liveSessions: sessions.list().length,
        capacity: sessions.capacity,
        ...hostStatus(),
      })),
    };
  }
}
