/**
 * The gRPC server: the Agent service, grpc.health.v1 and server reflection. It binds no port itself: the agent's
 * port (listener.ts) does mutual TLS and hands it the connections whose ALPN protocol is "h2".
 */
import { Server } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from 'pino';
import { agentProtoFile, protoRoot } from '../paths.js';
import type { SessionManager } from '../sessions/manager.js';
import type { HostStatus } from '../status.js';
import { AgentServiceImpl } from './agent-service.js';

export const AGENT_SERVICE_NAME = 'vncdispatch.agent.v1.Agent';

export interface AgentServerOptions {
  sessions: SessionManager;
  log: Logger;
  hostname: string;
  version: string;
  hostStatus: () => HostStatus;
}

export interface RunningServer {
  server: Server;
  health: HealthImplementation;
  /** host:port actually bound ([v6]:port for IPv6). */
  address: string;
  port: number;
}

/** Tells health watchers the agent is going away (before it stops accepting calls). */
export function reportShuttingDown(health: HealthImplementation): void {
  health.setStatus('', 'NOT_SERVING');
  health.setStatus(AGENT_SERVICE_NAME, 'NOT_SERVING');
}

/** Builds the server with all services added; does not listen. */
export function buildServer(opts: AgentServerOptions): { server: Server; health: HealthImplementation } {
  const server = new Server({ 'grpc.max_receive_message_length': 64 * 1024 });
  new AgentServiceImpl({ sessions: opts.sessions, log: opts.log, hostname: opts.hostname, version: opts.version,
    startedAt: Date.now(), hostStatus: opts.hostStatus }).addToServer(server);
  const health = new HealthImplementation({ '': 'SERVING', [AGENT_SERVICE_NAME]: 'SERVING' });
  health.addToServer(server);
  const pkg = loadSync(agentProtoFile, { includeDirs: [protoRoot], keepCase: false, longs: Number, defaults: true });
  new ReflectionService(pkg).addToServer(server);
  return { server, health };
}
