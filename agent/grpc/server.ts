/**
 * The gRPC server: the Agent service, grpc.health.v1 and server reflection, over mutual TLS (client certificates
 * required and verified against --tls-ca) unless --insecure.
 */
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from 'pino';
import type { AgentConfig } from '../config.js';
import { agentProtoFile, protoRoot } from '../paths.js';
import type { SessionManager } from '../sessions/manager.js';
import type { HostStatus } from '../status.js';
import { AgentServiceImpl } from './agent-service.js';

export const AGENT_SERVICE_NAME = 'vncdispatch.agent.v1.Agent';

export interface AgentServerOptions {
  config: AgentConfig;
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

export function credentials(config: AgentConfig): ServerCredentials {
  if (config.insecure || !config.tls) return ServerCredentials.createInsecure();
  // The third argument is checkClientCertificate: grpc-js defaults it to false, which would accept anyone.
  return ServerCredentials.createSsl(config.tls.ca, [{ cert_chain: config.tls.cert, private_key: config.tls.key }], true);
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

/** Binds the configured address and returns what was bound. */
export async function listen(server: Server, config: AgentConfig): Promise<{ address: string; port: number }> {
  const host = config.listenHost.includes(':') ? `[${config.listenHost}]` : config.listenHost;
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:${config.listenPort}`, credentials(config), (err, p) => (err ? reject(err) : resolve(p))));
  return { address: `${host}:${port}`, port };
}
