/**
 * The gRPC server: the Agent service, grpc.health.v1 and server reflection. It binds no port itself: the agent's
 * port (listener.ts) does mutual TLS and hands it the connections whose ALPN protocol is "h2".
 */
import { Server } from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import type { PackageDefinition } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from 'pino';
import type { AgentMetrics } from '../metrics.js';
import { descriptorSetFile } from '../paths.js';
import type { SessionManager } from '../sessions/manager.js';
import type { HostStatus } from '../status.js';
import { AgentServiceImpl } from './agent-service.js';

export const AGENT_SERVICE_NAME = 'vncdispatch.agent.v1.Agent';
export const HEALTH_SERVICE_NAME = 'grpc.health.v1.Health';

/**
 * Splits a serialized FileDescriptorSet (`repeated FileDescriptorProto file = 1`) into its files, in the shape
 * @grpc/reflection reads (a package definition whose entries carry `fileDescriptorProtos`). proto-loader's own
 * definitions would not do: protobufjs renames files after their package (`vncdispatch_agent_v1.proto`), drops
 * their imports and, with keepCase off, camel-cases field names, which breaks grpcurl and friends.
 */
export function reflectionDefinition(set: Buffer): PackageDefinition {
  const files: Buffer[] = [];
  let i = 0;
  const varint = (): number => {
    let n = 0;
    for (let shift = 0; ; shift += 7) {
      if (i >= set.length || shift > 28) throw new Error('descriptor set: bad varint');
      const b = set[i++]!;
      n += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return n;
    }
  };
  while (i < set.length) {
    if (varint() !== ((1 << 3) | 2)) throw new Error('descriptor set: expected field 1 (file), length-delimited');
    const len = varint();
    if (i + len > set.length) throw new Error('descriptor set: truncated');
    files.push(set.subarray(i, i + len));
    i += len;
  }
  return { files: { fileDescriptorProtos: files } } as unknown as PackageDefinition;
}

export interface AgentServerOptions {
  sessions: SessionManager;
  log: Logger;
  hostname: string;
  version: string;
  hostStatus: () => HostStatus;
  metrics?: AgentMetrics;
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
    startedAt: Date.now(), hostStatus: opts.hostStatus, ...(opts.metrics && { metrics: opts.metrics }) }).addToServer(server);
  const health = new HealthImplementation({ '': 'SERVING', [AGENT_SERVICE_NAME]: 'SERVING' });
  health.addToServer(server);
  new ReflectionService(reflectionDefinition(readFileSync(descriptorSetFile)), {
    services: [AGENT_SERVICE_NAME, HEALTH_SERVICE_NAME],
  }).addToServer(server);
  return { server, health };
}
